"""Commands for adapters: ``adapters list``/``check``, ``train`` and ``eval``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from chatbot.cli.root import JsonFlag, app, fail, open_chatbot, settings_from
from chatbot.config import Settings
from chatbot.models.shapes import BaseShapes

if TYPE_CHECKING:
    from chatbot.app.info import AdapterRow

MAX_RESULTS_BYTES = 256 * 2**20  # chatbot calibrate: an eval run's results.json, thousands of records

adapters_app = typer.Typer(help="List and check domain adapters.", no_args_is_help=True)
app.add_typer(adapters_app, name="adapters")


@adapters_app.command("list")
def adapters_list(
    load: Annotated[bool, typer.Option("--load", help="Load the model and attach every adapter to it.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Every adapter folder with description, base model, rank, size and status.

    Each folder is checked against the base model's files (config and weight shapes), the check
    a loading server makes, in about a second; ``--load`` loads the model and attaches them.
    """
    settings = settings_from()
    rows = None if load or settings.generation_url else _rows_on_disk(settings)
    if rows is None:
        rows = open_chatbot(settings).adapter_rows()
    if as_json:
        typer.echo(json.dumps([row.to_dict() for row in rows], indent=2))
        return
    for row in rows:
        size = f"{row.size_bytes / 1e6:.1f} MB" if row.size_bytes else "-"
        rank = row.rank or "-"
        line = f"{row.name:<14} {row.status:<7} rank {rank:<3} {size:>8}  {row.base_model or '-'}"
        typer.secho(line, fg=typer.colors.RED if row.error else None)
        if row.description:
            typer.echo(f"{'':<15}{row.description}")
        if row.answerability_fit:
            typer.echo(f"{'':<15}its own answerability fit: {row.answerability_fit}")
        for note in [row.error, *row.warnings]:
            if note:
                typer.echo(f"{'':<15}{note}")


