"""The app's SQL state (conversations, feedback, the record manager, the manifest, the keyword index,
the sync lease): one SQLAlchemy engine per database, its schema made and upgraded by Alembic."""

from chatbot.database.engine import (
    DatabaseError,
    as_engine,
    batches,
    database_for,
    is_sqlite,
    open_engine,
    ping,
    reason,
    shared_engine,
)
from chatbot.database.migrate import BRANCHES, migrate

__all__ = [
    "BRANCHES",
    "as_engine",
    "batches",
    "DatabaseError",
    "database_for",
    "is_sqlite",
    "migrate",
    "open_engine",
    "ping",
    "reason",
    "shared_engine",
]
