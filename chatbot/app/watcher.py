"""Watch a folder (knowledge/ or adapters/) and act once things are quiet (watchdog, debounced).

Events only mark the folder dirty. A worker waits until no event arrived for ``debounce_s``
and the touched files stopped growing (a file still being copied is not indexed half-way),
then runs one sync for the whole burst: dropping 200 files costs one sync, not 200.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from chatbot.knowledge.scan import is_ignored_name

log = logging.getLogger(__name__)


@dataclass
class WatcherStatus:
    """What the watcher is doing, for ``chatbot watch`` and the UI."""

    running: bool = False
    state: str = "stopped"  # stopped, idle, waiting (a burst is settling), syncing
    syncs: int = 0
    last_sync_at: float | None = None
    last_error: str | None = None


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: FolderWatcher) -> None:
        self.watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        paths = [event.src_path, getattr(event, "dest_path", "")]
        touched = [Path(str(p)) for p in paths if p]
        if all(any(is_ignored_name(part) for part in p.parts[-1:]) for p in touched):
            return
        self.watcher.touch(touched)


class FolderWatcher:
    """Calls ``on_change()`` after each settled burst of changes under ``root``."""

    def __init__(
        self, root: Path, on_change: Callable[[], object], debounce_s: float = 1.0, settle_s: float = 0.3
    ) -> None:
        self.root = root
        self.on_change = on_change
        self.debounce_s = debounce_s
        self.settle_s = settle_s
        self.status = WatcherStatus()
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._last_event = 0.0
        self._touched: set[Path] = set()
        self._observer = Observer()
        self._worker = threading.Thread(target=self._run, name=f"watch {root.name}", daemon=True)

    def start(self) -> FolderWatcher:
        self.root.mkdir(parents=True, exist_ok=True)
        self._observer.schedule(_Handler(self), str(self.root), recursive=True)
        self._observer.start()
        self._worker.start()
        self.status.running, self.status.state = True, "idle"
        return self

    def stop(self) -> None:
        self._stop.set()
        self._dirty.set()
        self._observer.stop()
        self._observer.join(timeout=5)
        self._worker.join(timeout=30)
        self.status.running, self.status.state = False, "stopped"

    def touch(self, paths: list[Path]) -> None:
        """Record a change (called by watchdog's thread)."""
        with self._lock:
            self._last_event = time.monotonic()
            self._touched.update(paths)
        self.status.state = "waiting" if self.status.state != "syncing" else "syncing"
        self._dirty.set()

    def _sizes(self, paths: set[Path]) -> dict[Path, tuple[int, int]]:
        sizes = {}
        for path in paths:
            try:
                stat = path.stat()
                sizes[path] = (stat.st_size, stat.st_mtime_ns)
            except OSError:
                sizes[path] = (-1, -1)
        return sizes

    def _settled(self) -> bool:
        """No event for ``debounce_s`` and no touched file changed size during ``settle_s``."""
        with self._lock:
            quiet = time.monotonic() - self._last_event
            touched = set(self._touched)
        if quiet < self.debounce_s:
            self._stop.wait(self.debounce_s - quiet)
            return False
        before = self._sizes(touched)
        self._stop.wait(self.settle_s)
        return before == self._sizes(touched)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._dirty.wait()
            if self._stop.is_set():
                return
            if not self._settled():
                continue
            with self._lock:
                self._dirty.clear()
                self._touched.clear()
            self.status.state = "syncing"
            try:
                self.on_change()
                self.status.last_error = None
            except Exception as exc:  # the watcher must outlive a failed sync
                log.exception("sync after a change failed")
                self.status.last_error = f"{type(exc).__name__}: {exc}"
            self.status.syncs += 1
            self.status.last_sync_at = time.time()
            self.status.state = "waiting" if self._dirty.is_set() else "idle"
