"""Versioned migrations: each database records which of its backend's migrations it has.

A backend's schema is an ordered tuple of ``Migration``s (``sqlite_schema``,
``postgres_schema``), each written in that backend's SQL.  ``migrate`` applies,
in one transaction, the ones a database has not had, and records each in its
``schema_version`` table; a database already at the latest version costs two
small reads.  Never edit a migration that has shipped: add the next one.

Migration 1 of each backend makes the tables as the code before versioning
made them, with ``IF NOT EXISTS``: a store written by that code has no
``schema_version`` yet, counts as version 0, and comes through migration 1
unchanged, mail and all.

Several processes may open the same store at once (``pipe`` beside ``serve``,
two hosts): the one that migrates holds the write lock (SQLite) or an advisory
lock (PostgreSQL), and the others find the work done when they get it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

log = logging.getLogger("mailgate.store.migrations")


@dataclass(frozen=True)
class Migration:
    version: int
    #: What it does, in words (kept in ``schema_version``).
    name: str
    #: SQL statements, or a function of the cursor for what SQL alone cannot say.
    steps: Sequence[str | Callable[[Any], None]]


@dataclass(frozen=True)
class Schema:
    """A backend's migrations, and the few statements that keep their record."""

    migrations: tuple[Migration, ...]
    #: A row if ``schema_version`` exists.
    has_versions: str
    create_versions: str
    current: str
    record: str
    #: Makes concurrent migrators take turns, or "" when the transaction already does.
    lock: str = ""

    @property
    def latest(self) -> int:
        return self.migrations[-1].version


class Database(Protocol):
    backend: str

    def transaction(self): ...

    def rows(self, sql: str, params: Sequence = ()) -> list[tuple]: ...


def version(db: Database, schema: Schema) -> int:
    """The version ``db`` is at (0: never migrated)."""
    if not db.rows(schema.has_versions):
        return 0
    return db.rows(schema.current)[0][0] or 0


def migrate(db: Database, schema: Schema) -> list[int]:
    """Bring ``db`` to the latest version; returns the versions applied here."""
    if version(db, schema) >= schema.latest:
        return []
    applied = []
    with db.transaction() as cur:
        if schema.lock:
            cur.execute(schema.lock)
        cur.execute(schema.create_versions)
        cur.execute(schema.current)
        have = cur.fetchone()[0] or 0
        for migration in schema.migrations:
            if migration.version <= have:
                continue
            for step in migration.steps:
                if callable(step):
                    step(cur)
                else:
                    cur.execute(step)
            cur.execute(schema.record, (migration.version, migration.name, time.time()))
            applied.append(migration.version)
    if applied:
        log.info("store %s: migrated to version %d (applied %s)", db, schema.latest,
                 ", ".join(map(str, applied)))
    return applied


def check_order(migrations: Sequence[Migration]) -> tuple[Migration, ...]:
    """The migrations, checked to be numbered 1, 2, 3, ... (a gap or a repeat is a bug)."""
    numbers = [m.version for m in migrations]
    if numbers != list(range(1, len(numbers) + 1)):
        raise ValueError(f"migrations must be numbered 1..n in order, got {numbers}")
    return tuple(migrations)
