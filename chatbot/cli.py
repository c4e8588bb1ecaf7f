"""The ``chatbot`` command: sync, ask, serve, info."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from chatbot.config import ConfigError, Settings, load_settings

app = typer.Typer(
    help="Chat with your own documents in your domain's voice.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def _settings(**overrides: object) -> Settings:
    try:
        return load_settings(**{key: value for key, value in overrides.items() if value is not None})
    except ConfigError as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.secho(message, fg=typer.colors.RED, err=True)
    return typer.Exit(code)


def _chatbot(settings: Settings):  # noqa: ANN202 - lazy import keeps `chatbot --help` fast
    from chatbot.app.service import Chatbot

    return Chatbot(settings)


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log details.")] = False) -> None:
    """hybrid-chatbot: a LoRA adapter for the voice, retrieval over your files for the facts."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )


def _print_report(report, prefix: str = "", skipped: bool = True) -> None:  # noqa: ANN001 - SyncReport
    typer.echo(
        f"{prefix}{len(report.added)} added, {len(report.updated)} updated, {len(report.deleted)} deleted, "
        f"{report.unchanged} unchanged files; {report.chunks_added} chunks written, "
        f"{report.chunks_deleted} removed in {report.seconds:.2f}s"
    )
    for path, reason in sorted(report.errors.items()):
        typer.secho(f"  error   {path}: {reason}", fg=typer.colors.RED)
    for path, reason in sorted(report.skipped.items()) if skipped else ():
        typer.secho(f"  skipped {path}: {reason}", fg=typer.colors.YELLOW)


