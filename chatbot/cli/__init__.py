"""The ``chatbot`` command: sync, ask, serve, watch, info, adapters, train, eval, feedback, trash, restore."""

# Importing a command module registers its commands on the app, in the order ``chatbot --help`` lists them.
from chatbot.cli.root import app

# isort: split
from chatbot.cli import chat  # noqa: F401

# isort: split
from chatbot.cli import adapters, feedback, trash  # noqa: F401

__all__ = ["app"]