@adapters_app.command("check")
def adapters_check(folder: Annotated[Path, typer.Argument(help="An adapter folder.")]) -> None:
    """Say whether an adapter folder fits the configured base model, and why not."""
    from chatbot.adapters.check import check_adapter

    if not folder.is_dir():
        raise fail(f"{folder}: not a folder")
    settings = settings_from()
    name, shapes, fingerprint = _base_shapes(settings)
    problems, warnings = check_adapter(folder, shapes, fingerprint)
    for warning in warnings:
        typer.secho(f"warning: {warning}", fg=typer.colors.YELLOW)
    if problems:
        for problem in problems:
            typer.secho(f"{folder}: {problem}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)
    typer.echo(f"{folder}: fits {name} ({fingerprint})")


def _rows_on_disk(settings: Settings) -> list[AdapterRow] | None:
    """The adapter rows from the base model's files; None (and why) when it must load first."""
    from chatbot.app.on_disk import NotOnDisk, adapter_rows

    try:
        return adapter_rows(settings)
    except NotOnDisk as exc:
        typer.secho(f"{exc}: loading it", fg=typer.colors.YELLOW, err=True)
        return None


def _base_shapes(settings: Settings) -> tuple[str, BaseShapes, str]:
    """The base model's name, shapes and fingerprint: from its files, or loaded when it has none yet."""
    from chatbot.app.on_disk import NotOnDisk, base_on_disk

    base = base_on_disk(settings)
    try:
        return (base.name, *base.shapes())
    except NotOnDisk as exc:
        typer.secho(f"{exc}: loading it", fg=typer.colors.YELLOW, err=True)
    loaded = open_chatbot(settings).generator.base
    return loaded.name, loaded.shapes, loaded.fingerprint


@app.command()
def train(
    domain: Annotated[str, typer.Option(help="Adapter name: the folder adapters/<domain>/ it is written to.")],
    data: Annotated[
        Path | None, typer.Option(help='Chat-format JSONL: {"messages": [system, user, assistant]}.')
    ] = None,
    raft: Annotated[
        Path | None, typer.Option(help="Question file (.jsonl or the SEC .csv): build RAFT examples from it.")
    ] = None,
    knowledge: Annotated[
        Path | None, typer.Option(help="Knowledge folder RAFT retrieves from (default: the app's).")
    ] = None,
    display_name: Annotated[str, typer.Option(help="Name shown in the UI.")] = "",
    description: Annotated[str, typer.Option(help="One line shown in the UI.")] = "",
    system_prompt: Annotated[str, typer.Option(help="The domain's system prompt (default: the data's).")] = "",
    scope_folder: Annotated[
        str | None, typer.Option(help="Limit the domain's retrieval to this top-level knowledge sub-folder.")
    ] = None,
    epochs: Annotated[float, typer.Option(help="Passes over the training examples.")] = 3.0,
    rank: Annotated[int, typer.Option(help="LoRA rank.")] = 8,
    learning_rate: Annotated[float, typer.Option(help="Peak learning rate.")] = 2e-4,
    batch_size: Annotated[int, typer.Option(help="Examples per step.")] = 4,
    max_tokens: Annotated[int, typer.Option(help="Truncate examples to this many tokens.")] = 1536,
    max_steps: Annotated[int, typer.Option(help="Stop after this many steps (-1: no cap).")] = -1,
    eval_every: Annotated[int, typer.Option(help="Steps between validations (0: four per epoch).")] = 0,
    limit: Annotated[int | None, typer.Option(help="Use only the first N examples or questions.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for the split, the shuffling and LoRA's init.")] = 0,
    from_feedback: Annotated[
        bool,
        typer.Option(
            "--from-feedback", help="Add examples from users' feedback; the adapter is saved as <domain>-<date>."
        ),
    ] = False,
    feedback_adapter: Annotated[
        str | None, typer.Option(help="Use the feedback on this adapter's answers (default: --domain).")
    ] = None,
    min_feedback: Annotated[int, typer.Option(help="Refuse with fewer feedback examples than this.")] = 10,
    held_out: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="Share of approved/corrected answers kept for the eval.")
    ] = 0.2,
    grounding: Annotated[
        Path | None,
        typer.Option(help="A SQuAD 2.0 .json: add examples that teach citing and declining (not its last 3 articles)."),
    ] = None,
    grounding_examples: Annotated[int, typer.Option(min=1, help="How many grounding examples to add.")] = 2000,
    grounding_declines: Annotated[
        float,
        typer.Option(
            min=0.0, max=1.0, help="Share of the grounding examples whose target is the decline (4/5 unanswerable)."
        ),
    ] = 0.25,
    as_json: JsonFlag = False,
) -> None:
    """Train a LoRA adapter for a domain on the configured base model."""
    from chatbot.training.run import TrainRequest, train_domain
    from chatbot.training.trainer import TrainConfig

    settings = settings_from()
    request = TrainRequest(
        domain=domain,
        data=data,
        raft=raft,
        knowledge=knowledge,
        display_name=display_name,
        description=description,
        system_prompt=system_prompt,
        scope_folder=scope_folder,
        limit=limit,
        from_feedback=from_feedback,
        feedback_adapter=feedback_adapter,
        min_feedback=min_feedback,
        held_out_share=held_out,
        grounding=grounding,
        grounding_examples=grounding_examples,
        grounding_declines=grounding_declines,
    )
    config = TrainConfig(
        rank=rank,
        alpha=2 * rank,
        learning_rate=learning_rate,
        epochs=epochs,
        batch_size=batch_size,
        max_tokens=max_tokens,
        max_steps=max_steps,
        eval_every=eval_every,
        seed=seed,
    )
    try:
        folder, result = train_domain(settings, request, config)
    except (ValueError, FileNotFoundError) as exc:
        raise fail(str(exc)) from exc
    metrics = result.metrics()
    compared = _compare_on_held_out(settings, domain, folder.name) if from_feedback else None
    if as_json:
        typer.echo(json.dumps({"folder": str(folder), **metrics, "held_out_eval": compared}, indent=2))
        return
    typer.echo(
        f"adapter written to {folder}\n"
        f"  {metrics['train_examples']} training / {metrics['validation_examples']} validation examples, "
        f"{metrics['steps']} steps, {metrics['seconds']:.0f}s ({metrics['tokens_per_second']:.0f} tokens/s)\n"
        f"  validation perplexity {metrics['validation_perplexity']} "
        f"(base model {metrics['base_validation_perplexity']})"
    )


def _compare_on_held_out(settings: Settings, old: str, new: str) -> dict | None:
    """``chatbot eval`` of the old and the new adapter on the feedback held out from training."""
    from chatbot.evaluation.command import EvalRequest, evaluate

    questions = settings.data_dir / "training" / f"{new}-heldout.jsonl"
    if not questions.is_file() or not questions.read_text().strip():
        typer.secho("no feedback was held out, so there is nothing to compare on", err=True)
        return None
    adapters = [old, new] if (settings.adapters_dir / old).is_dir() else [new]
    out = settings.data_dir / "training" / f"{new}-eval"
    summary = evaluate(
        settings, EvalRequest(questions=questions, knowledge=settings.knowledge_dir, adapters=adapters, out=out)
    )
    typer.echo(f"held-out feedback ({questions.name}): report in {out}")
    for cell, row in summary["summary"]["cells"].items():
        typer.echo(
            f"  {cell:40} answer contains reference {row.get('answer_contains', 0):.3f}  "
            f"token F1 {row.get('answer_f1', 0):.3f}  citation precision {row.get('citation_precision') or 0:.3f}"
        )
    return summary


