"""Files are read in a worker process with a memory and a time limit, so a hostile file costs the worker.

A parser that a crafted file drives into gigabytes (a JSON of millions of tiny objects, a
pathological PDF) grew the server before: its heap stayed large after the file was refused.
Here the loaders run in one long-lived worker (``spawn``ed, so it shares nothing with the
server's threads and models) whose address space is capped with ``RLIMIT_AS``. A file that needs
more is refused by name; a worker that dies or runs past the time limit is replaced, and the
next file is read by a fresh one. The worker is shared by every sync of the process.
"""

from __future__ import annotations

import multiprocessing
import resource
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from chatbot.knowledge.loaders import LoadError, LoadLimits, Page, load_file

STARTUP_S = 120.0  # a new worker must be ready within this (a loaded machine starts Python slowly)


def too_much(memory_mb: int) -> str:
    return f"reading it needs more than {memory_mb} MB of memory (setting load_memory_mb)"


def _cap_memory(limit_bytes: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))


def _warm() -> None:
    import chatbot.knowledge.loaders  # noqa: F401 - imported once, before the first file's clock starts


def _read(path: str, limits: LoadLimits, memory_mb: int) -> list[Page]:
    try:
        return load_file(Path(path), limits)
    except LoadError as exc:
        if isinstance(exc.__cause__, MemoryError):
            raise LoadError(too_much(memory_mb)) from None
        raise


class IsolatedReader:
    """``read(path, limits)``: :func:`load_file` in the worker, within ``memory_mb`` and ``timeout_s``."""

    def __init__(self, memory_mb: int, timeout_s: float) -> None:
        self.memory_mb = memory_mb
        self.timeout_s = timeout_s
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()  # one file at a time, like the sync that calls it
        self.restarts = 0

    def _worker(self) -> ProcessPoolExecutor:
        """The running worker; a new one is started and waited for here, so its start-up (imports,
        about a second) never counts against a file's time limit."""
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_cap_memory,
                initargs=(self.memory_mb * 2**20,),
            )
            self._pool.submit(_warm).result(timeout=STARTUP_S)
        return self._pool

    def _replace(self) -> None:
        pool, self._pool = self._pool, None
        self.restarts += 1
        if pool is None:
            return
        for process in list(getattr(pool, "_processes", {}).values()):  # a stuck parser cannot be cancelled
            process.kill()
        pool.shutdown(wait=True, cancel_futures=True)

    def read(self, path: Path, limits: LoadLimits) -> list[Page]:
        """The file's pages; raises :class:`LoadError` naming the limit it broke."""
        with self._lock:
            try:
                future = self._worker().submit(_read, str(path), limits, self.memory_mb)
                return future.result(timeout=self.timeout_s)
            except FutureTimeout:
                self._replace()
                raise LoadError(f"reading it took longer than {self.timeout_s:g} s (setting load_timeout_s)") from None
            except BrokenProcessPool:
                self._replace()
                raise LoadError(
                    f"the reader process died on it (memory over {self.memory_mb} MB, or a parser crash)"
                ) from None
            except LoadError:
                raise
            except MemoryError:  # outside the loader (handing the pages back)
                raise LoadError(
                    f"reading it needs more than {self.memory_mb} MB of memory (setting load_memory_mb)"
                ) from None
            except Exception as exc:  # the worker's failure is this file's, never the sync's
                raise LoadError(f"{type(exc).__name__}: {exc}") from None

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
                self._pool = None


_shared: dict[tuple[int, float], IsolatedReader] = {}
_shared_lock = threading.Lock()


def isolated_reader(memory_mb: int, timeout_s: float) -> IsolatedReader:
    """The process's reader for these limits (one worker process, started on the first file)."""
    with _shared_lock:
        key = (memory_mb, timeout_s)
        if key not in _shared:
            _shared[key] = IsolatedReader(memory_mb, timeout_s)
        return _shared[key]
