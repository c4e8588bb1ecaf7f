"""How ``chatbot ask`` shows an answer: the model's draft while it streams, then the chain's verdict.

The streamed text is not the answer: the chain attaches citation markers, drops an unfinished last
sentence and may withhold the whole answer (a claim no passage supports). So a terminal shows the
draft dimmed and replaces it with the final answer; anything else gets the final answer only.
"""

from __future__ import annotations

from collections.abc import Iterable

import typer

from chatbot.rag.answer import Answer, SourceRef, last_answer


def final_answer(events: Iterable[str | Answer], terminal: bool) -> Answer:
    """Read ``events`` to the finished :class:`Answer`, showing the draft while it streams on a ``terminal``."""
    if not terminal:
        return last_answer(events)
    from rich.live import Live
    from rich.text import Text

    draft = Text(style="dim")
    with Live(draft, transient=True, auto_refresh=False) as live:  # transient: the draft is removed
        for event in events:
            if isinstance(event, Answer):
                return event
            draft.append(event)
            live.refresh()
    raise RuntimeError("the answer stream ended without an answer")


def _line(source: SourceRef) -> str:
    where = "".join(f", {part}" for part in (source.place, source.section) if part)
    return f"  [{source.n}] {source.source}{where} (score {source.score:.2f})"


def print_answer(answer: Answer) -> None:
    """The reply (the answer and its evidence line), then why it was declined and the passages
    considered, or the cited sources."""
    typer.echo(answer.reply)
    if answer.abstained:
        if answer.why:
            label = "Quoted instead" if answer.quoted else "Declined"
            typer.secho(f"\n{label}: {answer.why}", fg=typer.colors.YELLOW)
        if answer.withheld:
            typer.echo("(the withheld answer is in `ask --json`, field `withheld`)")
        if answer.retrieved:
            typer.echo("\nPassages considered:")
            for source in answer.retrieved:
                typer.echo(_line(source))
        elif answer.quoted and answer.sources:  # nothing reached min_relevance: the nearest passage's block
            typer.echo("\nQuoted from:")
            for source in answer.sources:
                typer.echo(_line(source))
        return
    if answer.truncated:
        typer.secho("(cut short at the token limit)", fg=typer.colors.YELLOW)
    if answer.dropped:
        typer.secho(f"({len(answer.dropped)} sentence(s) that no passage supports left out)", fg=typer.colors.YELLOW)
    if answer.sources:
        typer.echo("\nSources:")
        for source in answer.sources:
            flag = "" if source.supported is not False else "  unsupported: " + ", ".join(source.problems or [])
            typer.echo(_line(source) + flag)
