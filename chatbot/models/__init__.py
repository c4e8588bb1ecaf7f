"""Loading the base language model and the embedding model, offline."""
