"""Chat models behind the chain: the local engine as a LangChain chat model, and a remote OpenAI-compatible server."""
