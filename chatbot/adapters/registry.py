"""Domain adapters: folders under ``adapters/`` loaded once onto the one base model.

Each request names its adapter; the engine runs every row of a batch on its own adapter (on
transformers through :mod:`chatbot.adapters.lora`, which owns loading and per-row routing; the
ONNX engine converts and loads adapter files itself). A folder that cannot be loaded is listed
with its error and the others keep working.
"""

from __future__ import annotations

import logging
from pathlib import Path

from chatbot.adapters.check import check_adapter
from chatbot.adapters.domains import Domain, DomainRegistry, apply_manifest, read_manifest
from chatbot.adapters.lora import PeftLora
from chatbot.engine.generation import Generator
from chatbot.vocabulary import BASE_ADAPTER, AdapterId

log = logging.getLogger(__name__)


class AdapterRegistry(DomainRegistry):
    """All adapters of one folder, attached to one generator's base model."""

    def __init__(self, folder: Path, generator: Generator, base_system_prompt: str) -> None:
        super().__init__(Domain(BASE_ADAPTER, "Base model", "The base model without an adapter.", base_system_prompt))
        self.folder = folder
        self.generator = generator
        self._lora = PeftLora(generator) if generator.injects_adapters else None
        self._unnameable: set[str] = set()  # folders skipped for their name, logged once each

    def refresh(self) -> None:
        """Load new or changed adapter folders and drop removed ones."""
        with self._lock:
            present = {}
            if self.folder.is_dir():
                present = {
                    path.name: path
                    for path in sorted(self.folder.iterdir())
                    if path.is_dir() and not path.name.startswith((".", "_")) and self._nameable(path.name)
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

    def _nameable(self, name: str) -> bool:
        """Whether a folder's name can be an adapter's (:class:`AdapterId`); others are skipped,
        with one warning per folder (the registry refreshes before every request)."""
        if AdapterId.valid(name):
            return True
        if name not in self._unnameable:
            self._unnameable.add(name)
            log.warning("adapter folder %r skipped: its name cannot be an adapter's", name)
        return False

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
