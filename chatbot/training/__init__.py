"""Train LoRA adapters: chat examples, RAFT example building, the training run, its record."""
