"""Bring a database's schema to this version of the app with Alembic (``migrations/``).

Each store owns one branch (its tables): an embedded SQLite file gets only its own store's branch,
a shared database (``database_url``) gets them all, with one ``alembic_version`` row per branch.
"""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from chatbot.database.engine import DatabaseError

BRANCHES = ("chats", "records", "manifest", "keywords")
_SCRIPTS = Path(__file__).parent / "migrations"
_LOCK = 7_352_091  # PostgreSQL advisory lock: instances starting together migrate one at a time


def migrate(engine: Engine, branch: str, **attributes: object) -> None:
    """Upgrade ``branch`` to its head (``attributes`` reach the migrations, e.g. ``collection``).

    A database that another, newer version of the app upgraded is refused (:class:`DatabaseError`).
    """
    if branch not in BRANCHES:
        raise ValueError(f"unknown schema branch {branch!r}")
    from alembic import command  # 0.23 s to import: only where a store is opened
    from alembic.config import Config
    from alembic.util import CommandError

    config = Config()
    config.set_main_option("script_location", str(_SCRIPTS))
    config.attributes.update(attributes)
    for attempt in range(3):
        try:
            with engine.begin() as connection:
                if connection.dialect.name == "postgresql":
                    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK})
                config.attributes["connection"] = connection
                command.upgrade(config, f"{branch}@head")
            return
        except CommandError as exc:
            raise DatabaseError(
                f"{engine.url.render_as_string(hide_password=True)}: its schema is from a newer version of the "
                f"app ({exc}); upgrade the app, or point it at another database"
            ) from exc
        except DBAPIError:
            # SQLite: two processes made the same first tables at once; the second sees them on its retry
            if engine.dialect.name != "sqlite" or attempt == 2:
                raise
            time.sleep(0.2 * (attempt + 1))
