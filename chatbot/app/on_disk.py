"""What ``chatbot info`` and ``chatbot adapters list`` can say without loading a model.

Everything here comes from the settings, the files and the manifest (SQLite): no torch, no
transformers, no Chroma, so a command answers in about a second. What only a loaded model can
say (the engine, its precision, whether batches are exact) comes from a running server or
``--load``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from chatbot.adapters.domains import base_domain
from chatbot.adapters.folders import adapter_folders, inspect_adapter
from chatbot.app.info import (
    AdapterRow,
    AdapterSummary,
    AppInfo,
    BaseModelInfo,
    EmbeddingInfo,
    KnowledgeCounts,
    adapter_row,
    paths_of,
)
from chatbot.config import Settings
from chatbot.database import database_for
from chatbot.knowledge.manifest import RECIPE_META, Manifest, indexed_counts
from chatbot.models.hub import parse_hub_id, revision_of
from chatbot.models.shapes import BaseShapes, shapes_from_folder
from chatbot.models.sources import (
    display_name,
    model_folder_on_disk,
    resolve_embedding_folder,
    resolve_model_source,
    weights_fingerprint,
)


class NotOnDisk(RuntimeError):
    """What the command needs exists only once the model was loaded (a GGUF not converted yet)."""


@dataclass(frozen=True)
class BaseOnDisk:
    """The base model as its files describe it."""

    name: str
    source: Path
    folder: Path | None  # None: a GGUF file not converted yet

    def shapes(self) -> tuple[BaseShapes, str]:
        """Its layer shapes and weights fingerprint (:class:`NotOnDisk` before the first conversion)."""
        if self.folder is None:
            raise NotOnDisk(f"{self.name} is converted or fetched on the first start; until then the model must load")
        return shapes_from_folder(self.folder), weights_fingerprint(self.folder)


def base_on_disk(settings: Settings) -> BaseOnDisk:
    """The configured base model's name, source and the folder the engines load."""
    folder = model_folder_on_disk(settings.base_model, settings.models_cache_dir.resolve())
    if parse_hub_id(settings.base_model):  # fetched on the first start: until then it is only a name
        source = folder or Path(settings.base_model)
    else:
        source = resolve_model_source(settings.base_model)
    return BaseOnDisk(display_name(settings.base_model, source), source, folder)


def adapter_rows(settings: Settings) -> list[AdapterRow]:
    """``chatbot adapters list``'s rows: "base", then each adapter folder with the verdict the
    loaded model would give (the same check, on the base model's files)."""
    base = base_on_disk(settings)
    shapes, fingerprint = base.shapes()
    domains = [base_domain(settings.system_prompt)]
    for name, path in adapter_folders(settings.adapters_dir).items():
        domains.append(inspect_adapter(name, path, shapes, fingerprint, settings.system_prompt))
    return [adapter_row(domain, base.name) for domain in domains]


def pending_rebuild(settings: Settings, manifest: Manifest) -> str | None:
    """Why the next sync will read every file again, from the recipe the last sync recorded."""
    from chatbot.app.runtime import load_limits_for
    from chatbot.knowledge.recipe import Recipe, changes, make_recipe
    from chatbot.models.sources import embedding_fingerprint

    stored = Recipe.parse(manifest.get_meta(RECIPE_META))
    if stored is None:
        return None
    s = settings
    folder = resolve_embedding_folder(s.embedding_model)
    now = make_recipe(embedding_fingerprint(folder), s.chunk_size, s.chunk_overlap, load_limits_for(s))
    if stored.vectors != now.vectors:
        return "the index's recipe changed: " + changes(stored.vectors, now.vectors)
    if stored.reading != now.reading:
        return "the index's recipe changed: " + changes(stored.reading, now.reading)
    return None


def describe_on_disk(settings: Settings) -> AppInfo:
    """:class:`AppInfo` without a loaded model: the engine fields stay None; adapters are listed
    with their verdicts when the base model's folder exists."""
    s = settings
    base = base_on_disk(s)
    manifest = Manifest(database_for(s.database_url, s.manifest_db), s.collection)
    records = manifest.all().values()
    documents, chunks, errors = indexed_counts(records)
    last = manifest.get_meta("last_sync")
    adapters: list[AdapterSummary] = []
    if base.folder is not None and not s.generation_url:
        adapters = [
            AdapterSummary(row.name, row.description, row.status if row.status == "ready" else f"error: {row.error}")
            for row in adapter_rows(s)
        ]
    return AppInfo(
        base_model=BaseModelInfo(
            setting=s.base_model,
            source=str(base.source),
            name=base.name,
            folder=str(base.folder) if base.folder else None,
            revision=revision_of(base.folder) if base.folder else None,
            remote=s.generation_url,
        ),
        embedding_model=EmbeddingInfo(s.embedding_model, str(resolve_embedding_folder(s.embedding_model))),
        paths=paths_of(s),
        knowledge=KnowledgeCounts(
            documents, chunks, float(last) if last else None, errors, pending_rebuild(s, manifest)
        ),
        adapters=adapters,
    )
