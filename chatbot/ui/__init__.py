"""The Gradio page: Chat, Knowledge, Adapters and Feedback tabs."""

from __future__ import annotations

from typing import TYPE_CHECKING

import gradio as gr

if TYPE_CHECKING:
    from chatbot.app.service import Chatbot

TITLE = "hybrid-chatbot"


def build_ui(bot: Chatbot) -> gr.Blocks:
    """The whole page; each browser session has its own conversation state."""
    from chatbot.ui.adapters_tab import build_adapters_tab
    from chatbot.ui.chat_tab import adapter_choices, build_chat_tab
    from chatbot.ui.feedback_tab import build_feedback_tab
    from chatbot.ui.knowledge_tab import build_knowledge_tab

    with gr.Blocks(title=TITLE) as demo:
        gr.Markdown(f"## {TITLE}\nAsk about the documents in the knowledge folder; every answer lists its sources.")
        with gr.Tabs():
            with gr.Tab("Chat", id="chat-tab"):
                adapter, compare, browser_id = build_chat_tab(bot, demo)
            with gr.Tab("Knowledge", id="knowledge-tab"):
                knowledge_load, knowledge_outputs = build_knowledge_tab(bot)
            with gr.Tab("Adapters", id="adapters-tab") as adapters_tab:
                refresh_cards = build_adapters_tab(bot)
            with gr.Tab("Feedback", id="feedback-tab", visible=bot.settings.save_conversations) as feedback_tab:
                refresh_feedback, feedback_inputs, feedback_outputs = build_feedback_tab(bot, browser_id)

        def refresh_adapters() -> tuple[gr.Dropdown, gr.Dropdown]:
            choices = adapter_choices(bot)
            return gr.Dropdown(choices=choices), gr.Dropdown(choices=[("Off", ""), *choices])

        demo.load(refresh_adapters, outputs=[adapter, compare], api_name=False)
        demo.load(knowledge_load, outputs=knowledge_outputs, api_name=False)
        adapters_tab.select(refresh_cards[0], outputs=refresh_cards[1], api_name=False)
        feedback_tab.select(refresh_feedback, feedback_inputs, feedback_outputs, api_name=False)
    return demo
