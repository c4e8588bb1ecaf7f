"""Commands for the knowledge and for answers: ``sync``, ``ask``, ``serve``, ``watch``, ``info``."""

from __future__ import annotations

import json
import sys
import time
from typing import Annotated

import typer

from chatbot.cli.root import JsonFlag, app, fail, open_chatbot, print_report, settings_from


@app.command()
def sync(as_json: JsonFlag = False) -> None:
    """Index the knowledge folder: add new, re-index changed, drop deleted files."""
    bot = open_chatbot(settings_from())
    report = bot.sync(show_progress=not as_json and sys.stderr.isatty())
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        print_report(report)
    if report.errors:
        raise typer.Exit(1)


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="The question to answer.")],
    adapter: Annotated[str | None, typer.Option(help="Domain adapter to answer with (default: base).")] = None,
    no_retrieval: Annotated[bool, typer.Option("--no-retrieval", help="Answer without the knowledge base.")] = False,
    max_new_tokens: Annotated[int | None, typer.Option(help="Limit the answer length.")] = None,
    temperature: Annotated[float | None, typer.Option(help="Sampling temperature; 0 is greedy (the default).")] = None,
    top_p: Annotated[float | None, typer.Option(help="Nucleus sampling mass, with a temperature above 0.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed, so a sampled answer repeats.")] = None,
    stop: Annotated[
        list[str] | None, typer.Option(help="End the answer before this text (repeat for up to 4).")
    ] = None,
    no_sync: Annotated[bool, typer.Option("--no-sync", help="Skip the quick sync before answering.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Answer one question from the knowledge base, with citations.

    The sampling options override the adapter's ``[generation]`` settings for this answer, as a
    request's do on the API.
    """
    from chatbot.adapters.domains import UnknownAdapterError
    from chatbot.cli.answer_text import final_answer, print_answer

    bot = open_chatbot(settings_from())
    bot.load()
    if not no_retrieval and not no_sync:
        bot.sync(show_progress=not as_json and sys.stderr.isatty())  # a no-op when nothing changed
    try:
        events = bot.stream(
            question,
            adapter=adapter,
            use_retrieval=not no_retrieval,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            stop=stop or None,
        )
        answer = final_answer(events, terminal=not as_json and sys.stdout.isatty())
    except (UnknownAdapterError, ValueError) as exc:
        raise fail(str(exc)) from exc
    if as_json:
        typer.echo(json.dumps(answer.to_json(), indent=2, ensure_ascii=False))
    else:
        print_answer(answer)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 7860).")] = None,
    adapter: Annotated[str | None, typer.Option(help="Adapter new conversations start with.")] = None,
    allow_unauthenticated: Annotated[
        bool,
        typer.Option(
            "--allow-unauthenticated",
            help="Serve on a non-loopback host without a login or API key (says what is open).",
        ),
    ] = False,
) -> None:
    """Serve the chat page; the knowledge and adapters folders are synced and watched."""
    from chatbot.server.app import ExposureError, run

    settings = settings_from(
        host=host, port=port, default_adapter=adapter, allow_unauthenticated=allow_unauthenticated or None
    )
    try:
        run(settings)
    except ExposureError as exc:
        raise fail(str(exc), code=2) from exc


@app.command()
def watch(
    debounce: Annotated[float, typer.Option(help="Seconds of quiet before a sync.")] = 1.0,
) -> None:
    """Sync the knowledge folder, then re-sync whenever files are added, changed or deleted."""

    bot = open_chatbot(settings_from())

    def show(report) -> None:  # noqa: ANN001 - SyncReport, imported lazily
        print_report(report, prefix=time.strftime("%H:%M:%S "), skipped=False)

    print_report(bot.sync(show_progress=sys.stderr.isatty()))
    bot.watch(on_sync=show, debounce_s=debounce)
    typer.echo(f"watching {bot.settings.knowledge_dir.resolve()} (Ctrl-C to stop)")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        bot.close()


@app.command()
def info(as_json: JsonFlag = False) -> None:
    """Show models, paths, adapters and knowledge counts."""
    data = open_chatbot(settings_from()).info()
    if as_json:
        typer.echo(json.dumps(data.to_dict(), indent=2))
        return
    base, knowledge = data.base_model, data.knowledge
    where = base.remote or f"{base.device}, {base.engine} engine ({base.precision})"
    typer.echo(f"base model       {base.name} on {where}  {base.source}")
    if base.exact_batches is not None:
        batching = (
            "exact: an answer never depends on the requests decoded beside it"
            if base.exact_batches
            else "fast: an answer may differ in its last bits when other requests share its batch (exact_batches)"
        )
        typer.echo(f"batching         {batching}")
    typer.echo(f"embedding model  {data.embedding_model.folder}")
    for key, value in data.paths.items():
        typer.echo(f"{key:<16} {value}")
    typer.echo(f"knowledge        {knowledge.documents} documents, {knowledge.chunks} chunks")
    if knowledge.pending:
        typer.secho(f"  the next sync reads every file again: {knowledge.pending}", fg=typer.colors.YELLOW)
    for path, reason in knowledge.errors.items():
        typer.secho(f"  error {path}: {reason}", fg=typer.colors.RED)
    for adapter in data.adapters:
        typer.echo(f"adapter          {adapter.name}: {adapter.status}  {adapter.description}")
