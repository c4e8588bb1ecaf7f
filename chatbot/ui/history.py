"""The Chat tab's saved conversations: whose they are, the history list, a saved conversation as chat messages.

With ``ui_auth`` a conversation belongs to the login name. Without a login each browser keeps
its own history under a random id in its local storage: a convenience that keeps people on a
shared, open server out of each other's lists, not access control (set ``ui_auth`` for that).
"""

from __future__ import annotations

import re
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr

from chatbot.chats import SavedTurn, source_changes
from chatbot.rag.answer import Answer
from chatbot.ui.render import answer_markdown, sources_markdown, sources_title

if TYPE_CHECKING:
    from chatbot.app.service import Chatbot

Messages = list[dict[str, Any]]
BROWSER_OWNER = "browser:"
_BROWSER_ID = re.compile(r"[0-9a-f]{32}")
_VERDICT_TO_UI = {"up": "Like", "down": "Dislike"}


def browser_secret(data_dir: Path) -> str:
    """The key that encrypts the browser id in local storage, kept in the data dir so ids survive restarts."""
    path = data_dir / "browser-state.key"
    if not path.is_file():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(16))
        path.chmod(0o600)
    return path.read_text().strip()


def new_browser_id(current: str | None) -> str:
    """The browser's id: the one it has, or a new random one."""
    return current if isinstance(current, str) and _BROWSER_ID.fullmatch(current) else secrets.token_hex(16)


def ui_owner(bot: Chatbot, request: gr.Request | None, browser_id: str | None) -> str | None:
    """Whose conversations this page shows (None: nobody yet, e.g. before the page finished loading)."""
    if bot.settings.ui_auth:
        return getattr(request, "username", None) or None
    if isinstance(browser_id, str) and _BROWSER_ID.fullmatch(browser_id):
        return BROWSER_OWNER + browser_id
    return None


def domain_label(bot: Chatbot, name: str) -> str:
    domain = bot.adapters.find(name)
    return domain.display_name if domain else name  # an adapter removed since the answer: its name


def answer_messages(bot: Chatbot, answer: Answer, changes: dict[str, str] | None = None) -> Messages:
    """The chat messages of one answer: the answer, then (with retrieval) its sources panel."""
    messages: Messages = [
        {"role": "assistant", "content": answer_markdown(answer, domain_label(bot, answer.adapter), changes)}
    ]
    if answer.used_retrieval:
        messages.append(
            {
                "role": "assistant",
                "content": sources_markdown(answer, changes),
                "metadata": {"title": sources_title(answer), "status": "done"},
            }
        )
    return messages


def saved_chat(bot: Chatbot, turns: list[SavedTurn]) -> tuple[Messages, list[str | None]]:
    """A saved conversation as chat messages, with the thumbs of each assistant message."""
    current = bot.knowledge.file_versions()
    messages: Messages = []
    thumbs: list[str | None] = []
    for turn in turns:
        messages.append({"role": "user", "content": turn.question})
        shown = answer_messages(bot, turn.answer, source_changes(turn.versions, current))
        verdict = turn.feedback.verdict if turn.feedback else None
        thumbs.extend([_VERDICT_TO_UI.get(verdict or ""), *[None] * (len(shown) - 1)])
        messages.extend(shown)
    return messages, thumbs


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def history_choices(bot: Chatbot, owner: str | None, search: str = "") -> list[tuple[str, str]]:
    """(label, id) of the owner's conversations, newest first."""
    if owner is None or not bot.settings.save_conversations:
        return []
    choices, seen = [], {}
    for c in bot.chats.conversations(owner, search):
        answers = f"{c.turns} answer{'' if c.turns == 1 else 's'}"
        who = domain_label(bot, c.adapter) if c.adapter else "no answer yet"
        label = f"{c.title or 'Untitled'} · {who} · {answers} · {_when(c.updated_at)}"
        seen[label] = seen.get(label, 0) + 1
        choices.append((label if seen[label] == 1 else f"{label} (#{seen[label]})", c.id))
    return choices


def answer_choices(turns: list[SavedTurn]) -> list[tuple[str, int]]:
    """(label, turn id) of every answer of a conversation, for the feedback form."""
    return [(f"{turn.position + 1}. {turn.question[:70]}", turn.id) for turn in turns]


def source_choices(turn: SavedTurn | None) -> list[tuple[str, int]]:
    """(label, block number) of the blocks an answer cites, for the "wrong source" marks."""
    if turn is None:
        return []
    return [(f"[{source.n}] {source.source}", source.n) for source in turn.answer.sources]
