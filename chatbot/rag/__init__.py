"""The retrieval chain: retrieval, prompts, the chain itself, citations and their check, tidy answers, conversations."""
