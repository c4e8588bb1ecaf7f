"""How a command finds the running ``chatbot serve`` of its data dir: ``DATA_DIR/server.json``.

The server writes the file once it listens and removes it when it stops. A command trusts it only
when the process is alive and ``/health`` answers with the same random instance id, so a stale
file (a killed server, a reused pid or port) is ignored.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

SERVER_FILE = "server.json"
HEALTH_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class ServerRecord:
    """A running server: its URL for local clients, its process and instance id."""

    url: str
    pid: int
    instance: str


def new_instance_id() -> str:
    return secrets.token_hex(8)


def local_url(host: str, port: int) -> str:
    """The URL a client on this machine uses for a server bound to ``host``."""
    host = host.strip("[]")
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def write_record(data_dir: Path, record: ServerRecord) -> Path:
    """Announce ``record`` in ``data_dir`` (atomically: a reader never sees half a file)."""
    path = data_dir / SERVER_FILE
    partial = path.with_name(f".{SERVER_FILE}.{os.getpid()}")
    partial.write_text(json.dumps(asdict(record)), encoding="utf-8")
    partial.replace(path)
    return path


def remove_record(data_dir: Path, record: ServerRecord) -> None:
    """Remove the announcement if it is still this server's (another may have started since)."""
    path = data_dir / SERVER_FILE
    if read_record(data_dir) == record:
        path.unlink(missing_ok=True)


def read_record(data_dir: Path) -> ServerRecord | None:
    """The announced server, unchecked; None when there is no readable announcement."""
    try:
        data = json.loads((data_dir / SERVER_FILE).read_text(encoding="utf-8"))
        return ServerRecord(str(data["url"]), int(data["pid"]), str(data["instance"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def running_server(data_dir: Path) -> ServerRecord | None:
    """The server serving ``data_dir`` now, checked (its process lives, its ``/health`` names it)."""
    import httpx

    record = read_record(data_dir)
    if record is None or not _alive(record.pid):
        return None
    try:
        health = httpx.get(record.url + "/health", timeout=HEALTH_TIMEOUT_S).json()
    except (httpx.HTTPError, ValueError):
        return None
    return record if isinstance(health, dict) and health.get("instance") == record.instance else None
