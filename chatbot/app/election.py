"""Which of the instances sharing a database syncs the knowledge folder: the holder of one lease.

Every instance keeps trying the lease; the one that holds it renews it and runs the syncs its
folder watcher asks for, the others only serve (they read the same index). When the syncer stops,
it gives the lease up; when it dies, the lease lapses, and the next instance to try it takes it
over and syncs at once, which repairs whatever the dead one left half-done.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from chatbot.database import reason
from chatbot.database.lease import Lease

log = logging.getLogger(__name__)


class SyncerElection:
    """Holds or waits for ``lease``; calls ``on_elected()`` (in its own thread) on becoming the syncer."""

    def __init__(self, lease: Lease, on_elected: Callable[[], object]) -> None:
        self.lease = lease
        self.on_elected = on_elected
        self.is_syncer = False
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"election {lease.name}", daemon=True)

    def start(self) -> SyncerElection:
        self._try()
        self._thread.start()
        return self

    def _try(self) -> None:
        try:
            held = self.lease.acquire()
            self.last_error = None
        except Exception as exc:  # noqa: BLE001 - the database is away: not the syncer until it is back
            held = False
            self.last_error = reason(exc)
        elected, lost = held and not self.is_syncer, self.is_syncer and not held
        self.is_syncer = held  # before the sync below starts: it syncs only while this is true
        if elected:
            log.info("this instance (%s) now syncs the knowledge folder", self.lease.holder_id)
            threading.Thread(target=self._elected, name="sync on election", daemon=True).start()
        elif lost:
            log.warning("this instance lost the sync lease; another instance syncs now")

    def _elected(self) -> None:
        try:
            self.on_elected()
        except Exception:  # the next change or election tries again
            log.exception("the sync on becoming the syncer failed")

    def _run(self) -> None:
        while not self._stop.wait(self.lease.ttl_s / 3):
            self._try()

    def holder(self) -> str | None:
        """The instance that syncs now (None when none holds the lease)."""
        current = self.lease.current()
        return current.holder if current else None

    def stop(self) -> None:
        """Stop trying, and give the lease up so another instance takes it at once."""
        self._stop.set()
        self._thread.join(timeout=5)
        if self.is_syncer:
            try:
                self.lease.release()
            except Exception:  # noqa: BLE001 - the database is away: the lease lapses by itself
                log.warning("could not give the sync lease up; it lapses in %.0f s", self.lease.ttl_s)
        self.is_syncer = False
