"""The application facade: `Chatbot` wires knowledge, engine, adapters and chain for the CLI, UI and server."""
