"""The examples a stopped training run built, kept beside its checkpoint so a resume trains on them.

RAFT, grounding and feedback examples are built by retrieval, and two builds of the same inputs
can differ in a retrieved block (two of 1,600 grounding examples did on a real run), which made
the trainer's fingerprint of the examples miss and a resumed run start over. So the first run
saves what it built, keyed by the command's inputs (its arguments, the bytes of its input files,
the knowledge folder's listing and the settings that shape retrieval), and a run of the same
command trains on the saved examples instead of building them again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chatbot.config import Settings
from chatbot.digest import file_sha256
from chatbot.files import replacing
from chatbot.training.examples import Messages, validate

log = logging.getLogger(__name__)

# Settings that serve requests and cannot change what an example holds; every other one is keyed.
_SERVING_ONLY = {
    "host", "port", "api_key", "api_keys", "ui_auth", "threads", "concurrency_limit", "queue_size",
    "shutdown_timeout_s", "save_conversations", "max_upload_mb", "max_request_kb", "generation_api_key",
}  # fmt: skip


@dataclass
class BuiltExamples:
    """What training is given: the examples, the recipe summary for training.json, the system prompt."""

    examples: list[Messages]
    data: dict[str, Any]
    system_prompt: str


def inputs_key(settings: Settings, arguments: dict[str, Any], files: list[Path], folders: list[Path]) -> str:
    """sha256 over a command's arguments, its input files' bytes, its folders' listings and settings."""
    values = {k: v for k, v in settings.model_dump(mode="json").items() if k not in _SERVING_ONLY}
    digest = hashlib.sha256(json.dumps([arguments, values], sort_keys=True, default=str).encode())
    for path in files:
        digest.update(f"{path}:{file_sha256(path) if path.is_file() else '-'}".encode())
    for folder in folders:
        digest.update(_listing(folder).encode())
    return digest.hexdigest()


def _listing(folder: Path) -> str:
    """Every file under ``folder`` with its size and modification time (an edited file changes it)."""
    if not folder.is_dir():
        return f"{folder}:-"
    rows = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        stat = path.stat()
        rows.append(f"{path.relative_to(folder)}:{stat.st_size}:{stat.st_mtime_ns}")
    return f"{folder}:" + "\n".join(rows)


def request_arguments(request: Any) -> dict[str, Any]:
    """A dataclass request's fields as JSON-able values (paths as resolved strings)."""
    return {k: str(Path(v).resolve()) if isinstance(v, Path) else v for k, v in dataclasses.asdict(request).items()}


def load_built(path: Path, key: str) -> BuiltExamples | None:
    """The examples saved at ``path`` for the inputs ``key``; None when absent, torn or for other inputs."""
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved.get("inputs") != key:
            log.warning("not reusing the examples in %s: built for other inputs or settings", path)
            return None
        examples = [validate(messages, f"{path}[{i}]") for i, messages in enumerate(saved["examples"])]
        return BuiltExamples(examples, dict(saved["data"]), str(saved["system_prompt"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("not reusing the examples in %s: %s", path, exc)
        return None


def save_built(path: Path, key: str, built: BuiltExamples) -> None:
    """Write ``built`` for the inputs ``key``; a crash mid-write leaves no half file to be read."""
    payload = {"inputs": key, **dataclasses.asdict(built)}
    with replacing(path) as partial:
        partial.write_text(json.dumps(payload, ensure_ascii=False), encoding="utf-8")
