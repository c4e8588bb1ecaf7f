"""The Adapters tab: a card per adapter with its description, base model, size, metrics and loss plot."""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import gradio as gr

if TYPE_CHECKING:
    from chatbot.app.info import AdapterRow
    from chatbot.app.service import Chatbot

_CARD = (
    "border:1px solid var(--border-color-primary);border-radius:8px;padding:12px 16px;margin:0 0 12px 0;"
    "background:var(--block-background-fill)"
)
_METRICS = {
    "validation_perplexity": "validation perplexity",
    "base_validation_perplexity": "base model's perplexity",
    "recipe": "recipe",
    "data": "data",
    "trained_at": "trained",
}


def _metrics_rows(metrics: dict[str, Any]) -> str:
    rows = [
        f"<tr><td>{html.escape(label)}</td><td>{html.escape(str(metrics[key]))}</td></tr>"
        for key, label in _METRICS.items()
        if key in metrics
    ]
    return f"<table>{''.join(rows)}</table>" if rows else ""


def card_html(row: AdapterRow) -> str:
    """One adapter's card (every value escaped; the loss plot is served by ``/adapter-files``)."""
    name = html.escape(row.name)
    status = "ready" if row.status == "ready" else "refused"
    colour = "#15803d" if status == "ready" else "#b91c1c"
    facts = [f"base model: {html.escape(str(row.base_model or 'unknown'))}"]
    if row.rank:
        facts.append(f"LoRA rank {row.rank}")
    if row.size_bytes:
        facts.append(f"{row.size_bytes / 1e6:.1f} MB")
    if row.answerability_fit:
        facts.append("its own answerability fit")
    parts = [
        f"<div class='adapter-card' data-adapter='{name}' style='{_CARD}'>",
        f"<h3 style='margin:0'>{html.escape(row.display_name)} <code>{name}</code> "
        f"<span style='color:{colour};font-size:0.8em'>{status}</span></h3>",
        f"<p>{html.escape(row.description or '')}</p>",
        f"<p style='opacity:0.8'>{' · '.join(facts)}</p>",
    ]
    if row.error:
        parts.append(f"<p style='color:#b91c1c'>⚠️ {html.escape(row.error)}</p>")
    parts.extend(f"<p style='color:#b45309'>{html.escape(w)}</p>" for w in row.warnings)
    parts.append(_metrics_rows(row.metrics))
    if row.folder and row.status == "ready":
        parts.append(
            f"<img src='/adapter-files/{quote(row.name)}/loss.png' alt='training loss of {name}' "
            "style='max-width:520px;width:100%' onerror=\"this.style.display='none'\">"
        )
    parts.append("</div>")
    return "".join(parts)


def cards_html(bot: Chatbot) -> str:
    try:
        rows = bot.adapter_rows()
    except Exception as exc:
        return f"<p>⚠️ could not list the adapters: {html.escape(str(exc))}</p>"
    return "".join(card_html(row) for row in rows)


def build_adapters_tab(bot: Chatbot) -> tuple[Callable[[], str], gr.HTML]:
    """Lay out the tab; returns the refresh function and the component it fills."""
    gr.Markdown(
        "Adapters live in the adapters folder, one sub-folder each; new or changed folders load "
        "without a restart. Train one with `chatbot train`."
    )
    cards = gr.HTML(cards_html(bot), elem_id="adapter-cards")
    gr.Button("Refresh", size="sm").click(lambda: cards_html(bot), outputs=cards, api_name=False)
    return (lambda: cards_html(bot)), cards
