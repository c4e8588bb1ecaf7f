"""A ``base_model`` that names a Hugging Face hub repository ("Qwen/Qwen2.5-1.5B-Instruct").

The repository is fetched once into ``CACHE_DIR/hub`` by ``huggingface_hub`` (resumable: an
interrupted download goes on where it stopped; a progress bar on a terminal) and loaded from
there on every later start without a network call. ``name@revision`` pins a branch, tag or commit;
the commit fetched is recorded in the snapshot's folder name and shown by ``chatbot info``. Where
the hub cannot be reached and the model is not cached, the setting is refused at once, by name.
``HF_ENDPOINT`` points it at another hub (a mirror, or the tests' own on loopback).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from chatbot import HUB_OFFLINE_BY_USER
from chatbot.models.embedded import ModelNotFoundError

_HUB_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(?:@(?P<revision>[\w./-]+))?$")
# what a transformers model folder needs: configs, tokenizer, safetensors weights (never pickles)
FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "*.tiktoken"]


def parse_hub_id(base_model: str) -> tuple[str, str | None] | None:
    """(repository, revision or None) when ``base_model`` is a hub id and no such local path exists."""
    found = _HUB_ID.match(base_model)
    if found is None or Path(base_model).expanduser().exists():
        return None
    return found.group("repo"), found.group("revision")


def cached_snapshot(base_model: str, cache_dir: Path) -> Path | None:
    """The fetched folder of a hub id, without touching the network (None: not fetched yet)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import IncompleteSnapshotError, LocalEntryNotFoundError

    parsed = parse_hub_id(base_model)
    if parsed is None:
        return None
    repo, revision = parsed
    try:
        folder = snapshot_download(
            repo, revision=revision, cache_dir=cache_dir / "hub", allow_patterns=FILES, local_files_only=True
        )
    except (LocalEntryNotFoundError, IncompleteSnapshotError, OSError, ValueError):
        return None  # not fetched, or fetched in part (the next fetch resumes it)
    return Path(folder) if (Path(folder) / "config.json").is_file() else None


def fetch(base_model: str, cache_dir: Path) -> Path:
    """The local folder of hub id ``base_model``: cached, or fetched once now.

    :class:`ModelNotFoundError` naming the setting when the hub cannot be reached or has no such model.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    cached = cached_snapshot(base_model, cache_dir)
    if cached is not None:
        return cached
    parsed = parse_hub_id(base_model)
    if parsed is None:
        raise ModelNotFoundError(f"base_model: {base_model} is neither a local path nor a hub id")
    repo, revision = parsed
    if HUB_OFFLINE_BY_USER:
        raise ModelNotFoundError(
            f"base_model: {base_model!r} is a hub id that is not fetched yet, and HF_HUB_OFFLINE is set: "
            "unset it to fetch the model once, or set base_model to a local model folder or .gguf file."
        )
    print(f"fetching {base_model} from the hub into {cache_dir / 'hub'}, once", file=sys.stderr, flush=True)
    try:
        with _online():
            folder = Path(snapshot_download(repo, revision=revision, cache_dir=cache_dir / "hub", allow_patterns=FILES))
    except (HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled, OSError) as exc:
        raise ModelNotFoundError(
            f"base_model: {base_model!r} is not a local folder or .gguf file, and fetching it from the hub "
            f"failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}). Fetch it on a machine that is "
            "online (the same cache_dir), or set base_model to a local model folder or .gguf file."
        ) from exc
    if not (folder / "config.json").is_file():
        raise ModelNotFoundError(f"base_model: the hub repository {repo} has no config.json (not a transformers model)")
    return folder


@contextmanager
def _online() -> Iterator[None]:
    """The hub client online for this one fetch (the package keeps it offline otherwise)."""
    from huggingface_hub import constants

    before, constants.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE, False
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def revision_of(folder: Path) -> str | None:
    """The commit of a fetched snapshot folder (``.../snapshots/<commit>``), else None."""
    return folder.name if folder.parent.name == "snapshots" else None
