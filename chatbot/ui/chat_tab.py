"""The Chat tab: its layout, streamed answers with linked citations and the compare view (the saved
conversations and feedback are wired by :mod:`chatbot.ui.chat_page`)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

import gradio as gr

from chatbot.adapters.domains import UnknownAdapterError
from chatbot.rag.answer import Answer
from chatbot.rag.conversation import Turn
from chatbot.ui.chat_page import ChatPage, wire_feedback, wire_history
from chatbot.ui.history import Messages, answer_messages, browser_secret, new_browser_id
from chatbot.vocabulary import BASE_ADAPTER, InputError

if TYPE_CHECKING:
    from chatbot.app.service import Chatbot

log = logging.getLogger(__name__)


def adapter_choices(bot: Chatbot) -> list[tuple[str, str]]:
    """(label, name) of every ready domain, "base" first."""
    try:
        bot.adapters.refresh()
    except Exception as exc:  # a remote backend that is down must not break the page
        gr.Warning(f"could not refresh the adapters: {exc}")
    return [(f"{d.display_name} ({d.name})", d.name) for d in bot.adapters.list() if d.ready]


def describe(bot: Chatbot, name: str | None) -> str:
    domain = bot.adapters.find(name)
    return f"_{domain.description}_" if domain and domain.description else ""


def stream_reply(
    bot: Chatbot, chat: Messages, question: str, adapter: str, use_retrieval: bool, turns: list[Turn]
) -> Iterator[tuple[Messages, Answer | None]]:
    """Append the question and the streamed answer (then its sources) to ``chat``; yields as it grows."""
    chat = [*chat, {"role": "user", "content": question}, {"role": "assistant", "content": ""}]
    cancelled = threading.Event()  # set when Gradio closes this generator (the tab went away)
    try:
        events = bot.stream(question, adapter=adapter, use_retrieval=use_retrieval, history=turns, cancelled=cancelled)
        for event in events:
            if isinstance(event, Answer):
                yield [*chat[:-1], *answer_messages(bot, event)], event
                return
            chat[-1]["content"] += event
            yield chat, None
    except Exception as exc:  # shown to this user only; the server keeps running
        chat[-1] = {"role": "assistant", "content": f"⚠️ {exc}"}
        yield chat, None
    finally:
        cancelled.set()


def build_chat_tab(bot: Chatbot, demo: gr.Blocks) -> tuple[gr.Dropdown, gr.Dropdown, gr.BrowserState]:
    """Lay out the tab inside the current Blocks; returns the adapter and compare selectors and the browser id."""
    choices = adapter_choices(bot)
    names = {name for _label, name in choices}
    default = bot.settings.default_adapter if bot.settings.default_adapter in names else BASE_ADAPTER
    saving = bot.settings.save_conversations
    secret = browser_secret(bot.settings.data_dir)

    browser_id = gr.BrowserState("", storage_key="hybrid-chatbot-browser", secret=secret)
    open_id = gr.BrowserState("", storage_key="hybrid-chatbot-open", secret=secret)  # reopened after a reload
    conversation = gr.State(None)  # id of the saved conversation on screen
    turn_ids = gr.State([])  # the saved answer of each question on screen (None: not saved)
    turns = gr.State([])  # the conversation as the model sees it (Turn objects)

    with gr.Row():
        with gr.Column(scale=1, min_width=240, visible=saving, elem_id="history-panel"):
            search = gr.Textbox(placeholder="Search conversations…", show_label=False, elem_id="history-search")
            history = gr.Radio(choices=[], label="Conversations", elem_id="history")
            title = gr.Textbox(label="Title", elem_id="conversation-title", max_length=120)
            with gr.Row():
                rename = gr.Button("Rename", size="sm", elem_id="rename-conversation")
                delete = gr.Button("Delete", size="sm", variant="stop", elem_id="delete-conversation")
        with gr.Column(scale=4):
            with gr.Row(equal_height=True):
                adapter = gr.Dropdown(
                    choices=choices, value=default, label="Domain adapter", scale=3, elem_id="adapter"
                )
                use_retrieval = gr.Checkbox(
                    value=True, label="Use the knowledge base", scale=1, elem_id="use-retrieval"
                )
                compare = gr.Dropdown(
                    choices=[("Off", ""), *choices],
                    value="",
                    label="Compare with",
                    info="the same question, answered by another adapter beside",
                    scale=2,
                    elem_id="compare-with",
                )
            about = gr.Markdown(describe(bot, default), elem_id="adapter-about")
            with gr.Row():
                chat = gr.Chatbot(label="Conversation", height=540, elem_id="chat", scale=1)
                base_chat = gr.Chatbot(
                    label="Same question, other adapter", height=540, elem_id="compare", visible=False
                )
            with gr.Row():
                box = gr.Textbox(placeholder="Ask a question…", show_label=False, scale=8, elem_id="question")
                send = gr.Button("Send", variant="primary", scale=1, elem_id="send")
            suggestions = gr.Dataset(
                components=[box], samples=[], label="Try asking", elem_id="suggestions", visible=False
            )
            new = gr.Button("New conversation", size="sm", elem_id="new-conversation")
            with gr.Accordion("Feedback on an answer", open=False, visible=saving, elem_id="feedback-panel"):
                gr.Markdown("Thumbs are on each answer. Here you can also correct an answer or mark a wrong source.")
                answer_pick = gr.Dropdown(choices=[], label="Answer", elem_id="feedback-answer")
                wrong = gr.CheckboxGroup(choices=[], label="Wrong sources", elem_id="feedback-wrong")
                correction = gr.Textbox(
                    label="Correction: what the answer should have said", lines=2, elem_id="feedback-correction"
                )
                save = gr.Button("Save feedback", size="sm", elem_id="feedback-save")
                feedback_note = gr.Markdown(elem_id="feedback-note")

    page = ChatPage(
        bot=bot,
        browser_id=browser_id,
        open_id=open_id,
        conversation=conversation,
        turn_ids=turn_ids,
        turns=turns,
        chat=chat,
        base_chat=base_chat,
        search=search,
        history=history,
        title=title,
        answer_pick=answer_pick,
        wrong=wrong,
        correction=correction,
    )

    def on_load(browser: str, reopen: str, request: gr.Request) -> tuple:
        browser = new_browser_id(browser)
        owner = page.who(request, browser)
        return (browser, *(page.opened(owner, reopen or None) if saving else (gr.skip(),) * len(page.page)))

    demo.load(on_load, [browser_id, open_id], [browser_id, *page.page], api_name=False)

    def respond(
        message: str,
        shown: Messages,
        shown_base: Messages,
        earlier: list[Turn],
        name: str,
        retrieval: bool,
        other: str,
        conversation_id: str | None,
        saved_ids: list[int | None],
        browser: str,
        search_text: str,
        request: gr.Request,
    ) -> Iterator[tuple]:
        keep = (gr.skip(),) * 9
        question = message.strip()
        if not question:
            yield shown, shown_base, message, earlier, *keep
            return
        answer = None
        before = shown
        for shown, answer in stream_reply(bot, before, question, name, retrieval, earlier):  # noqa: B007
            yield shown, shown_base, "", earlier, *keep
        later = [*earlier, Turn(question, answer.answer)] if answer is not None else earlier
        browser = new_browser_id(browser)  # asked before the page's load event gave this browser its id
        owner = page.who(request, browser)
        turn_id, named = None, gr.skip()
        if answer is not None and owner is not None and saving:
            try:
                remembered = bot.remember(owner, conversation_id, answer)
            except Exception as exc:  # noqa: BLE001 - the answer is shown even when it cannot be kept
                log.exception("could not save the answer")
                gr.Warning(f"the answer could not be saved: {exc}")
                remembered = None
            if remembered is not None:
                info, turn = remembered
                conversation_id, turn_id, named = info.id, turn.id, info.title
        saved_ids = [*saved_ids, turn_id]
        updates = (
            browser,
            conversation_id,
            saved_ids,
            page.history_radio(owner, search_text, conversation_id),
            conversation_id or "",
            named,
            *page.form(owner, conversation_id),
        )
        yield shown, shown_base, "", later, *updates
        if other and other != name:
            base_before = shown_base
            for shown_base, _ in stream_reply(bot, base_before, question, other, retrieval, earlier):  # noqa: B007
                yield shown, shown_base, "", later, *updates

    inputs = [box, chat, base_chat, turns, adapter, use_retrieval, compare, conversation, turn_ids, browser_id, search]
    outputs = [chat, base_chat, box, turns, browser_id, conversation, turn_ids, history, open_id, title]
    outputs += [answer_pick, wrong, correction]
    for trigger in (box.submit, send.click):
        trigger(respond, inputs, outputs, api_name=False)

    def suggest(shown: Messages) -> gr.Dataset:
        """Questions drawn from the indexed documents, while the conversation is empty."""
        if shown:
            return gr.Dataset(visible=False)
        questions = bot.suggested_questions()
        return gr.Dataset(samples=[[question] for question in questions], visible=bool(questions))

    demo.load(suggest, chat, suggestions, api_name=False)
    chat.change(suggest, chat, suggestions, api_name=False, show_progress="hidden")
    suggestions.click(lambda sample: sample[0] if sample else "", suggestions, box, api_name=False).then(
        respond, inputs, outputs, api_name=False
    )

    def start_over(browser: str, search_text: str, request: gr.Request) -> tuple:
        # the question box is left alone: what was typed is asked in the new conversation
        return page.opened(page.who(request, browser), None, search_text)

    for trigger in (new.click, chat.clear):  # the chat's own trash button also starts a new conversation
        trigger(start_over, [browser_id, search], page.page, api_name=False)
    adapter.change(lambda name: describe(bot, name), adapter, about, api_name=False)
    compare.change(lambda other: gr.Chatbot(visible=bool(other)), compare, base_chat, api_name=False)

    wire_history(page, rename, delete)
    wire_feedback(page, save, feedback_note)

    def ask(question: str, adapter: str = BASE_ADAPTER, use_retrieval: bool = True) -> dict:
        """Answer one question with citations (the JSON of ``chatbot ask --json``)."""
        retrieval = use_retrieval is not False  # an API caller may send null for the default
        try:  # a refusal is the caller's error message, not a server traceback
            return bot.ask(question, adapter=adapter or BASE_ADAPTER, use_retrieval=retrieval).to_json()
        except (InputError, UnknownAdapterError) as exc:
            raise gr.Error(str(exc)) from exc

    gr.api(ask, api_name="ask")
    return adapter, compare, browser_id
