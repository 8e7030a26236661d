"""The one way mailgate opens its SQLite file: durable commits, shared by threads.

The spool, the Discord queue, the notice outbox and the rate buckets all live
in the same file, each through its own connection (``SqliteDatabase``).  WAL
lets their readers and writers (and other processes: ``mailgate pipe`` runs per
mail) work side by side; ``synchronous=FULL`` makes every COMMIT wait until the
log is on disk, which is what lets us say 250 after it.  The tables are
``mailgate.store.sqlite_schema``.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from mailgate.errors import SpoolBusy

log = logging.getLogger("mailgate.store.sqlite")

#: Owner read and write only: the file holds the full text of every mail.
PRIVATE = 0o600


def open_durable(path: str | Path, schema: str = "", timeout: float = 5.0) -> sqlite3.Connection:
    """A connection in autocommit mode (each statement its own durable commit)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    _make_private(Path(path))
    db = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    if schema:
        db.executescript(schema)
    return db


def _make_private(path: Path) -> None:
    """The file exists, readable and writable by its owner only: it holds every mail.

    Made here, not by SQLite, which would follow the umask (0644 under most
    MTAs); SQLite gives the -wal and -shm files the main file's mode.  A file
    made before this check (by an older mailgate) is tightened, with any
    -wal and -shm still lying beside it.
    """
    # Never open and close a descriptor of a database file that may be in use:
    # closing any descriptor of a file drops every POSIX lock this process holds
    # on it, so SQLite's own connections here would lose their locks, and another
    # process could then checkpoint and delete the WAL under them (lost commits;
    # sqlite.org/howtocorrupt.html §2.2).  So: create the file only when it is
    # not there (O_EXCL), and tighten an existing one by its name.
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE))
    except FileExistsError:
        pass
    for companion in (path, *(path.with_name(path.name + s) for s in ("-wal", "-shm"))):
        _tighten(companion)


def _tighten(path: Path) -> None:
    try:
        if stat.S_IMODE(path.stat().st_mode) & ~PRIVATE:
            os.chmod(path, PRIVATE)
    except FileNotFoundError:
        pass
    except PermissionError:
        # Not our file (another user made it and lets us write): say so, and go on.
        log.warning("%s: cannot make it private (mode 0600): not its owner", path)


class SqliteDatabase:
    """The store's SQLite file through one connection, shared by threads under a lock.

    Each part of the store (the spool, the Discord queue, the notices, the rate
    buckets) opens its own, so that one part's transaction does not wait for
    another's lock in this process; the file's own locking orders them.
    """

    backend = "sqlite"

    def __init__(self, path: str | Path, *, timeout: float = 5.0, synchronous: str = "FULL"):
        self.path = Path(path)
        self.connection = open_durable(self.path, timeout=timeout)
        if synchronous != "FULL":
            self.connection.execute(f"PRAGMA synchronous={synchronous}")
        self.lock = threading.Lock()

    def __str__(self) -> str:
        return str(self.path)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Cursor]:
        """One durable commit, or none of it.  IMMEDIATE takes the write lock at
        once: two writers never deadlock upgrading a read lock."""
        with self.lock:
            db = self.connection
            try:
                db.execute("BEGIN IMMEDIATE")
                yield db.cursor()
                db.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                self._rollback()
                # "database is locked" after the busy timeout: try again later.
                raise SpoolBusy(f"store {self.path}: {exc}") from None
            except BaseException:
                self._rollback()
                raise

    def _rollback(self) -> None:
        if self.connection.in_transaction:
            self.connection.execute("ROLLBACK")

    def rows(self, sql: str, params: Iterable = ()) -> list[tuple]:
        """One statement in its own commit: the rows of a SELECT or a RETURNING."""
        with self.lock, _busy(self.path):
            return self.connection.execute(sql, tuple(params)).fetchall()

    def change(self, sql: str, params: Iterable = ()) -> int:
        """One statement in its own commit: how many rows it changed."""
        with self.lock, _busy(self.path):
            return self.connection.execute(sql, tuple(params)).rowcount

    def close(self) -> None:
        with self.lock:
            self.connection.close()


@contextmanager
def _busy(path: Path) -> Iterator[None]:
    try:
        yield
    except sqlite3.OperationalError as exc:
        raise SpoolBusy(f"store {path}: {exc}") from None
