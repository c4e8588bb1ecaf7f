"""Domain adapters: folders under ``adapters/`` loaded once onto the one base model.

Each request names its adapter; the engine runs every row of a batch on its own adapter (on
transformers through :mod:`chatbot.adapters.lora`, which owns loading and per-row routing; the
ONNX engine converts and loads adapter files itself). A folder that cannot be loaded is listed
with its error and the others keep working.
"""

from __future__ import annotations

import logging
from pathlib import Path

from chatbot.adapters.domains import Domain, DomainRegistry, base_domain
from chatbot.adapters.folders import adapter_folders, folder_mtime, inspect_adapter
from chatbot.adapters.lora import PeftLora
from chatbot.engine.generation import Generator

log = logging.getLogger(__name__)


class AdapterRegistry(DomainRegistry):
    """All adapters of one folder, attached to one generator's base model."""

    def __init__(self, folder: Path, generator: Generator, base_system_prompt: str) -> None:
        super().__init__(base_domain(base_system_prompt))
        self.folder = folder
        self.generator = generator
        self._lora = PeftLora(generator) if generator.injects_adapters else None
        self._unnameable: set[str] = set()  # folders skipped for their name, logged once each

    def refresh(self) -> None:
        """Load new or changed adapter folders and drop removed ones."""
        with self._lock:
            present = adapter_folders(self.folder, self._skip_unnameable)
            for name in set(self._domains) - set(present):
                self._unload(name)
            for name, path in present.items():
                mtime = folder_mtime(path)
                current = self._domains.get(name)
                if current is not None and current.mtime == mtime:
                    continue
                if current is not None:
                    self._unload(name)
                self._domains[name] = self._load(name, path, mtime)

    def _skip_unnameable(self, name: str) -> None:
        """Warn once per folder whose name cannot be an adapter's (the registry refreshes before every request)."""
        if name not in self._unnameable:
            self._unnameable.add(name)
            log.warning("adapter folder %r skipped: its name cannot be an adapter's", name)

    def _load(self, name: str, path: Path, mtime: float) -> Domain:
        base = self.generator.base
        domain = inspect_adapter(name, path, base.shapes, base.fingerprint, self.base.system_prompt, mtime)
        if domain.ready:
            try:
                self._attach(name, path)
            except Exception as exc:  # any failure is this folder's, never the server's
                domain.error = str(exc) or type(exc).__name__
        if domain.error:
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
