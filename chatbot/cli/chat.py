"""Commands for the knowledge and for answers: ``sync``, ``ask``, ``serve``, ``watch``, ``info``."""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from chatbot.cli.root import JsonFlag, app, fail, open_chatbot, print_report, settings_from

if TYPE_CHECKING:
    from chatbot.config import Settings
    from chatbot.rag.answer import Answer
    from chatbot.server.discovery import ServerRecord


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
    local: Annotated[
        bool, typer.Option("--local", help="Load the model here even when a `chatbot serve` of this data dir runs.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Answer one question from the knowledge base, with citations.

    When a `chatbot serve` of the same data dir is running, it answers (its model is loaded, and its
    watcher keeps the index current); otherwise the model loads here and a quick sync runs first.
    The sampling options override the generation settings of the adapter's domain.toml for this
    answer, as a request's do on the API.
    """
    from chatbot.cli.answer_text import final_answer, print_answer
    from chatbot.server.discovery import running_server

    settings = settings_from()
    terminal = not as_json and sys.stdout.isatty()
    server = None if local else running_server(settings.data_dir)
    sampling = {
        "use_retrieval": not no_retrieval,
        "temperature": temperature,
        "top_p": top_p,
        "seed": seed,
        "stop": stop or None,
    }
    if server is not None:
        options = {"model": adapter, "max_tokens": max_new_tokens, **sampling}  # the API's names
        answer = _ask_server(server, settings, question, terminal, **options)
    else:
        from chatbot.adapters.domains import UnknownAdapterError

        bot = open_chatbot(settings)
        bot.load()
        if not no_retrieval and not no_sync:
            bot.sync(show_progress=not as_json and sys.stderr.isatty())  # a no-op when nothing changed
        try:
            events = bot.stream(question, adapter=adapter, max_new_tokens=max_new_tokens, **sampling)
            answer = final_answer(events, terminal=terminal)
        except (UnknownAdapterError, ValueError) as exc:
            raise fail(str(exc)) from exc
    if as_json:
        served_by = {"served_by": server.url if server else None}
        typer.echo(json.dumps({**answer.to_json(), **served_by}, indent=2, ensure_ascii=False))
    else:
        print_answer(answer)
        if server is not None:
            typer.secho(f"(answered by the server at {server.url})", dim=True, err=True)


def _ask_server(server: ServerRecord, settings: Settings, question: str, terminal: bool, **options: Any) -> Answer:
    """The answer from the running server; its refusals exit 1 with the server's message."""
    import httpx

    from chatbot.cli.answer_text import final_answer
    from chatbot.cli.served import ServerRefused, ask_server

    try:
        return final_answer(ask_server(server, settings, question, **options), terminal=terminal)
    except ServerRefused as exc:
        raise fail(str(exc)) from exc
    except httpx.HTTPError as exc:
        raise fail(f"the server at {server.url} stopped answering ({exc}); `chatbot ask --local` answers here") from exc


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
def info(
    load: Annotated[
        bool, typer.Option("--load", help="Load the model here, to name its engine when no server runs.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Show models, paths, adapters and knowledge counts.

    Read from the files in about a second; the engine serving (and its precision and batching)
    comes from a running `chatbot serve` of this data dir, or from ``--load``.
    """
    settings = settings_from()
    data, served_by = _info(settings, load)
    if as_json:
        typer.echo(json.dumps({**data, "served_by": served_by}, indent=2))
        return
    base, knowledge = data["base_model"], data["knowledge"]
    if base["remote"]:
        where = f"on {base['remote']}"
    elif base["engine"]:
        where = f"on {base['device']}, {base['engine']} engine ({base['precision']})"
        where += f", served at {served_by}" if served_by else ""
    else:
        where = "(not loaded: `chatbot serve` runs it; `chatbot info --load` loads it here to name its engine)"
    revision = f" @ {base['revision'][:12]}" if base.get("revision") else ""
    typer.echo(f"base model       {base['name']}{revision} {where}  {base['source']}")
    if base["exact_batches"] is not None:
        batching = (
            "exact: an answer never depends on the requests decoded beside it"
            if base["exact_batches"]
            else "fast: an answer may differ in its last bits when other requests share its batch (exact_batches)"
        )
        typer.echo(f"batching         {batching}")
    typer.echo(f"embedding model  {data['embedding_model']['folder']}")
    for key, value in data["paths"].items():
        typer.echo(f"{key:<16} {value}")
    typer.echo(f"knowledge        {knowledge['documents']} documents, {knowledge['chunks']} chunks")
    if knowledge["pending"]:
        typer.secho(f"  the next sync reads every file again: {knowledge['pending']}", fg=typer.colors.YELLOW)
    for path, reason in knowledge["errors"].items():
        typer.secho(f"  error {path}: {reason}", fg=typer.colors.RED)
    for adapter in data["adapters"]:
        typer.echo(f"adapter          {adapter['name']}: {adapter['status']}  {adapter['description']}")


def _info(settings: Settings, load: bool) -> tuple[dict[str, Any], str | None]:
    """``chatbot info``'s data, and the URL of the server it came from (None: the files, or ``--load``)."""
    if load:
        return open_chatbot(settings).info().to_dict(), None
    from chatbot.app.on_disk import describe_on_disk
    from chatbot.server.discovery import running_server

    data = describe_on_disk(settings).to_dict()
    server = running_server(settings.data_dir)
    if server is None:
        return data, None
    import httpx

    from chatbot.cli.served import ServerRefused, server_info

    try:
        served = server_info(server, settings)
    except (ServerRefused, httpx.HTTPError, ValueError) as exc:
        typer.secho(f"the server at {server.url} did not say how it runs: {exc}", fg=typer.colors.YELLOW, err=True)
        return data, None
    for key, value in served["base_model"].items():  # its paths are left out; the files' stand
        if value is not None:
            data["base_model"][key] = value
    data["knowledge"], data["adapters"] = served["knowledge"], served["adapters"]
    return data, server.url
