"""Domain adapters: folders under ``adapters/`` loaded once onto the one base model.

Each request names its adapter; the engine runs every row of a batch on its own adapter (on
transformers through :mod:`chatbot.adapters.lora`, which owns loading and per-row routing; the
ONNX engine converts and loads adapter files itself). A folder that cannot be loaded is listed
with its error and the others keep working.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chatbot.adapters.check import check_adapter, read_manifest
from chatbot.adapters.lora import PeftLora
from chatbot.engine.generation import Generator
from chatbot.vocabulary import BASE_ADAPTER, GenerationParams, InputError

log = logging.getLogger(__name__)


class UnknownAdapterError(KeyError):
    """The requested adapter does not exist or failed to load."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass
class Domain:
    """An adapter (or "base") as the chain and the UI see it."""

    name: str
    display_name: str
    description: str
    system_prompt: str
    folder: Path | None = None
    scope: dict[str, Any] | None = None
    generation: dict[str, Any] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    mtime: float = 0.0

    @property
    def ready(self) -> bool:
        return self.error is None


def scope_filter(manifest: dict[str, Any]) -> dict[str, Any] | None:
    """The Chroma where-filter of a domain's knowledge scope.

    ``folder`` (a top-level sub-folder of knowledge/, or a list of them) or ``filter`` (a raw
    Chroma metadata filter such as ``{file_type = "pdf"}``).
    """
    scope = manifest.get("knowledge_scope") or {}
    if not isinstance(scope, dict):
        raise ValueError("knowledge_scope must be a table")
    if "filter" in scope:
        if not isinstance(scope["filter"], dict):
            raise ValueError("knowledge_scope.filter must be a table")
        return scope["filter"]
    folders = scope.get("folder")
    if folders is None:
        return None
    folders = [folders] if isinstance(folders, str) else folders
    if not isinstance(folders, list) or not all(isinstance(f, str) and f and "/" not in f for f in folders):
        raise ValueError("knowledge_scope.folder must name top-level folders of the knowledge folder")
    return {"folder": folders[0]} if len(folders) == 1 else {"folder": {"$in": folders}}


def apply_manifest(domain: Domain, manifest: dict[str, Any]) -> None:
    """Fill a domain's display name, description, system prompt, scope and defaults from ``domain.toml``."""
    domain.manifest = manifest
    domain.display_name = str(manifest.get("display_name", domain.name))
    domain.description = str(manifest.get("description", domain.description))
    domain.system_prompt = str(manifest.get("system_prompt", domain.system_prompt))
    domain.scope = scope_filter(manifest)
    domain.generation = generation_defaults(manifest)


def generation_defaults(manifest: dict[str, Any]) -> dict[str, Any]:
    """The ``[generation]`` table of ``domain.toml``, checked: ValueError names the bad key."""
    table = manifest.get("generation", {})
    if not isinstance(table, dict):
        raise ValueError("domain.toml: [generation] must be a table")
    try:
        GenerationParams.merged(GenerationParams(), table)
    except InputError as exc:
        raise ValueError(f"domain.toml [generation]: {exc}") from exc
    return dict(table)


class DomainRegistry:
    """The base domain and the named ones, looked up safely from any thread."""

    def __init__(self, base: Domain) -> None:
        self.base = base
        self._domains: dict[str, Domain] = {}
        self._lock = threading.Lock()

    def list(self) -> list[Domain]:
        """The base domain first, then every adapter with its status."""
        with self._lock:
            return [self.base, *self._domains.values()]

    def find(self, name: str | None) -> Domain | None:
        """The domain called ``name`` ("base" when None) whatever its status, or None (for labels)."""
        if not name or name == BASE_ADAPTER:
            return self.base
        with self._lock:
            return self._domains.get(name)

    def get(self, name: str | None) -> Domain:
        """The ready domain called ``name`` ("base" when None)."""
        domain = self.find(name)
        if domain is None:
            available = ", ".join(d.name for d in self.list() if d.ready)
            raise UnknownAdapterError(f"unknown adapter {name!r}; available: {available}")
        if domain.error:
            raise UnknownAdapterError(f"adapter {name!r} failed to load: {domain.error}")
        return domain


class AdapterRegistry(DomainRegistry):
    """All adapters of one folder, attached to one generator's base model."""

    def __init__(self, folder: Path, generator: Generator, base_system_prompt: str) -> None:
        super().__init__(Domain(BASE_ADAPTER, "Base model", "The base model without an adapter.", base_system_prompt))
        self.folder = folder
        self.generator = generator
        self._lora = PeftLora(generator) if generator.injects_adapters else None

    def refresh(self) -> None:
        """Load new or changed adapter folders and drop removed ones."""
        with self._lock:
            present = {}
            if self.folder.is_dir():
                present = {
                    path.name: path
                    for path in sorted(self.folder.iterdir())
                    if path.is_dir() and not path.name.startswith((".", "_"))
                }
            for name in set(self._domains) - set(present):
                self._unload(name)
            for name, path in present.items():
                mtime = max((p.stat().st_mtime for p in path.iterdir() if p.is_file()), default=0.0)
                current = self._domains.get(name)
                if current is not None and current.mtime == mtime:
                    continue
                if current is not None:
                    self._unload(name)
                self._domains[name] = self._load(name, path, mtime)

    def _load(self, name: str, path: Path, mtime: float) -> Domain:
        domain = Domain(name, name, "", self.base.system_prompt, folder=path, mtime=mtime)
        try:
            if name == BASE_ADAPTER:
                raise ValueError(f"the name {BASE_ADAPTER!r} is reserved for the model without adapter")
            apply_manifest(domain, read_manifest(path))
            problems, warnings = check_adapter(path, self.generator.base.model, self.generator.base.fingerprint)
            if problems:
                raise ValueError("; ".join(problems))
            domain.warnings = warnings
            self._attach(name, path)
        except Exception as exc:  # any failure is this folder's, never the server's
            domain.error = str(exc) or type(exc).__name__
            log.warning("adapter %s refused: %s", path, domain.error)
        return domain

    def _attach(self, name: str, path: Path) -> None:
        if self._lora is None:  # the ONNX engine converts and holds its adapters itself
            self.generator.engine.add_adapter(name, path)
        else:
            self._lora.add(name, path)

    def _unload(self, name: str) -> None:
        domain = self._domains.pop(name, None)
        if domain is None or not domain.ready:
            return
        if self._lora is None:
            self.generator.engine.unload_adapter(name)
        else:
            self._lora.remove(name)
