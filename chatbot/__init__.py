"""hybrid-chatbot: a domain LoRA adapter for the voice, retrieval over your files for the facts."""

import os as _os
import warnings as _warnings

# Nothing in this package may reach a model hub or a telemetry endpoint at run time, except to fetch
# a base model the settings name by its hub id (chatbot.models.hub), unless the user set offline mode.
HUB_OFFLINE_BY_USER = _os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
for _key, _value in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "ANONYMIZED_TELEMETRY": "False",
    "GRADIO_ANALYTICS_ENABLED": "False",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    _os.environ.setdefault(_key, _value)

__version__ = "0.1.0"

# PEFT 0.21 still calls an attribute transformers 5 renamed; harmless, but it prints on every load.
_warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
