"""The Chat tab's saved-conversation side: what the page shows for a conversation, the history
panel (open, search, rename, delete) and the feedback on answers (thumbs, corrections, wrong sources)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gradio as gr

from chatbot.chats import ConversationNotFoundError, SavedTurn
from chatbot.ui.history import Messages, answer_choices, history_choices, saved_chat, source_choices, ui_owner
from chatbot.vocabulary import InputError

if TYPE_CHECKING:
    from chatbot.app.service import Chatbot


@dataclass
class ChatPage:
    """The components a saved conversation fills, and how to fill them."""

    bot: Chatbot
    browser_id: gr.BrowserState
    open_id: gr.BrowserState  # reopened after a reload
    conversation: gr.State  # id of the saved conversation on screen
    turn_ids: gr.State  # the saved answer of each question on screen (None: not saved)
    turns: gr.State  # the conversation as the model sees it (Turn objects)
    chat: gr.Chatbot
    base_chat: gr.Chatbot
    search: gr.Textbox
    history: gr.Radio
    title: gr.Textbox
    answer_pick: gr.Dropdown
    wrong: gr.CheckboxGroup
    correction: gr.Textbox

    @property
    def page(self) -> list[Any]:
        """The components :meth:`opened` fills, in its order."""
        return [
            *(self.chat, self.base_chat, self.turns, self.conversation, self.turn_ids, self.history, self.title),
            *(self.open_id, self.answer_pick, self.wrong, self.correction),
        ]

    def who(self, request: gr.Request, browser: str) -> str | None:
        return ui_owner(self.bot, request, browser)

    def history_radio(self, owner: str | None, search_text: str, conversation_id: str | None) -> gr.Radio:
        return gr.Radio(choices=history_choices(self.bot, owner, search_text), value=conversation_id)

    def form(self, owner: str | None, conversation_id: str | None, pick: int | None = None) -> tuple:
        """The feedback form for one answer of the conversation (the last by default)."""
        saved: list[SavedTurn] = self.bot.chats.turns(owner, conversation_id) if owner and conversation_id else []
        turn = next((t for t in saved if t.id == pick), saved[-1] if saved else None)
        feedback = turn.feedback if turn else None
        return (
            gr.Dropdown(choices=answer_choices(saved), value=turn.id if turn else None),
            gr.CheckboxGroup(choices=source_choices(turn), value=list(feedback.wrong_sources) if feedback else []),
            feedback.correction or "" if feedback else "",
        )

    def opened(self, owner: str | None, conversation_id: str | None, search_text: str = "") -> tuple:
        """Everything :attr:`page` shows for a saved conversation (an empty page for None)."""
        saved, info = [], None
        if owner and conversation_id:
            try:
                info = self.bot.chats.get(owner, conversation_id)
                saved = self.bot.chats.turns(owner, conversation_id)
            except ConversationNotFoundError:
                conversation_id = None
        messages, thumbs = saved_chat(self.bot, saved)
        return (
            gr.Chatbot(value=messages, feedback_value=thumbs),
            [],
            [t.turn for t in saved],
            conversation_id,
            [t.id for t in saved],
            self.history_radio(owner, search_text, conversation_id),
            info.title if info else "",
            conversation_id or "",
            *self.form(owner, conversation_id),
        )


def wire_history(page: ChatPage, rename: gr.Button, delete: gr.Button) -> None:
    """Open, search, rename and delete saved conversations from the history panel."""
    bot = page.bot

    def on_open(conversation_id: str | None, browser: str, search_text: str, request: gr.Request) -> tuple:
        return page.opened(page.who(request, browser), conversation_id, search_text)

    page.history.input(on_open, [page.history, page.browser_id, page.search], page.page, api_name=False)

    def on_search(search_text: str, conversation_id: str | None, browser: str, request: gr.Request) -> gr.Radio:
        return page.history_radio(page.who(request, browser), search_text, conversation_id)

    page.search.change(
        on_search,
        [page.search, page.conversation, page.browser_id],
        page.history,
        api_name=False,
        show_progress="hidden",
    )

    def on_rename(new_title: str, conversation_id: str | None, browser: str, search_text: str, request: gr.Request):  # noqa: ANN202
        owner = page.who(request, browser)
        if not owner or not conversation_id:
            raise gr.Error("open or start a conversation first")
        try:
            bot.chats.rename(owner, conversation_id, new_title)
        except (InputError, ConversationNotFoundError) as exc:
            raise gr.Error(str(exc)) from exc
        return page.history_radio(owner, search_text, conversation_id)

    rename.click(on_rename, [page.title, page.conversation, page.browser_id, page.search], page.history, api_name=False)

    def on_delete(conversation_id: str | None, browser: str, search_text: str, request: gr.Request) -> tuple:
        owner = page.who(request, browser)
        if owner and conversation_id:
            with contextlib.suppress(ConversationNotFoundError):
                bot.chats.delete(owner, conversation_id)
        return page.opened(owner, None, search_text)

    delete.click(on_delete, [page.conversation, page.browser_id, page.search], page.page, api_name=False)


def _turn_of(chat: Messages, index: int, turn_ids: list[int | None]) -> int | None:
    """The saved answer a message of the chat belongs to (the number of questions up to it)."""
    asked = sum(1 for message in chat[: index + 1] if _role(message) == "user")
    return turn_ids[asked - 1] if 0 < asked <= len(turn_ids) else None


def _role(message: Any) -> str | None:
    return message.get("role") if isinstance(message, dict) else getattr(message, "role", None)


def wire_feedback(page: ChatPage, save: gr.Button, note: gr.Markdown) -> None:
    """Thumbs on each answer; a correction and wrong sources for the answer picked in the form."""
    bot = page.bot

    def on_like(data: gr.LikeData, shown: Messages, saved_ids: list[int | None], browser: str, request: gr.Request):  # noqa: ANN202
        owner = page.who(request, browser)
        index = data.index[0] if isinstance(data.index, (list, tuple)) else data.index
        turn_id = _turn_of(shown, index, saved_ids)
        if owner is None or turn_id is None:
            gr.Warning("this answer was not saved, so feedback cannot be kept")
            return
        verdict = "up" if data.liked is True else "down" if data.liked is False else None
        try:
            bot.chats.set_feedback(owner, turn_id, verdict=verdict)
        except ConversationNotFoundError as exc:
            raise gr.Error(str(exc)) from exc

    page.chat.like(on_like, [page.chat, page.turn_ids, page.browser_id], None, api_name=False)

    def on_pick(pick: int | None, conversation_id: str | None, browser: str, request: gr.Request) -> tuple:
        return page.form(page.who(request, browser), conversation_id, pick)[1:]

    page.answer_pick.input(
        on_pick, [page.answer_pick, page.conversation, page.browser_id], [page.wrong, page.correction], api_name=False
    )

    def on_save(pick: int | None, marks: list[int], text: str, browser: str, request: gr.Request) -> str:
        owner = page.who(request, browser)
        if owner is None or pick is None:
            return "Choose an answer first."
        try:
            bot.chats.set_feedback(
                owner, pick, correction=text, wrong_sources=marks or [], max_chars=bot.settings.max_message_chars
            )
        except (InputError, ConversationNotFoundError) as exc:
            return f"⚠️ {exc}"
        return "Feedback saved."

    save.click(on_save, [page.answer_pick, page.wrong, page.correction, page.browser_id], note, api_name=False)
