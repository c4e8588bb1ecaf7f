"""``python -m chatbot.cli``."""

from chatbot.cli import app

app()
