"""Which store a server, a worker or ``chaosrun token`` uses: SQLite under ``--data``, or
PostgreSQL with ``--db postgresql://...``."""

from __future__ import annotations

from pathlib import Path

from ..errors import UsageError
from .store import SqliteStore, Store

__all__ = ["open_store"]


def open_store(data: Path, db: str | None = None) -> Store:
    """The store of ``--data DIR`` (SQLite), or of ``--db URL`` (PostgreSQL).

    Raises:
        UsageError: ``db`` is not a PostgreSQL URL, or psycopg is not installed.
        StoreError: the database cannot be reached.
    """
    if db is None:
        return SqliteStore(data)
    if not db.startswith(("postgresql://", "postgres://")):
        raise UsageError(f"--db wants a PostgreSQL URL (postgresql://USER@HOST:PORT/DB), got {db.split(':')[0]!r}...")
    from .pg import PostgresStore  # psycopg only when asked for

    return PostgresStore(db, data)
