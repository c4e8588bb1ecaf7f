"""Domains as the chain, the UI and the API see them: an adapter's name, voice, knowledge scope
and generation defaults from its ``domain.toml``, and a thread-safe registry of them. Torch-free:
the remote backend lists its server's adapters with these too."""

from __future__ import annotations

import threading
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chatbot.vocabulary import BASE_ADAPTER, AdapterId, GenerationParams, InputError

MANIFEST = "domain.toml"


def read_manifest(folder: Path) -> dict:
    """Parse ``domain.toml`` (missing means empty); ValueError with the reason."""
    path = folder / MANIFEST
    if not path.is_file():
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{MANIFEST} is malformed: {exc}") from exc


class UnknownAdapterError(KeyError):
    """The requested adapter does not exist or failed to load."""

    def __str__(self) -> str:
        return str(self.args[0])


FIT_FILE = "answerability.json"  # an adapter's own answerability fit, written by `chatbot calibrate --out`


@dataclass
class Domain:
    """An adapter (or "base") as the chain and the UI see it."""

    name: AdapterId
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

    def __post_init__(self) -> None:
        self.name = AdapterId(self.name)

    @property
    def ready(self) -> bool:
        return self.error is None

    @property
    def answerability_fit(self) -> Path | None:
        """The adapter's own answerability fit (``answerability.json`` in its folder), if it has one."""
        path = self.folder / FIT_FILE if self.folder is not None else None
        return path if path is not None and path.is_file() else None


def base_domain(system_prompt: str) -> Domain:
    """The "base" entry: the model without an adapter, with the app's system prompt."""
    return Domain(BASE_ADAPTER, "Base model", "The base model without an adapter.", system_prompt)


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
