"""The HTTP server: the FastAPI app, the OpenAI-compatible routes, file and conversation routes, request limits."""
