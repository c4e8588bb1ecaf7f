"""A named lease in the database: one holder at a time, lost by a holder that stops renewing it.

Instances that share a database elect their knowledge syncer with one (``syncer:COLLECTION``) and
take turns running a sync with another (``sync:COLLECTION``). A holder killed with ``kill -9``
renews nothing, so its lease lapses after ``ttl_s`` and another instance takes it. Times are the
instances' clocks (keep them in sync, e.g. NTP; a skew shortens or lengthens a lapse by as much).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import Column, Engine, Float, MetaData, String, Table, case, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

_leases = Table(  # made by the manifest branch's migration
    "leases",
    MetaData(),
    Column("name", String(200), primary_key=True),
    Column("holder", String(200), nullable=False),
    Column("acquired_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
)


class LeaseLost(RuntimeError):
    """This holder's lease lapsed (it did not renew in time) and another may hold it now."""


@dataclass(frozen=True)
class LeaseHolder:
    holder: str
    acquired_at: float
    expires_at: float


class Lease:
    """The lease ``name`` in ``engine``'s ``leases`` table, taken as ``holder``."""

    def __init__(self, engine: Engine, name: str, holder: str, ttl_s: float = 10.0) -> None:
        self.engine = engine
        self.name = name
        self.holder_id = holder
        self.ttl_s = ttl_s

    def acquire(self) -> bool:
        """Take the lease, or renew it when this holder has it; False while another holds it."""
        now = time.time()
        mine = _leases.c.holder == self.holder_id
        with self.engine.begin() as db:
            taken = db.execute(
                update(_leases)
                .where(_leases.c.name == self.name, or_(mine, _leases.c.expires_at < now))
                .values(
                    holder=self.holder_id,
                    acquired_at=case((mine, _leases.c.acquired_at), else_=now),
                    expires_at=now + self.ttl_s,
                )
            ).rowcount
        if taken:
            return True
        try:
            with self.engine.begin() as db:
                db.execute(
                    insert(_leases).values(
                        name=self.name, holder=self.holder_id, acquired_at=now, expires_at=now + self.ttl_s
                    )
                )
            return True
        except IntegrityError:  # another holder has the row
            return False

    def release(self) -> None:
        """Give the lease up at once (no-op when another holds it)."""
        with self.engine.begin() as db:
            db.execute(
                update(_leases)
                .where(_leases.c.name == self.name, _leases.c.holder == self.holder_id)
                .values(expires_at=0.0)
            )

    def current(self) -> LeaseHolder | None:
        """Who holds the lease now (None when nobody, or when it lapsed)."""
        with self.engine.connect() as db:
            row = db.execute(select(_leases).where(_leases.c.name == self.name)).one_or_none()
        if row is None or row.expires_at < time.time():
            return None
        return LeaseHolder(row.holder, row.acquired_at, row.expires_at)

    @contextmanager
    def held(
        self, wait_s: float = 0.5, on_wait: Callable[[LeaseHolder | None], object] | None = None
    ) -> Iterator[Heartbeat]:
        """Wait for the lease, hold it (renewed in the background) for the block, then release it.

        The block should check ``heartbeat.check()`` between steps: it raises :class:`LeaseLost`
        once a renewal failed, so a holder that stalled past ``ttl_s`` stops writing.
        """
        waited = False
        while not self.acquire():
            if not waited and on_wait is not None:
                on_wait(self.current())
            waited = True
            time.sleep(wait_s)
        heartbeat = Heartbeat(self)
        try:
            yield heartbeat
        finally:
            heartbeat.stop()
            self.release()


class Heartbeat:
    """Renews a held lease every third of its life until stopped; remembers a failed renewal."""

    def __init__(self, lease: Lease) -> None:
        self.lease = lease
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease {lease.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.lease.ttl_s / 3):
            try:
                if not self.lease.acquire():
                    self.lost = True
            except Exception:  # noqa: BLE001 - a database that went away: the lease will lapse
                self.lost = True

    def check(self) -> None:
        if self.lost:
            raise LeaseLost(f"the lease {self.lease.name!r} lapsed; another instance may hold it")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
