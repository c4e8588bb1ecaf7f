"""Typed descriptions of the running app, for ``chatbot info``, ``chatbot adapters list``, the UI and the API."""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from chatbot.adapters.check import CONFIG, WEIGHTS
from chatbot.adapters.domains import Domain

if TYPE_CHECKING:
    from chatbot.app.service import Chatbot
    from chatbot.config import Settings


@dataclass(frozen=True)
class AdapterRow:
    """One adapter folder (or the base model) as listed to a person."""

    name: str
    display_name: str
    description: str
    status: Literal["ready", "refused"]
    error: str | None
    warnings: list[str]
    base_model: str | None  # what it was trained on (the loaded model for "base")
    rank: int | None
    size_bytes: int
    folder: str | None
    metrics: dict[str, Any]
    answerability_fit: str | None = None  # its own answerability fit file (None: it uses the app's)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def adapter_row(domain: Domain, base_model_name: str) -> AdapterRow:
    """The row of ``domain``: its manifest's training facts, its weights' size and LoRA rank."""
    base_model: str | None = base_model_name if domain.folder is None else None
    rank, size = None, 0
    if domain.folder is not None:
        trained_on = domain.manifest.get("base_model", {})
        base_model = trained_on.get("name") if isinstance(trained_on, dict) else str(trained_on)
        weights = domain.folder / WEIGHTS
        size = weights.stat().st_size if weights.is_file() else 0
        with contextlib.suppress(OSError, ValueError, AttributeError):
            rank = json.loads((domain.folder / CONFIG).read_text()).get("r")
    return AdapterRow(
        name=domain.name,
        display_name=domain.display_name,
        description=domain.description,
        status="ready" if domain.ready else "refused",
        error=domain.error,
        warnings=list(domain.warnings),
        base_model=base_model,
        rank=rank,
        size_bytes=size,
        folder=str(domain.folder) if domain.folder else None,
        metrics=dict(domain.manifest.get("training", {})),
        answerability_fit=str(fit) if (fit := domain.answerability_fit) else None,
    )


@dataclass(frozen=True)
class BaseModelInfo:
    """The chat model: the setting, where it comes from, and (once loaded) how it runs."""

    setting: str
    source: str
    name: str | None = None
    engine: Literal["onnx", "torch", "remote"] | None = None  # None: not loaded
    onnx_model: str | None = None
    folder: str | None = None
    device: str | None = None
    dtype: str | None = None
    quantize: str | None = None
    prepacked: bool | None = None
    precision: str | None = None  # what the engine computes in: the ONNX model's weights, or the torch dtype
    exact_batches: bool | None = None  # a request's tokens never depend on the requests decoded beside it
    remote: str | None = None  # the generation server's URL
    revision: str | None = None  # the hub commit of a base model fetched by its hub id


@dataclass(frozen=True)
class EmbeddingInfo:
    setting: str
    folder: str


@dataclass(frozen=True)
class KnowledgeCounts:
    documents: int
    chunks: int
    last_sync: float | None
    errors: dict[str, str]
    pending: str | None = None  # why the next sync will read every file again (the settings changed)


@dataclass(frozen=True)
class AdapterSummary:
    name: str
    description: str
    status: str  # "ready" or "error: ..."


@dataclass(frozen=True)
class AppInfo:
    """Models, paths and counts, for ``chatbot info``."""

    base_model: BaseModelInfo
    embedding_model: EmbeddingInfo
    paths: dict[str, str]
    knowledge: KnowledgeCounts
    adapters: list[AdapterSummary] = field(default_factory=list)  # empty unless the model was loaded

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def paths_of(settings: Settings) -> dict[str, str]:
    """The folders ``chatbot info`` prints, resolved."""
    s = settings
    return {
        "knowledge_dir": str(s.knowledge_dir.resolve()),
        "adapters_dir": str(s.adapters_dir.resolve()),
        "data_dir": str(s.data_dir.resolve()),
    }


def describe(bot: Chatbot, load_model: bool = True) -> AppInfo:
    """The :class:`AppInfo` of ``bot``; ``load_model=False`` leaves the chat model unloaded (no adapters then)."""
    from chatbot.models.base import resolve_model_source
    from chatbot.models.embeddings import resolve_embedding_folder
    from chatbot.models.hub import revision_of

    s = bot.settings
    status = bot.status()
    cache = s.models_cache_dir.resolve()
    base = BaseModelInfo(setting=s.base_model, source=str(resolve_model_source(s.base_model, cache)))
    adapters: list[AdapterSummary] = []
    if load_model and bot.remote:
        base = replace(base, engine="remote", remote=s.generation_url, name=s.generation_base_model)
        adapters = [AdapterSummary(d.name, d.description, "ready") for d in bot.adapters.list()]
    elif load_model:
        from chatbot.models.packed import PackedLinear

        loaded = bot.generator.base
        onnx_dir = getattr(bot.generator.engine, "model_dir", None)
        base = replace(
            base,
            engine="onnx" if onnx_dir else "torch",
            onnx_model=str(onnx_dir) if onnx_dir else None,
            name=loaded.name,
            folder=str(loaded.folder),
            revision=revision_of(loaded.folder),
            device=str(loaded.device),
            dtype=str(loaded.dtype).removeprefix("torch."),
            quantize=s.quantize,
            prepacked=any(isinstance(m, PackedLinear) for m in loaded.model.modules()),
            precision=s.onnx_precision if onnx_dir else str(loaded.dtype).removeprefix("torch."),
            exact_batches=bot.generator.exact_batches,
        )
        adapters = [
            AdapterSummary(d.name, d.description, "ready" if d.ready else f"error: {d.error}")
            for d in bot.adapters.list()
        ]
    return AppInfo(
        base_model=base,
        embedding_model=EmbeddingInfo(s.embedding_model, str(resolve_embedding_folder(s.embedding_model))),
        paths=paths_of(s),
        knowledge=KnowledgeCounts(
            status.documents, status.chunks, status.last_sync, status.errors, bot.knowledge.pending()
        ),
        adapters=adapters,
    )
