"""The Gradio chat page: streamed answers with the cited sources under each one."""

from __future__ import annotations

import html
from collections.abc import Iterator
from typing import TYPE_CHECKING

import gradio as gr

from chatbot.answer import Answer, SourceRef
from chatbot.generation import BASE_ADAPTER

if TYPE_CHECKING:
    from chatbot.service import Chatbot

TITLE = "hybrid-chatbot"


def _source_line(source: SourceRef) -> str:
    page = f", page {source.page}" if source.page is not None else ""
    snippet = html.escape(source.snippet)
    return f"**[{source.n}]** `{source.source}`{page} · score {source.score:.2f}\n\n> {snippet}"


def sources_markdown(answer: Answer) -> str:
    """The sources panel of one answer: cited blocks first, other retrieved blocks after."""
    if not answer.used_retrieval:
        return "_Retrieval was off for this answer._"
    if not answer.retrieved:
        return "_Nothing in the knowledge base was relevant._"
    cited = {source.n for source in answer.sources}
    parts = [_source_line(source) for source in answer.sources]
    others = [source for source in answer.retrieved if source.n not in cited]
    if others:
        parts.append("<details><summary>Also retrieved, not cited</summary>\n\n")
        parts.extend(_source_line(source) for source in others)
        parts.append("</details>")
    return "\n\n".join(parts) or "_No source was cited._"


def build_ui(bot: Chatbot) -> gr.Blocks:
    """The chat page. History lives in each browser session's own ``Chatbot`` state."""

    def adapter_choices() -> list[tuple[str, str]]:
        bot.adapters.refresh()
        return [(f"{d.display_name} ({d.name})", d.name) for d in bot.adapters.list() if d.ready]

    choices = adapter_choices()
    default = bot.settings.default_adapter if bot.settings.default_adapter in {c[1] for c in choices} else BASE_ADAPTER

    def respond(message: str, history: list[dict], adapter: str, use_retrieval: bool) -> Iterator[tuple]:
        history = [*history, {"role": "user", "content": message}]
        if not message.strip():
            yield history[:-1], ""
            return
        history.append({"role": "assistant", "content": ""})
        try:
            for event in bot.stream(message, adapter=adapter, use_retrieval=use_retrieval):
                if isinstance(event, Answer):
                    label = "" if event.adapter == BASE_ADAPTER else f"*{event.adapter}* · "
                    history[-1] = {"role": "assistant", "content": event.answer}
                    history.append(
                        {
                            "role": "assistant",
                            "content": sources_markdown(event),
                            "metadata": {"title": f"{label}Sources ({len(event.sources)} cited)"},
                        }
                    )
                else:
                    history[-1]["content"] += event
                yield history, ""
        except Exception as exc:  # shown to this user only; the server keeps running
            history[-1] = {"role": "assistant", "content": f"⚠️ {exc}"}
            yield history, ""

    with gr.Blocks(title=TITLE) as demo:
        gr.Markdown(f"# {TITLE}\nAsk about the documents in the knowledge folder; every answer lists its sources.")
        with gr.Row():
            adapter = gr.Dropdown(choices=choices, value=default, label="Domain adapter", scale=3)
            use_retrieval = gr.Checkbox(value=True, label="Use the knowledge base", scale=1)
        chat = gr.Chatbot(label="Conversation", height=520, elem_id="chat")
        with gr.Row():
            box = gr.Textbox(placeholder="Ask a question…", show_label=False, scale=8, elem_id="question")
            send = gr.Button("Send", variant="primary", scale=1, elem_id="send")
        gr.Button("Clear").click(lambda: ([], ""), outputs=[chat, box])
        for trigger in (box.submit, send.click):
            trigger(respond, [box, chat, adapter, use_retrieval], [chat, box], api_name=False)
        demo.load(lambda: gr.Dropdown(choices=adapter_choices()), outputs=adapter, api_name=False)
    return demo
