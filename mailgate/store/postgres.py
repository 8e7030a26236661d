"""The store on PostgreSQL, for several gateway hosts sharing one queue and one state.

``PostgresDatabase`` is one connection, shared by threads under a lock and
made again when the server dropped it.  Every statement mailgate sends it is
written for PostgreSQL (``%s``, ``ON CONFLICT``, ``FOR UPDATE SKIP LOCKED``
for claims), beside its SQLite twin in the module of the tables it serves;
the tables themselves are ``mailgate.store.postgres_schema``.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator, Sequence

import psycopg

from mailgate.errors import SpoolBusy
from mailgate.store.database import Location


class PostgresDatabase:
    backend = "postgres"

    def __init__(self, url: str, *, connect_timeout: float = 5.0):
        self.url = url
        self.connect_timeout = connect_timeout
        self.lock = threading.Lock()
        self._conn: psycopg.Connection | None = None
        self._closed = False

    def __str__(self) -> str:
        return str(Location(url=self.url))

    def _connection(self) -> psycopg.Connection:
        if self._closed:
            raise psycopg.InterfaceError("the store was closed")
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = psycopg.connect(self.url, autocommit=True,
                                         connect_timeout=int(self.connect_timeout))
        return self._conn

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Cursor]:
        with self.lock:
            try:
                conn = self._connection()
                with conn.transaction(), conn.cursor() as cur:
                    yield cur
            except psycopg.OperationalError as exc:
                # Server gone or unreachable: nothing was written; try again later
                # (a mail being spooled gets 451 / exit 75).
                raise SpoolBusy(f"store database: {exc}".strip()) from None

    def rows(self, sql: str, params: Sequence = ()) -> list[tuple]:
        with self.transaction() as cur:
            cur.execute(sql, tuple(params))
            return cur.fetchall() if cur.description else []

    def change(self, sql: str, params: Sequence = ()) -> int:
        with self.transaction() as cur:
            cur.execute(sql, tuple(params))
            return cur.rowcount

    def close(self) -> None:
        with self.lock:
            self._closed = True
            if self._conn is not None:
                self._conn.close()
