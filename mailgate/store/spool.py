"""The durable spool and state store: every accepted mail is committed here before 250.

One row per (mail, recipient), because each recipient is routed and answered
on its own (LMTP answers per recipient).  Rows move ``queued -> done`` or
``queued -> dead``; a claim takes a lease, so a mail whose worker was killed
is taken up again when the lease ends.  Mail for the same ticket carries the
same ``order_key`` and is applied in arrival order: a claim never takes a mail
while an earlier one of its ticket is still queued (waiting for a retry, or
leased to another worker).

The ``processed`` table is the idempotency record: one row per (mail key,
route), under a unique constraint, with the outcome and the Redmine journal.

``Spool`` holds the SQL both backends share; ``SqliteSpool`` (the embedded
default: WAL, ``synchronous=FULL``, so a COMMIT returns only once the log is
on disk) and ``mailgate.store.postgres.PostgresSpool`` (several gateway hosts) add
their connection handling and their way of claiming.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator, Sequence

from mailgate.store.claims import holder_is_gone, host_prefix, this_process
from mailgate.errors import SpoolBusy
from mailgate.store.sqlite import open_durable

COLUMNS = ("id, received_at, mail_from, rcpt, raw, attempts, state, last_error, outcome,"
           " next_attempt_at, order_key")


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
    next_attempt_at: float = 0.0
    order_key: str | None = None

    @property
    def created_at(self) -> float:
        return self.received_at

    @property
    def failures(self) -> int:
        """Attempts that failed before this one (a claim counts its own attempt)."""
        return max(0, self.attempts - 1)

    @classmethod
    def from_row(cls, row) -> "SpooledMail":
        values = list(row)
        values[4] = bytes(values[4])
        values[8] = json.loads(values[8]) if values[8] else None
        return cls(*values)


class Spool:
    """The operations every backend offers; SQL written with ``?`` placeholders."""

    lease_seconds: float

    @contextmanager
    def _transaction(self) -> Iterator:  # pragma: no cover - each backend has its own
        raise NotImplementedError
        yield

    def _claim_sql(self, only: str) -> str:  # pragma: no cover
        raise NotImplementedError

    def _one(self, sql: str, params: Sequence = ()):
        with self._transaction() as cur:
            cur.execute(sql, tuple(params))
            return cur.fetchone()

    def _all(self, sql: str, params: Sequence = ()) -> list:
        with self._transaction() as cur:
            cur.execute(sql, tuple(params))
            return cur.fetchall()

    def _run(self, sql: str, params: Sequence = ()) -> int:
        with self._transaction() as cur:
            cur.execute(sql, tuple(params))
            return cur.rowcount

    # -- taking mail in ---------------------------------------------------------

    def add(self, mail_from: str, recipients: Sequence[tuple[str, str | None]],
            raw: bytes) -> list[int]:
        """Commit one row per (recipient, order key), durably, and return their ids."""
        return self._insert([(mail_from, recipients, raw)])[0]

    def _insert(self, mails: Sequence[tuple]) -> list[list[int]]:
        """Several mails in one transaction: one commit, one fsync, for all of them."""
        now = time.time()
        batches = []
        with self._transaction() as cur:
            for mail_from, recipients, raw in mails:
                inline, body = self._store(cur, raw)
                ids = []
                for rcpt, order_key in recipients:
                    cur.execute("INSERT INTO messages (received_at, mail_from, rcpt, raw,"
                                " order_key, body_id) VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
                                (now, mail_from, rcpt, inline, order_key, body))
                    ids.append(cur.fetchone()[0])
                batches.append(ids)
        return batches

    def _store(self, cur, raw: bytes) -> tuple[bytes, int | None]:
        """(the bytes the messages row holds, the id of a separate body, if any)."""
        return raw, None

    # -- the worker's side --------------------------------------------------------

    def claim(self, ids: Sequence[int] | None = None, now: float | None = None,
              lease: float | None = None) -> SpooledMail | None:
        """Take the oldest due mail (of ``ids``, if given) under a lease, in ticket order."""
        now = time.time() if now is None else now
        until = now + (self.lease_seconds if lease is None else lease)
        only = f"AND m.id IN ({','.join('?' * len(ids))})" if ids else ""
        row = self._one(self._claim_sql(only), [until, this_process(), now, now, *(ids or [])])
        return SpooledMail.from_row(row) if row else None

    def release_dead_claims(self, now: float | None = None) -> int:
        """Take back at once the claims of this host's processes that are gone (a
        worker killed with its mail in hand); returns how many.  Claims of other
        hosts are left to their leases."""
        now = time.time() if now is None else now
        held = self._all("SELECT id, claimed_by FROM messages WHERE state='queued'"
                         " AND lease_until > ? AND claimed_by LIKE ?", (now, host_prefix() + "%"))
        released = 0
        for mail_id, holder in held:
            if holder_is_gone(holder):
                released += self._run("UPDATE messages SET lease_until=0 WHERE id=?"
                                      " AND claimed_by=? AND state='queued'", (mail_id, holder))
        return released

    def renew(self, mail_id: int, until: float) -> None:
        """Keep the lease of a mail still being worked on."""
        self._run("UPDATE messages SET lease_until=? WHERE id=? AND state='queued'"
                  " AND lease_until > 0", (until, mail_id))

    def next_due(self) -> float | None:
        row = self._one("SELECT min(CASE WHEN next_attempt_at > lease_until"
                        " THEN next_attempt_at ELSE lease_until END)"
                        " FROM messages WHERE state='queued'")
        return row[0] if row else None

    def finish(self, mail_id: int, outcome: dict) -> None:
        self._run("UPDATE messages SET state='done', outcome=?, finished_at=?, lease_until=0,"
                  " last_error=NULL WHERE id=?", (json.dumps(outcome), time.time(), mail_id))

    def defer(self, mail_id: int, error: str, until: float) -> None:
        """Try the mail again at ``until`` (time.time())."""
        self._run("UPDATE messages SET next_attempt_at=?, last_error=?, lease_until=0"
                  " WHERE id=?", (until, error, mail_id))

    def bury(self, mail_id: int, error: str, outcome: dict | None = None) -> None:
        """Dead-letter a mail: kept with its reason, never retried on its own."""
        self._run("UPDATE messages SET state='dead', last_error=?, outcome=?, finished_at=?,"
                  " lease_until=0 WHERE id=?",
                  (error, json.dumps(outcome) if outcome else None, time.time(), mail_id))

    # -- idempotency ----------------------------------------------------------------

    def seen(self, mail_key: str, route: str) -> dict | None:
        row = self._one("SELECT outcome FROM processed WHERE mail_key=? AND route_key=?",
                        (mail_key, route))
        return json.loads(row[0]) if row else None

    def remember(self, mail_key: str, route: str, outcome: dict) -> bool:
        """Record what a (mail, route) became; False if it was already recorded."""
        return self._run(
            "INSERT INTO processed (mail_key, route_key, ticket, journal_id, outcome, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (mail_key, route_key) DO NOTHING",
            (mail_key, route, outcome.get("ticket"), outcome.get("journal_id"),
             json.dumps(outcome), time.time())) == 1

    # -- for operators (``mailgate spool``) ------------------------------------------

    def get(self, mail_id: int) -> SpooledMail | None:
        row = self._one(f"SELECT {COLUMNS} FROM messages WHERE id=?", (mail_id,))
        return SpooledMail.from_row(row) if row else None

    def mails(self, state: str | None = "queued", limit: int = 1000) -> list[SpooledMail]:
        where = "WHERE state=?" if state else ""
        params = [state] if state else []
        return [SpooledMail.from_row(r) for r in self._all(
            f"SELECT {COLUMNS} FROM messages m {where} ORDER BY id LIMIT ?", [*params, limit])]

    def retry(self, mail_id: int | None = None) -> int:
        """Make a waiting or dead mail (or all of them) due now; returns how many."""
        which = "id=?" if mail_id is not None else "state IN ('queued', 'dead')"
        params = [mail_id] if mail_id is not None else []
        return self._run(f"UPDATE messages SET state='queued', next_attempt_at=0, lease_until=0"
                         f" WHERE {which} AND state <> 'done'", params)

    def drop(self, mail_id: int) -> int:
        return self._run("DELETE FROM messages WHERE id=? AND state <> 'done'", (mail_id,))

    def counts(self) -> dict[str, int]:
        return dict(self._all("SELECT state, count(*) FROM messages GROUP BY state"))

    def oldest_queued(self) -> float | None:
        row = self._one("SELECT min(received_at) FROM messages WHERE state='queued'")
        return row[0] if row and row[0] is not None else None


SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    received_at REAL NOT NULL,
    mail_from TEXT NOT NULL,
    rcpt TEXT NOT NULL,
    raw BLOB NOT NULL,
    order_key TEXT,                         -- 'ticket:N': applied in arrival order
    state TEXT NOT NULL DEFAULT 'queued',   -- queued, done, dead
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    lease_until REAL NOT NULL DEFAULT 0,
    claimed_by TEXT,                        -- host:pid:start of the lease's holder
    last_error TEXT,
    outcome TEXT,                           -- JSON, once done
    finished_at REAL
);
-- The mail itself, once per mail however many recipients it has.  Written
-- through a blob handle (see SqliteSpool._store_body), never as part of a record.
CREATE TABLE IF NOT EXISTS bodies (
    id INTEGER PRIMARY KEY,
    raw BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS processed (
    mail_key TEXT NOT NULL,
    route_key TEXT NOT NULL,
    ticket INTEGER,
    journal_id INTEGER,
    outcome TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (mail_key, route_key)
);
"""

