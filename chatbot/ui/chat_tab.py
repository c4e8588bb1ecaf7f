"""The Chat tab: streamed answers with linked citations, domain selector, retrieval switch, compare view."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import gradio as gr

from chatbot.answer import Answer
from chatbot.conversation import Turn
from chatbot.ui.render import answer_markdown, sources_markdown, sources_title
from chatbot.vocabulary import BASE_ADAPTER

if TYPE_CHECKING:
    from chatbot.service import Chatbot

Messages = list[dict[str, Any]]


def adapter_choices(bot: Chatbot) -> list[tuple[str, str]]:
    """(label, name) of every ready domain, "base" first."""
    try:
        bot.adapters.refresh()
    except Exception as exc:  # a remote backend that is down must not break the page
        gr.Warning(f"could not refresh the adapters: {exc}")
    return [(f"{d.display_name} ({d.name})", d.name) for d in bot.adapters.list() if d.ready]


def describe(bot: Chatbot, name: str | None) -> str:
    domain = next((d for d in bot.adapters.list() if d.name == (name or BASE_ADAPTER)), None)
    return f"_{domain.description}_" if domain and domain.description else ""


def _label(bot: Chatbot, name: str) -> str:
    domain = next((d for d in bot.adapters.list() if d.name == name), None)
    return domain.display_name if domain and domain.name != BASE_ADAPTER else "Base model"


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
                chat[-1] = {"role": "assistant", "content": answer_markdown(event, _label(bot, event.adapter))}
                if event.used_retrieval:
                    chat.append(
                        {
                            "role": "assistant",
                            "content": sources_markdown(event),
                            "metadata": {"title": sources_title(event), "status": "done"},
                        }
                    )
                yield chat, event
                return
            chat[-1]["content"] += event
            yield chat, None
    except Exception as exc:  # shown to this user only; the server keeps running
        chat[-1] = {"role": "assistant", "content": f"⚠️ {exc}"}
        yield chat, None
    finally:
        cancelled.set()


def build_chat_tab(bot: Chatbot) -> gr.Dropdown:
    """Lay out the tab inside the current Blocks; returns the adapter selector (refreshed on load)."""
    choices = adapter_choices(bot)
    names = {name for _label, name in choices}
    default = bot.settings.default_adapter if bot.settings.default_adapter in names else BASE_ADAPTER

    with gr.Row(equal_height=True):
        adapter = gr.Dropdown(choices=choices, value=default, label="Domain adapter", scale=3, elem_id="adapter")
        use_retrieval = gr.Checkbox(value=True, label="Use the knowledge base", scale=1, elem_id="use-retrieval")
        compare = gr.Checkbox(value=False, label="Compare with base", scale=1, elem_id="compare-toggle")
    about = gr.Markdown(describe(bot, default), elem_id="adapter-about")
    turns = gr.State([])  # this browser session's conversation (Turn objects)
    with gr.Row():
        chat = gr.Chatbot(label="Conversation", height=540, elem_id="chat", scale=1)
        base_chat = gr.Chatbot(label="Base model, same question", height=540, elem_id="compare", visible=False)
    with gr.Row():
        box = gr.Textbox(placeholder="Ask a question…", show_label=False, scale=8, elem_id="question")
        send = gr.Button("Send", variant="primary", scale=1, elem_id="send")
    clear = gr.Button("New conversation", size="sm")

    def respond(
        message: str,
        history: Messages,
        base_history: Messages,
        turns: list[Turn],
        name: str,
        retrieval: bool,
        both: bool,
    ) -> Iterator[tuple]:
        question = message.strip()
        if not question:
            yield history, base_history, message, turns
            return
        shown, shown_base, answer = history, base_history, None
        for shown, answer in stream_reply(bot, history, question, name, retrieval, turns):  # noqa: B007
            yield shown, shown_base, "", turns
        earlier = list(turns)
        if answer is not None:
            turns = [*turns, Turn(question, answer.answer)]
        if both and name != BASE_ADAPTER:
            for shown_base, _ in stream_reply(bot, base_history, question, BASE_ADAPTER, retrieval, earlier):  # noqa: B007
                yield shown, shown_base, "", turns
        yield shown, shown_base, "", turns

    inputs = [box, chat, base_chat, turns, adapter, use_retrieval, compare]
    for trigger in (box.submit, send.click):
        trigger(respond, inputs, [chat, base_chat, box, turns], api_name=False)
    clear.click(lambda: ([], [], "", []), outputs=[chat, base_chat, box, turns], api_name=False)
    adapter.change(lambda name: describe(bot, name), adapter, about, api_name=False)
    compare.change(lambda on: gr.Chatbot(visible=on), compare, base_chat, api_name=False)

    def ask(question: str, adapter: str = BASE_ADAPTER, use_retrieval: bool = True) -> dict:
        """Answer one question with citations (the JSON of ``chatbot ask --json``)."""
        return bot.ask(question, adapter=adapter, use_retrieval=use_retrieval).to_json()

    gr.api(ask, api_name="ask")
    return adapter
