"""SQLAlchemy engines for a URL or a SQLite file, set up the same way wherever the app opens one."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.pool import NullPool

T = TypeVar("T")
CONNECT_TIMEOUT_S = 5  # a database server that does not answer fails a request fast (503), not after minutes


class DatabaseError(RuntimeError):
    """The database cannot be opened or used: a bad URL, a missing driver, a schema from a newer app."""


def open_engine(database: str | Path) -> Engine:
    """An engine for a SQLAlchemy URL, or for a SQLite file at a path (its folder is made).

    SQLite runs in WAL mode with foreign keys on; a server database is pinged before a pooled
    connection is reused, so an instance recovers by itself once the server is back.
    """
    if isinstance(database, Path):
        database.parent.mkdir(parents=True, exist_ok=True)
        database = f"sqlite:///{database}"
    try:
        url = make_url(database)
        if url.get_backend_name() == "sqlite":
            # a connection per use, as sqlite3 itself: a file deleted or moved away is never written through an old one
            engine = create_engine(url, poolclass=NullPool, connect_args={"timeout": 30, "check_same_thread": False})
            event.listen(engine, "connect", _sqlite_pragmas)
            return engine
        connect_args = {"connect_timeout": CONNECT_TIMEOUT_S} if url.get_backend_name() == "postgresql" else {}
        return create_engine(url, pool_pre_ping=True, pool_recycle=1800, connect_args=connect_args)
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        raise DatabaseError(f"database_url {_redacted(database)!r} cannot be used: {exc}") from exc


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def ping(engine: Engine) -> str | None:
    """None when the database answers, else why not (for /health)."""
    try:
        with engine.connect() as db:
            db.execute(text("SELECT 1"))
        return None
    except SQLAlchemyError as exc:
        return reason(exc)


def reason(exc: BaseException) -> str:
    """A failure in one line: its type and the first line of its message (drivers add pages of context)."""
    lines = str(exc).splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


SQL_BATCH = 500  # values per statement: SQLite refuses too many at once ("too many SQL variables")


def batches(items: Sequence[T], size: int = SQL_BATCH) -> Iterator[Sequence[T]]:
    """``items`` in slices of at most ``size``, for statements that take a list of values."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _redacted(database: str) -> str:
    try:
        return make_url(database).render_as_string(hide_password=True)
    except ArgumentError:
        return database


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a killed process loses no committed write
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


_engines: dict[str, Engine] = {}


def shared_engine(database: str | Path) -> Engine:
    """The process's one engine (connection pool) for a server URL, opened on first use; a SQLite
    file's engine holds no connections, so each caller gets its own."""
    if isinstance(database, Path):
        return open_engine(database)
    engine = _engines.get(database)
    if engine is None:
        engine = open_engine(database)
        if is_sqlite(engine):
            return engine
        _engines[database] = engine
    return engine


def database_for(database_url: str | None, default_file: Path) -> Engine:
    """The shared database when ``database_url`` is set, else the embedded SQLite file ``default_file``."""
    return shared_engine(database_url or default_file)


def as_engine(database: Engine | str | Path) -> Engine:
    """An engine as given, or the shared one of a URL or SQLite file."""
    return database if isinstance(database, Engine) else shared_engine(database)
