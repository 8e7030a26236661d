"""The durable spool: every accepted mail is committed here before we say 250.

SQLite in WAL mode with ``synchronous=FULL``: a COMMIT returns only after the
write-ahead log is fsync'ed, so a mail we acknowledged survives a crash or a
power cut.  One row per (mail, recipient), because each recipient is routed
and answered on its own (LMTP answers per recipient).

Rows move ``queued -> done`` or ``queued -> dead``; a claim takes a lease so a
worker that dies mid-mail leaves it to be taken up again when the lease ends.
Several processes may share one file (``mailgate pipe`` runs per message).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from .errors import SpoolBusy

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    received_at REAL NOT NULL,
    mail_from TEXT NOT NULL,
    rcpt TEXT NOT NULL,
    raw BLOB NOT NULL,
    state TEXT NOT NULL DEFAULT 'queued',   -- queued, done, dead
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    lease_until REAL NOT NULL DEFAULT 0,
    last_error TEXT,
    outcome TEXT,                           -- JSON, once done
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS messages_due ON messages (state, next_attempt_at);
"""


@dataclass(frozen=True)
class SpooledMail:
    id: int
    received_at: float
    mail_from: str
    rcpt: str
    raw: bytes
    attempts: int
    state: str = "queued"
    last_error: str | None = None
    outcome: dict | None = None


class Spool:
    def __init__(self, path: str | Path, *, lease_seconds: float = 300.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lease_seconds = lease_seconds
        self._db = sqlite3.connect(self.path, timeout=5.0, isolation_level=None,
                                   check_same_thread=False)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _write(self, sql: str, params: Iterable = ()) -> sqlite3.Cursor:
        with self._lock:
            try:
                return self._db.execute(sql, tuple(params))
            except sqlite3.OperationalError as exc:
                # "database is locked" after the busy timeout: let the MTA retry.
                raise SpoolBusy(f"spool {self.path}: {exc}") from None

    def add(self, mail_from: str, recipients: list[str], raw: bytes) -> list[int]:
        """Commit one row per recipient, durably, and return their ids."""
        now = time.time()
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                ids = [self._db.execute(
                    "INSERT INTO messages (received_at, mail_from, rcpt, raw) VALUES (?,?,?,?)",
                    (now, mail_from, rcpt, raw)).lastrowid for rcpt in recipients]
                self._db.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise SpoolBusy(f"spool {self.path}: {exc}") from None
        return ids

    def claim(self, ids: list[int] | None = None, now: float | None = None) -> SpooledMail | None:
        """Take the oldest due mail (of ``ids``, if given) under a lease."""
        now = time.time() if now is None else now
        only = f"AND id IN ({','.join('?' * len(ids))})" if ids else ""
        row = self._write(
            f"""UPDATE messages SET lease_until = ?, attempts = attempts + 1
                WHERE id = (SELECT id FROM messages
                            WHERE state = 'queued' AND next_attempt_at <= ?
                              AND lease_until <= ? {only}
                            ORDER BY id LIMIT 1)
                RETURNING id, received_at, mail_from, rcpt, raw, attempts""",
            [now + self.lease_seconds, now, now, *(ids or [])]).fetchone()
        return SpooledMail(*row) if row else None

    def finish(self, mail_id: int, outcome: dict) -> None:
        self._write("UPDATE messages SET state='done', outcome=?, finished_at=?, lease_until=0"
                    " WHERE id=?", (json.dumps(outcome), time.time(), mail_id))

    def defer(self, mail_id: int, error: str, delay: float) -> None:
        self._write("UPDATE messages SET next_attempt_at=?, last_error=?, lease_until=0"
                    " WHERE id=?", (time.time() + delay, error, mail_id))

    def bury(self, mail_id: int, error: str, outcome: dict | None = None) -> None:
        """Dead-letter a mail: kept with its reason, never retried on its own."""
        self._write("UPDATE messages SET state='dead', last_error=?, outcome=?, finished_at=?,"
                    " lease_until=0 WHERE id=?",
                    (error, json.dumps(outcome) if outcome else None, time.time(), mail_id))

    def get(self, mail_id: int) -> SpooledMail | None:
        with self._lock:
            row = self._db.execute(
                "SELECT id, received_at, mail_from, rcpt, raw, attempts, state, last_error,"
                " outcome FROM messages WHERE id=?", (mail_id,)).fetchone()
        if not row:
            return None
        return SpooledMail(*row[:8], outcome=json.loads(row[8]) if row[8] else None)

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT state, count(*) FROM messages GROUP BY state")
            return dict(rows.fetchall())
