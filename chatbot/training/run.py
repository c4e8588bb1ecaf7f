"""``chatbot train``: gather examples (a chat JSONL or RAFT over a knowledge base), train, save."""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chatbot.config import Settings, load_settings
from chatbot.training.examples import Messages, read_chat_jsonl, write_chat_jsonl
from chatbot.training.trainer import TrainConfig, TrainResult
from chatbot.vocabulary import BASE_ADAPTER

log = logging.getLogger(__name__)

_DOMAIN_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def check_domain_name(name: str) -> str:
    """Adapter names become folder names and API model ids: lowercase letters, digits, - and _."""
    if not _DOMAIN_NAME.match(name) or name == BASE_ADAPTER:
        raise ValueError(f"invalid domain name {name!r}: use a-z, 0-9, - and _ (and not {BASE_ADAPTER!r})")
    return name


@dataclass
class TrainRequest:
    """What to train; exactly one of ``data`` and ``raft`` is set."""

    domain: str
    data: Path | None = None
    raft: Path | None = None
    knowledge: Path | None = None  # the knowledge folder RAFT retrieves from (default: the app's)
    display_name: str = ""
    description: str = ""
    system_prompt: str = ""
    scope_folder: str | None = None
    distractor_only_share: float = 0.2
    limit: int | None = None


def _knowledge_settings(settings: Settings, knowledge: Path | None) -> Settings:
    """Settings whose index covers ``knowledge``; another folder gets its own index beside the app's."""
    if knowledge is None or knowledge.resolve() == settings.knowledge_dir.resolve():
        return settings
    key = hashlib.sha256(str(knowledge.resolve()).encode()).hexdigest()[:10]
    values = settings.model_dump()
    values.update(
        knowledge_dir=knowledge,
        data_dir=settings.data_dir / "training-kb" / f"{knowledge.name}-{key}",
        cache_dir=settings.models_cache_dir,
    )
    return load_settings(**values)


def raft_examples(settings: Settings, request: TrainRequest) -> tuple[list[Messages], dict[str, Any]]:
    """Sync the knowledge folder, then build RAFT examples for the request's questions."""
    from chatbot.qa import read_qa
    from chatbot.service import Chatbot
    from chatbot.training.raft import build_raft_examples

    assert request.raft is not None
    bot = Chatbot(_knowledge_settings(settings, request.knowledge))
    report = bot.sync(show_progress=True)
    if report.errors:
        log.warning("knowledge files not indexed: %s", report.errors)
    items = read_qa(request.raft)[: request.limit]
    files = [record.path for record in bot.status().files if record.indexed_at]
    examples, built = build_raft_examples(
        bot.store,
        items,
        files,
        request.system_prompt,
        top_k=settings.top_k,
        distractor_only_share=request.distractor_only_share,
        seed=0,
    )
    if not examples:
        raise ValueError(f"no RAFT example could be built from {request.raft}: {built.skipped}")
    return examples, {
        "recipe": "raft",
        "source": f"{request.raft.name} over {bot.settings.knowledge_dir}",
        "questions": len(items),
        "examples": built.examples,
        "with_gold": built.with_gold,
        "distractors_only": built.distractors_only,
        "skipped_questions": len(built.skipped or {}),
        "top_k": settings.top_k,
    }


def train_domain(settings: Settings, request: TrainRequest, config: TrainConfig) -> tuple[Path, TrainResult]:
    """Build the examples, train on the configured base model, write ``adapters/<domain>/``."""
    from chatbot.models.base import load_base_model
    from chatbot.training.record import write_adapter
    from chatbot.training.trainer import train_adapter

    check_domain_name(request.domain)
    if (request.data is None) == (request.raft is None):
        raise ValueError("give exactly one of --data (chat JSONL) and --raft (question file)")
    if request.raft is not None:
        request.system_prompt = request.system_prompt or settings.system_prompt
        examples, data = raft_examples(settings, request)
    else:
        assert request.data is not None
        examples = read_chat_jsonl(request.data)[: request.limit]
        data = {"recipe": "chat", "source": request.data.name, "examples": len(examples)}
    system_prompt = request.system_prompt or next(
        (m["content"] for m in examples[0] if m["role"] == "system"), settings.system_prompt
    )
    if request.raft is not None:  # keep what the model saw, outside the adapter folder
        write_chat_jsonl(settings.data_dir / "training" / f"{request.domain}-examples.jsonl", examples)
    base = load_base_model(settings.base_model, settings.models_cache_dir, settings.device, "float32")
    result = train_adapter(base, examples, config)
    folder = write_adapter(
        settings.adapters_dir / request.domain,
        result,
        base,
        display_name=request.display_name or request.domain.replace("-", " ").title(),
        description=request.description,
        system_prompt=system_prompt,
        config=config,
        data=data,
        knowledge_scope={"folder": request.scope_folder} if request.scope_folder else None,
    )
    return folder, result