@app.command()
def sync(as_json: JsonFlag = False) -> None:
    """Index the knowledge folder: add new, re-index changed, drop deleted files."""
    bot = _chatbot(_settings())
    report = bot.sync(show_progress=not as_json and sys.stderr.isatty())
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        _print_report(report)
    if report.errors:
        raise typer.Exit(1)


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="The question to answer.")],
    adapter: Annotated[str | None, typer.Option(help="Domain adapter to answer with (default: base).")] = None,
    no_retrieval: Annotated[bool, typer.Option("--no-retrieval", help="Answer without the knowledge base.")] = False,
    max_new_tokens: Annotated[int | None, typer.Option(help="Limit the answer length.")] = None,
    no_sync: Annotated[bool, typer.Option("--no-sync", help="Skip the quick sync before answering.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Answer one question from the knowledge base, with citations."""
    from chatbot.adapters.registry import UnknownAdapterError
    from chatbot.rag.answer import Answer

    bot = _chatbot(_settings())
    bot.load()
    if not no_retrieval and not no_sync:
        bot.sync()  # a no-op when nothing changed
    try:
        events = bot.stream(question, adapter=adapter, use_retrieval=not no_retrieval, max_new_tokens=max_new_tokens)
        answer = None
        for event in events:
            if isinstance(event, Answer):
                answer = event
            elif not as_json:
                typer.echo(event, nl=False)
    except (UnknownAdapterError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    assert answer is not None
    if as_json:
        typer.echo(json.dumps(answer.to_json(), indent=2, ensure_ascii=False))
        return
    typer.echo("")
    if answer.sources:
        typer.echo("\nSources:")
        for source in answer.sources:
            page = f", page {source.page}" if source.page is not None else ""
            typer.echo(f"  [{source.n}] {source.source}{page} (score {source.score:.2f})")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 7860).")] = None,
    adapter: Annotated[str | None, typer.Option(help="Adapter new conversations start with.")] = None,
) -> None:
    """Serve the chat page; the knowledge and adapters folders are synced and watched."""
    from chatbot.server.app import run

    run(_settings(host=host, port=port, default_adapter=adapter))


@app.command()
def watch(
    debounce: Annotated[float, typer.Option(help="Seconds of quiet before a sync.")] = 1.0,
) -> None:
    """Sync the knowledge folder, then re-sync whenever files are added, changed or deleted."""
    import time

    bot = _chatbot(_settings())

    def show(report) -> None:  # noqa: ANN001 - SyncReport, imported lazily
        _print_report(report, prefix=time.strftime("%H:%M:%S "), skipped=False)

    _print_report(bot.sync(show_progress=sys.stderr.isatty()))
    bot.watch(on_sync=show, debounce_s=debounce)
    typer.echo(f"watching {bot.settings.knowledge_dir.resolve()} (Ctrl-C to stop)")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        bot.close()


adapters_app = typer.Typer(help="List and check domain adapters.", no_args_is_help=True)
app.add_typer(adapters_app, name="adapters")


@adapters_app.command("list")
def adapters_list(as_json: JsonFlag = False) -> None:
    """Every adapter folder with description, base model, rank, size and status."""
    rows = _chatbot(_settings()).adapter_rows()
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
        for note in [row.error, *row.warnings]:
            if note:
                typer.echo(f"{'':<15}{note}")


@adapters_app.command("check")
def adapters_check(folder: Annotated[Path, typer.Argument(help="An adapter folder.")]) -> None:
    """Say whether an adapter folder fits the configured base model, and why not."""
    from chatbot.adapters.check import check_adapter

    if not folder.is_dir():
        raise _fail(f"{folder}: not a folder")
    base = _chatbot(_settings()).generator.base
    problems, warnings = check_adapter(folder, base.model, base.fingerprint)
    for warning in warnings:
        typer.secho(f"warning: {warning}", fg=typer.colors.YELLOW)
    if problems:
        for problem in problems:
            typer.secho(f"{folder}: {problem}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)
    typer.echo(f"{folder}: fits {base.name} ({base.fingerprint})")


feedback_app = typer.Typer(help="What users said about answers.", no_args_is_help=True)
app.add_typer(feedback_app, name="feedback")


@feedback_app.command("export")
def feedback_export(
    out: Annotated[Path | None, typer.Option(help="Write to this .jsonl file (default: standard output).")] = None,
    adapter: Annotated[str | None, typer.Option(help="Only answers of this adapter.")] = None,
    owner: Annotated[str | None, typer.Option(help="Only this user's (login or API key name).")] = None,
) -> None:
    """Every answer with feedback, newest first, one JSON object per line."""
    from chatbot.chats import ChatStore

    settings = _settings()
    path = settings.data_dir / "chats.sqlite"
    if not path.is_file():
        raise _fail(f"no saved conversations yet ({path} does not exist)")
    records = ChatStore(path).feedback(owner=owner, adapter=adapter)
    lines = (json.dumps(record.to_json(), ensure_ascii=False) + "\n" for record in records)
    if out is None:
        count = sum(1 for line in lines if sys.stdout.write(line))
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(out.name + ".partial")  # a reader never sees half an export
        with partial.open("w", encoding="utf-8") as handle:
            count = sum(1 for line in lines if handle.write(line))
        partial.replace(out)
    typer.secho(f"{count} answers with feedback", err=True)


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

    settings = _settings()
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
        raise _fail(str(exc)) from exc
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
    out: Annotated[Path, typer.Option(help="Folder for results.json, summary.md, report.html.")] = Path("eval-results"),
    max_new_tokens: Annotated[int, typer.Option(help="Answer length limit.")] = 128,
    retrieval_only: Annotated[bool, typer.Option(help="Only measure retrieval (no answers).")] = False,
    progress: Annotated[
        bool | None, typer.Option("--progress/--no-progress", help="Progress bar (default: on a terminal).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Measure retrieval, answers, citations and abstention, per adapter and with/without retrieval."""
    from chatbot.adapters.registry import UnknownAdapterError
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
        out=out,
        max_new_tokens=max_new_tokens,
        retrieval_only=retrieval_only,
    )
    try:
        show = progress if progress is not None else not as_json and sys.stderr.isatty()
        result = run_eval(_settings(), request, show_progress=show)
    except (UnknownAdapterError, ValueError, OSError) as exc:
        raise _fail(str(exc)) from exc
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    typer.echo(markdown_summary(result["summary"], f"{questions.name}"))
    for kind, path in result["reports"].items():
        typer.echo(f"{kind}: {path}")


@app.command()
def info(as_json: JsonFlag = False) -> None:
    """Show models, paths, adapters and knowledge counts."""
    data = _chatbot(_settings()).info()
    if as_json:
        typer.echo(json.dumps(data.to_dict(), indent=2))
        return
    base, knowledge = data.base_model, data.knowledge
    where = base.remote or f"{base.device} ({base.dtype})"
    typer.echo(f"base model       {base.name} on {where}  {base.source}")
    typer.echo(f"embedding model  {data.embedding_model.folder}")
    for key, value in data.paths.items():
        typer.echo(f"{key:<16} {value}")
    typer.echo(f"knowledge        {knowledge.documents} documents, {knowledge.chunks} chunks")
    for path, reason in knowledge.errors.items():
        typer.secho(f"  error {path}: {reason}", fg=typer.colors.RED)
    for adapter in data.adapters:
        typer.echo(f"adapter          {adapter.name}: {adapter.status}  {adapter.description}")


if __name__ == "__main__":
    app()
