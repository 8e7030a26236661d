"""Opening the store: a connection to its location, the schema brought up to date."""

from __future__ import annotations

import os

from mailgate.store.database import Database, Location
from mailgate.store.migrations import migrate


def connect(where: Location | str | os.PathLike[str], *, synchronous: str = "FULL",
            timeout: float = 5.0) -> Database:
    """A connection to ``where`` (a ``Location``, a PostgreSQL URL or a SQLite file), its
    schema migrated.  The options are SQLite's: ``synchronous`` "NORMAL" for state
    whose last commit may be lost in a power cut (the rate buckets); ``timeout``,
    how long to wait for another writer's lock."""
    location = Location.of(where)
    if location.url:
        from mailgate.store import postgres_schema
        from mailgate.store.postgres import PostgresDatabase

        db, schema = PostgresDatabase(location.url), postgres_schema.SCHEMA
    else:
        from mailgate.store import sqlite_schema
        from mailgate.store.sqlite import SqliteDatabase

        db = SqliteDatabase(location.path, synchronous=synchronous, timeout=timeout)
        schema = sqlite_schema.SCHEMA
    try:
        migrate(db, schema)
    except BaseException:
        db.close()
        raise
    return db
