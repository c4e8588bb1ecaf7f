"""The ``chatbot`` command: sync, ask, serve, info."""

from __future__ import annotations

import json
import logging
import sys
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
    from chatbot.service import Chatbot

    return Chatbot(settings)


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log details.")] = False) -> None:
    """hybrid-chatbot: a LoRA adapter for the voice, retrieval over your files for the facts."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )


@app.command()
def sync(as_json: JsonFlag = False) -> None:
    """Index the knowledge folder: add new, re-index changed, drop deleted files."""
    bot = _chatbot(_settings())
    report = bot.sync(show_progress=not as_json and sys.stderr.isatty())
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        typer.echo(
            f"{len(report.added)} added, {len(report.updated)} updated, {len(report.deleted)} deleted, "
            f"{report.unchanged} unchanged files; {report.chunks_added} chunks written, "
            f"{report.chunks_deleted} removed in {report.seconds:.2f}s"
        )
        for path, reason in sorted(report.errors.items()):
            typer.secho(f"  error   {path}: {reason}", fg=typer.colors.RED)
        for path, reason in sorted(report.skipped.items()):
            typer.secho(f"  skipped {path}: {reason}", fg=typer.colors.YELLOW)
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
    from chatbot.adapters import UnknownAdapterError
    from chatbot.answer import Answer

    bot = _chatbot(_settings())
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
) -> None:
    """Serve the chat page (and sync the knowledge folder first)."""
    from chatbot.server import run

    run(_settings(host=host, port=port))


@app.command()
def info(as_json: JsonFlag = False) -> None:
    """Show models, paths, adapters and knowledge counts."""
    data = _chatbot(_settings()).info()
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    base, knowledge = data["base_model"], data["knowledge"]
    typer.echo(f"base model       {base['name']} on {base['device']} ({base['dtype']})  {base['source']}")
    typer.echo(f"embedding model  {data['embedding_model']['folder']}")
    for key, value in data["paths"].items():
        typer.echo(f"{key:<16} {value}")
    typer.echo(f"knowledge        {knowledge['documents']} documents, {knowledge['chunks']} chunks")
    for path, reason in knowledge["errors"].items():
        typer.secho(f"  error {path}: {reason}", fg=typer.colors.RED)
    for adapter in data["adapters"]:
        typer.echo(f"adapter          {adapter['name']}: {adapter['status']}  {adapter['description']}")


if __name__ == "__main__":
    app()