@app.command("eval")
def evaluate(
    questions: Annotated[Path, typer.Option(help="Questions: .jsonl, the SEC 10-Q .csv, or SQuAD 2.0 .json.")],
    knowledge: Annotated[Path | None, typer.Option(help="Folder the questions are about (SQuAD: made).")] = None,
    adapters: Annotated[str, typer.Option(help="Comma-separated adapters to compare.")] = "base",
    ablation: Annotated[bool, typer.Option(help="Also run every adapter without retrieval (2x2).")] = False,
    limit: Annotated[int | None, typer.Option(help="At most this many questions (SQuAD: half unanswerable).")] = None,
    only: Annotated[str, typer.Option(help="Keep questions whose gold sources mention one of these.")] = "",
    articles: Annotated[int, typer.Option(help="SQuAD: how many articles (from the end of the file).")] = 3,
    skip_articles: Annotated[
        int, typer.Option(help="SQuAD: leave out this many last articles first (3: calibrate off the eval's).")
    ] = 0,
    out: Annotated[Path, typer.Option(help="Folder for results.json, summary.md, report.html.")] = Path("eval-results"),
    max_new_tokens: Annotated[int, typer.Option(help="Answer length limit.")] = 128,
    retrieval_only: Annotated[bool, typer.Option(help="Only measure retrieval (no answers).")] = False,
    conversations: Annotated[
        int,
        typer.Option(help="Ask the questions as conversations of this many, on different topics (0: each alone)."),
    ] = 0,
    progress: Annotated[
        bool | None, typer.Option("--progress/--no-progress", help="Progress bar (default: on a terminal).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Measure retrieval, answers, citations and abstention, per adapter and with/without retrieval."""
    from chatbot.adapters.domains import UnknownAdapterError
    from chatbot.evaluation.command import EvalRequest
    from chatbot.evaluation.command import evaluate as run_eval
    from chatbot.evaluation.report import markdown_summary

    request = EvalRequest(
        questions=questions,
        knowledge=knowledge,
        adapters=[name.strip() for name in adapters.split(",") if name.strip()],
        ablation=ablation,
        limit=limit,
        only=[key.strip() for key in only.split(",") if key.strip()],
        articles=articles,
        skip_articles=skip_articles,
        out=out,
        max_new_tokens=max_new_tokens,
        retrieval_only=retrieval_only,
        conversations=conversations,
    )
    try:
        show = progress if progress is not None else not as_json and sys.stderr.isatty()
        result = run_eval(settings_from(), request, show_progress=show)
    except (UnknownAdapterError, ValueError, OSError) as exc:
        raise fail(str(exc)) from exc
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    typer.echo(markdown_summary(result["summary"], f"{questions.name}"))
    for kind, path in result["reports"].items():
        typer.echo(f"{kind}: {path}")


@app.command()
def calibrate(
    results: Annotated[Path, typer.Argument(help="results.json of an eval run with the signal off (see docs).")],
    out: Annotated[Path | None, typer.Option(help="Where to write the fit (default: the shipped one).")] = None,
    max_answerable_declines: Annotated[
        float, typer.Option(help="Share of answerable turns the signal may decline on these records.")
    ] = 0.1,
    check: Annotated[
        Path | None,
        typer.Option(help="Write nothing: show what this fit would change on these (held-out) records."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Fit the answerability signal (when to decline) on an eval run's records, or check a fit on them."""
    from chatbot.evaluation.calibration import fit
    from chatbot.rag.answerability import FIT

    try:
        if results.stat().st_size > MAX_RESULTS_BYTES:
            raise ValueError(f"over {MAX_RESULTS_BYTES // 2**20} MiB: not an eval run's results.json")
        data = json.loads(results.read_text(encoding="utf-8"))
        if check is not None:
            _check_fit(data["records"], check, as_json)
            return
        config = data.get("config", {})
        about = {key: config.get(key) for key in ("questions", "articles", "skip_articles", "limit", "adapters")}
        fitted = fit(data["records"], max_answerable_declines, about)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise fail(f"cannot calibrate from {results}: {exc}") from exc
    target = out or FIT
    target.write_text(json.dumps(fitted.to_json(), indent=1) + "\n", encoding="utf-8")
    if as_json:
        typer.echo(json.dumps({"written": str(target), **fitted.to_json()}, indent=2))
        return
    typer.echo(
        f"{fitted.about['rows']} turns ({fitted.about['answerable']} answerable): cross-validated AUC "
        f"{fitted.about['auc_cross_validated']:.3f}, threshold {fitted.threshold:.3f}; written to {target}"
    )


def _check_fit(records: list, path: Path, as_json: bool) -> None:
    from chatbot.evaluation.calibration import COMPARED, compare
    from chatbot.rag.answerability import read

    fitted = read(path)
    if not isinstance(records, list) or not all(isinstance(record, dict) for record in records):
        raise ValueError("records are not an eval run's")
    table = compare(records, fitted)
    if as_json:
        typer.echo(json.dumps({"fit": str(path), "threshold": fitted.threshold, "cells": table}, indent=2))
        return
    typer.echo(f"{path} (threshold {fitted.threshold:.3f}), signal off -> on:")
    for cell, row in table.items():
        figures = ", ".join(f"{key} {_figure(row['off'][key])} -> {_figure(row['on'][key])}" for key in COMPARED)
        auc = "n/a" if row["auc"] is None else f"{row['auc']:.3f}"
        typer.echo(
            f"- {cell}: {figures}; withheld {row['withheld']} of {row['shown']} shown "
            f"({row['withheld_with_gold']} held the gold answer); AUC {auc}"
        )


def _figure(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
