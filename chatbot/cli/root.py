"""The ``chatbot`` command's root: the Typer app, its options, and what every command shares."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Annotated

import typer

from chatbot.config import ConfigError, Settings, load_settings
from chatbot.models.embedded import ModelNotFoundError

if TYPE_CHECKING:
    from chatbot.app.service import Chatbot
    from chatbot.knowledge.sync import SyncReport


class _App(typer.Typer):
    """The Typer app; a model that cannot be found or fetched is a message naming the setting, exit 2."""

    def __call__(self, *args: object, **kwargs: object) -> object:
        try:
            return super().__call__(*args, **kwargs)
        except ModelNotFoundError as exc:
            typer.secho(str(exc), fg=typer.colors.RED, err=True)
            raise SystemExit(2) from exc


app = _App(
    help="Chat with your own documents in your domain's voice.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def settings_from(**overrides: object) -> Settings:
    """The settings (file, environment, then ``overrides``); a bad one exits with code 2, naming the key."""
    try:
        return load_settings(**{key: value for key, value in overrides.items() if value is not None})
    except ConfigError as exc:
        typer.secho(str(exc), fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``message`` in red on stderr; raise what it returns."""
    typer.secho(message, fg=typer.colors.RED, err=True)
    return typer.Exit(code)


def open_chatbot(settings: Settings) -> Chatbot:
    """The app for ``settings`` (imported here: a lazy import keeps ``chatbot --help`` fast)."""
    from chatbot.app.service import Chatbot

    return Chatbot(settings)


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log details.")] = False) -> None:
    """hybrid-chatbot: a LoRA adapter for the voice, retrieval over your files for the facts."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )


def print_report(report: SyncReport, prefix: str = "", skipped: bool = True) -> None:
    """A sync's counts, then its errors and skipped files."""
    if report.rebuilt:
        typer.secho(f"{prefix}re-indexed every file: {report.rebuilt}", fg=typer.colors.YELLOW)
    typer.echo(
        f"{prefix}{len(report.added)} added, {len(report.updated)} updated, {len(report.deleted)} deleted, "
        f"{report.unchanged} unchanged files; {report.chunks_added} chunks written, "
        f"{report.chunks_deleted} removed in {report.seconds:.2f}s"
    )
    for path, reason in sorted(report.errors.items()):
        typer.secho(f"  error   {path}: {reason}", fg=typer.colors.RED)
    for path, reason in sorted(report.skipped.items()) if skipped else ():
        typer.secho(f"  skipped {path}: {reason}", fg=typer.colors.YELLOW)
