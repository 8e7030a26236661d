"""The one way mailgate opens its SQLite file: durable commits, shared by threads.

The spool, the Discord queue, the notice outbox and the pipe's rate buckets
all live in the same file, each through its own connection.  WAL lets their
readers and writers (and other processes: ``mailgate pipe`` runs per mail)
work side by side; ``synchronous=FULL`` makes every COMMIT wait until the
log is on disk, which is what lets us say 250 after it.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Iterable


def open_durable(path: str | Path, schema: str = "", timeout: float = 5.0) -> sqlite3.Connection:
    """A connection in autocommit mode (each statement its own durable commit)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    if schema:
        db.executescript(schema)
    return db


class Tables:
    """Some tables of the file, used from several threads through one connection."""

    def __init__(self, path: str | Path, schema: str, timeout: float = 5.0):
        self._db = open_durable(path, schema, timeout)
        self._lock = threading.Lock()

    def _run(self, sql: str, params: Iterable = ()) -> list[tuple]:
        """Rows (of a SELECT or a RETURNING), read while the connection is ours."""
        with self._lock:
            return self._db.execute(sql, tuple(params)).fetchall()

    def _change(self, sql: str, params: Iterable = ()) -> int:
        with self._lock:
            return self._db.execute(sql, tuple(params)).rowcount

    def close(self) -> None:
        with self._lock:
            self._db.close()
