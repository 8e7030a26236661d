"""The spool and state store on PostgreSQL, for several gateway hosts sharing one queue.

Same tables, same operations as the SQLite default (``mailgate.store.spool``); what
differs is how a claim stays correct with many workers on many hosts:
``FOR UPDATE SKIP LOCKED`` lets each worker take a different mail without
waiting, and the "no earlier queued mail of the same ticket" condition keeps
per-ticket order, because an earlier mail stays ``queued`` (leased) until its
worker commits it ``done``.  The unique key of ``processed`` is the same
idempotency guarantee as on SQLite.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Iterator, Sequence

import psycopg

from mailgate.store.claims import this_process
from mailgate.errors import SpoolBusy
from mailgate.store.spool import COLUMNS, Spool, SpooledMail

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id BIGSERIAL PRIMARY KEY,
    received_at DOUBLE PRECISION NOT NULL,
    mail_from TEXT NOT NULL,
    rcpt TEXT NOT NULL,
    raw BYTEA NOT NULL,
    order_key TEXT,
    body_id BIGINT,           -- unused here: PostgreSQL keeps the mail in its row
    state TEXT NOT NULL DEFAULT 'queued',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at DOUBLE PRECISION NOT NULL DEFAULT 0,
    lease_until DOUBLE PRECISION NOT NULL DEFAULT 0,
    claimed_by TEXT,
    last_error TEXT,
    outcome TEXT,
    finished_at DOUBLE PRECISION
);
ALTER TABLE messages ADD COLUMN IF NOT EXISTS body_id BIGINT;
ALTER TABLE messages ADD COLUMN IF NOT EXISTS claimed_by TEXT;
CREATE INDEX IF NOT EXISTS messages_due ON messages (state, next_attempt_at);
CREATE INDEX IF NOT EXISTS messages_order ON messages (order_key, state, id);
CREATE TABLE IF NOT EXISTS processed (
    mail_key TEXT NOT NULL,
    route_key TEXT NOT NULL,
    ticket INTEGER,
    journal_id INTEGER,
    outcome TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (mail_key, route_key)
);
"""


class _Cursor:
    """Translates the shared SQL's ``?`` placeholders into psycopg's ``%s``."""

    def __init__(self, cursor: psycopg.Cursor):
        self._cursor = cursor

    def execute(self, sql: str, params: Sequence = ()) -> None:
        self._cursor.execute(sql.replace("?", "%s"), params)

    def fetchone(self):
        return self._cursor.fetchone()

    def fetchall(self):
        return self._cursor.fetchall()

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount


class PostgresSpool(Spool):
    def __init__(self, url: str, *, lease_seconds: float = 300.0):
        self.url = url
        self.lease_seconds = lease_seconds
        self._lock = threading.Lock()
        self._conn: psycopg.Connection | None = None
        with self._transaction() as cur:
            # Several hosts may start at once: serialise the CREATEs.
            cur.execute("SELECT pg_advisory_xact_lock(727274)")
            for statement in filter(str.strip, SCHEMA.split(";")):
                cur.execute(statement)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = psycopg.connect(self.url, connect_timeout=5)
        return self._conn

    @contextmanager
    def _transaction(self) -> Iterator[_Cursor]:
        with self._lock:
            try:
                conn = self._connection()
                with conn.transaction(), conn.cursor() as cur:
                    yield _Cursor(cur)
            except psycopg.OperationalError as exc:
                # Server gone or unreachable: the mail is not stored, so the
                # sender must try again (451 / exit 75).
                raise SpoolBusy(f"spool database: {exc}".strip()) from None

    def claim(self, ids: Sequence[int] | None = None, now: float | None = None,
              lease: float | None = None) -> SpooledMail | None:
        now = time.time() if now is None else now
        until = now + (self.lease_seconds if lease is None else lease)
        only = f"AND m.id IN ({','.join('?' * len(ids))})" if ids else ""
        row = self._one(f"""
            WITH next AS (
                SELECT m.id FROM messages m
                WHERE m.state = 'queued' AND m.next_attempt_at <= ? AND m.lease_until <= ? {only}
                  AND NOT EXISTS (SELECT 1 FROM messages e
                                  WHERE e.order_key = m.order_key
                                    AND e.state = 'queued' AND e.id < m.id)
                ORDER BY m.id LIMIT 1
                FOR UPDATE SKIP LOCKED)
            UPDATE messages SET lease_until = ?, claimed_by = ?, attempts = attempts + 1
            FROM next WHERE messages.id = next.id
            RETURNING {', '.join('messages.' + c.strip() for c in COLUMNS.split(','))}""",
            [now, now, *(ids or []), until, this_process()])
        return SpooledMail.from_row(row) if row else None
