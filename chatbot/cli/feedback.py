"""``chatbot feedback export``: what users said about answers, as JSON lines."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from chatbot.cli.root import app, fail, settings_from
from chatbot.files import replacing

feedback_app = typer.Typer(help="What users said about answers.", no_args_is_help=True)
app.add_typer(feedback_app, name="feedback")


@feedback_app.command("export")
def feedback_export(
    out: Annotated[Path | None, typer.Option(help="Write to this .jsonl file (default: standard output).")] = None,
    adapter: Annotated[str | None, typer.Option(help="Only answers of this adapter.")] = None,
    owner: Annotated[str | None, typer.Option(help="Only this user's (login or API key name).")] = None,
) -> None:
    """Every answer with feedback, newest first, one JSON object per line."""
    from chatbot.chats import ChatStoreError, open_chats

    try:
        records = open_chats(settings_from(), existing=True).feedback(owner=owner, adapter=adapter)
    except ChatStoreError as exc:
        raise fail(str(exc)) from exc
    lines = (json.dumps(record.to_json(), ensure_ascii=False) + "\n" for record in records)
    if out is None:
        count = sum(1 for line in lines if sys.stdout.write(line))
    else:
        with replacing(out) as partial, partial.open("w", encoding="utf-8") as handle:
            count = sum(1 for line in lines if handle.write(line))
    typer.secho(f"{count} answers with feedback", err=True)