#: Columns added after the first release: (name, definition), applied on open,
#: so a spool written by an older mailgate is upgraded in place, mail and all.
SQLITE_ADDED_COLUMNS = [("order_key", "TEXT"), ("body_id", "INTEGER"), ("claimed_by", "TEXT")]

#: The mail goes into its blob in pieces this big.
BLOB_CHUNK = 1024 * 1024

SQLITE_INDEXES = """
CREATE INDEX IF NOT EXISTS messages_due ON messages (state, next_attempt_at);
CREATE INDEX IF NOT EXISTS messages_order ON messages (order_key, state, id);
"""


class _Waiting:
    """One mail waiting for a group commit, and what became of it."""

    def __init__(self, mail: tuple):
        self.mail = mail
        self.ids: list[int] | None = None
        self.error: BaseException | None = None


class SqliteSpool(Spool):
    def __init__(self, path: str | Path, *, lease_seconds: float = 300.0):
        self.path = Path(path)
        self.lease_seconds = lease_seconds
        self._db = open_durable(self.path, SQLITE_SCHEMA)
        self._lock = threading.Lock()
        self._waiting: list[_Waiting] = []
        self._waiting_lock = threading.Lock()
        self._committer = threading.Lock()
        self._upgrade()
        self._db.executescript(SQLITE_INDEXES)

    def _upgrade(self) -> None:
        have = {row[1] for row in self._db.execute("PRAGMA table_info(messages)")}
        for name, definition in SQLITE_ADDED_COLUMNS:
            if name not in have:
                self._db.execute(f"ALTER TABLE messages ADD COLUMN {name} {definition}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        with self._lock:
            try:
                # IMMEDIATE takes the write lock at once: no deadlock on upgrade.
                self._db.execute("BEGIN IMMEDIATE")
                cur = self._db.cursor()
                yield cur
                self._db.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                self._rollback()
                # "database is locked" after the busy timeout: the MTA retries.
                raise SpoolBusy(f"spool {self.path}: {exc}") from None
            except BaseException:
                self._rollback()
                raise

    def add(self, mail_from: str, recipients: Sequence[tuple[str, str | None]],
            raw: bytes) -> list[int]:
        """Group commit: mails that arrive while a commit is on disk share the next one.

        Each caller still returns only after the commit that holds its mail, so
        250 still means "on disk"; but under load one fsync serves many mails.
        """
        me = _Waiting((mail_from, recipients, raw))
        with self._waiting_lock:
            self._waiting.append(me)
        with self._committer:
            if me.ids is None and me.error is None:
                with self._waiting_lock:
                    batch, self._waiting = self._waiting, []
                try:
                    for waiting, ids in zip(batch, self._insert([w.mail for w in batch])):
                        waiting.ids = ids
                except BaseException as exc:
                    for waiting in batch:
                        waiting.error = exc
        if me.error is not None:
            raise me.error
        return me.ids

    def _rollback(self) -> None:
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

    # -- the mail's bytes: in ``bodies``, written and read through blob handles --------
    #
    # An INSERT with the mail as a parameter makes SQLite build the whole record
    # in memory (about twice a 25 MB mail); zeroblob() and an incremental write
    # do not, and one copy serves every recipient of the mail.

    def _store(self, cur: sqlite3.Cursor, raw: bytes) -> tuple[bytes, int | None]:
        return b"", self._store_body(cur, raw)

    def _store_body(self, cur: sqlite3.Cursor, raw: bytes) -> int:
        cur.execute("INSERT INTO bodies (raw) VALUES (zeroblob(?)) RETURNING id", (len(raw),))
        body = cur.fetchone()[0]
        view = memoryview(raw)
        with self._db.blobopen("bodies", "raw", body) as blob:
            for start in range(0, len(view), BLOB_CHUNK):
                blob.write(view[start:start + BLOB_CHUNK])
        return body

    def _read_raw(self, message_id: int) -> bytes:
        """The mail's bytes (from ``bodies``, or inline in a row from before it existed)."""
        row = self._db.execute("SELECT body_id FROM messages WHERE id=?",
                               (message_id,)).fetchone()
        table, rowid = ("bodies", row[0]) if row and row[0] is not None \
            else ("messages", message_id)
        with self._db.blobopen(table, "raw", rowid, readonly=True) as blob:
            return blob.read()

    def get(self, mail_id: int) -> SpooledMail | None:
        mail = super().get(mail_id)
        if mail is None:
            return None
        with self._lock:
            return replace(mail, raw=self._read_raw(mail_id))

    def mails(self, state: str | None = "queued", limit: int = 1000) -> list[SpooledMail]:
        found = super().mails(state, limit)
        with self._lock:
            return [replace(m, raw=self._read_raw(m.id)) for m in found]

    def drop(self, mail_id: int) -> int:
        dropped = super().drop(mail_id)
        # A body no recipient row points at any more goes with the last of them.
        self._run("DELETE FROM bodies WHERE id NOT IN"
                  " (SELECT body_id FROM messages WHERE body_id IS NOT NULL)")
        return dropped

    def claim(self, ids: Sequence[int] | None = None, now: float | None = None,
              lease: float | None = None) -> SpooledMail | None:
        """As Spool.claim; the raw mail is read once, through a blob handle.

        UPDATE ... RETURNING buffers the rows it returns: with the raw mail among
        them that is ~6x a big mail at its peak; a read-only blob read is 1x.
        """
        now = time.time() if now is None else now
        until = now + (self.lease_seconds if lease is None else lease)
        only = f"AND m.id IN ({','.join('?' * len(ids))})" if ids else ""
        with self._transaction() as cur:
            row = cur.execute(self._claim_sql(only),
                              [until, this_process(), now, now, *(ids or [])]).fetchone()
            if row is not None:
                row = (*row[:4], self._read_raw(row[0]), *row[5:])
        return SpooledMail.from_row(row) if row else None

    def _claim_sql(self, only: str) -> str:
        # One UPDATE ... RETURNING: SQLite has one writer at a time, so the
        # check for an earlier mail of the same ticket and the claim are atomic.
        return f"""UPDATE messages SET lease_until = ?, claimed_by = ?, attempts = attempts + 1
            WHERE id = (SELECT m.id FROM messages m
                        WHERE m.state = 'queued' AND m.next_attempt_at <= ?
                          AND m.lease_until <= ? {only}
                          AND NOT EXISTS (SELECT 1 FROM messages e
                                          WHERE e.order_key = m.order_key
                                            AND e.state = 'queued' AND e.id < m.id)
                        ORDER BY m.id LIMIT 1)
            RETURNING {COLUMNS.replace(' raw,', ' NULL,')}"""
