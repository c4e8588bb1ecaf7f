"""The Feedback tab: your recent verdicts on answers, and how each adapter fares with everyone's."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import gradio as gr

from chatbot.ui.history import ui_owner

if TYPE_CHECKING:
    from chatbot.app.service import Chatbot

RECENT_COLUMNS = ["When", "Adapter", "Question", "Verdict", "Correction", "Wrong sources"]
SUMMARY_COLUMNS = ["Adapter", "Answers", "👍", "👎", "Corrected", "Wrong source marked"]
_SHOWN = {"up": "👍", "down": "👎", None: ""}


def recent_rows(bot: Chatbot, owner: str | None, limit: int = 200) -> list[list]:
    """The owner's latest verdicts (only their own answers: other users' questions are never shown)."""
    if owner is None:
        return []
    rows = []
    for record in bot.chats.feedback(owner=owner, limit=limit):
        sources = {source.n: source.source for source in record.answer.sources}
        rows.append(
            [
                time.strftime("%Y-%m-%d %H:%M", time.localtime(record.updated_at)),
                record.adapter,
                record.answer.question,
                _SHOWN[record.feedback.verdict],
                record.feedback.correction or "",
                ", ".join(f"[{n}] {sources.get(n, '')}" for n in record.feedback.wrong_sources),
            ]
        )
    return rows


def summary_rows(bot: Chatbot) -> list[list]:
    """Counts per adapter over every user's saved answers (numbers only)."""
    return [
        [adapter, c["answers"], c["up"], c["down"], c["corrected"], c["wrong_source"]]
        for adapter, c in sorted(bot.chats.feedback_counts().items())
    ]


def build_feedback_tab(bot: Chatbot, browser_id: gr.BrowserState) -> tuple:
    """Lay out the tab; returns (refresh function, its inputs, its outputs) for the tab's select event."""
    gr.Markdown(
        "Your verdicts on answers, newest first. `chatbot feedback export` writes everyone's as JSONL, and "
        "`chatbot train --domain D --from-feedback` turns them into training data."
    )
    summary = gr.Dataframe(headers=SUMMARY_COLUMNS, interactive=False, elem_id="feedback-summary", label="Per adapter")
    recent = gr.Dataframe(
        headers=RECENT_COLUMNS, interactive=False, wrap=True, elem_id="feedback-recent", label="Your feedback"
    )

    def refresh(browser: str, request: gr.Request) -> tuple[list[list], list[list]]:
        return summary_rows(bot), recent_rows(bot, ui_owner(bot, request, browser))

    return refresh, [browser_id], [summary, recent]
