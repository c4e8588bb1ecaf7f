"""Files in the knowledge folder -> chunks -> a persistent Chroma collection."""
