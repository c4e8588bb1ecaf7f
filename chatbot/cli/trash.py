"""``chatbot trash`` and ``chatbot restore``: documents the app moved out of the knowledge folder."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from chatbot.cli.root import JsonFlag, app, fail, open_chatbot, print_report, settings_from
from chatbot.knowledge.documents import DocumentError


@app.command()
def trash(
    empty: Annotated[bool, typer.Option("--empty", help="Delete everything in the trash for good.")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="With --empty: do not ask first.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """List the documents deleted or replaced from the knowledge folder (restorable), or empty the trash."""
    bot = open_chatbot(settings_from())
    entries = bot.trash.entries()
    if empty:
        if not entries:
            typer.echo("the trash is empty")
            return
        if not yes and not typer.confirm(f"Delete the {len(entries)} file(s) in the trash for good?", default=False):
            raise typer.Exit(1)
        typer.echo(f"deleted {bot.trash.empty()} file(s) for good")
        return
    if as_json:
        typer.echo(json.dumps([entry.to_dict() for entry in entries], indent=2))
        return
    if not entries:
        typer.echo("the trash is empty")
    for entry in entries:
        typer.echo(f"{entry.id}  {entry.label}  {entry.size:,} bytes")


@app.command()
def restore(
    key: Annotated[str, typer.Argument(help="A trash id, or the document's path (its newest version).")],
    no_sync: Annotated[bool, typer.Option("--no-sync", help="Leave indexing to the next sync.")] = False,
) -> None:
    """Put a document from the trash back into the knowledge folder (beside a file of that name) and the index."""
    bot = open_chatbot(settings_from())
    try:
        restored = bot.trash.restore(key)
    except (DocumentError, OSError) as exc:
        raise fail(str(exc)) from exc
    typer.echo(f"restored {restored}")
    if not no_sync:
        print_report(bot.sync(show_progress=sys.stderr.isatty()), skipped=False)
