"""``python -m chatbot.cli``."""

from chatbot.cli import app

if __name__ == "__main__":  # not when a spawned worker process (the file reader) imports this module
    app()
