"""LoRA adapters on disk: the registry of domains (load, refresh, refuse) and the check of an adapter folder."""
