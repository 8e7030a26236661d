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

``Spool`` holds the operations, running its backend's statements
(``mailgate.store.spool_sql``); ``SqliteSpool`` (the embedded default: WAL,
``synchronous=FULL``, so a COMMIT returns only once the log is on disk) and
``PostgresSpool`` (several gateway hosts) add their way of claiming, and
SQLite its way of storing the mail's bytes.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

from mailgate.errors import MailTakenElsewhere
from mailgate.mail.idempotency import ATTEMPTED
from mailgate.store import receipts, retention
from mailgate.store.claims import holder_is_gone, host_prefix, this_process
from mailgate.store.connect import connect
from mailgate.store.database import Database, Location
from mailgate.store.receipts import Receipt, Receipts
from mailgate.store.spool_sql import COLUMNS, POSTGRES, SQLITE, SpoolSQL

__all__ = ["COLUMNS", "PostgresSpool", "Spool", "SpooledMail", "SqliteSpool"]

#: The record of an attempt (mailgate.mail.idempotency.ATTEMPTED), as stored.
_ATTEMPT = json.dumps({"kind": ATTEMPTED})


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
    #: How it reached us: "lmtp", "pipe", "smtp <client address>", "replay" (None:
    #: spooled before this was recorded).  Decides whose Authentication-Results count.
    via: str | None = None

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
    """The operations every backend offers, each one durable commit."""

    #: The backend's statements.
    sql: SpoolSQL

    def __init__(self, db: Database, *, lease_seconds: float = 300.0):
        self.db = db
        self.lease_seconds = lease_seconds

    def close(self) -> None:
        self.db.close()

    def _one(self, sql: str, params: Sequence = ()):
        with self.db.transaction() as cur:
            cur.execute(sql, tuple(params))
            return cur.fetchone()

    def _all(self, sql: str, params: Sequence = ()) -> list:
        with self.db.transaction() as cur:
            cur.execute(sql, tuple(params))
            return cur.fetchall()

    def _run(self, sql: str, params: Sequence = ()) -> int:
        with self.db.transaction() as cur:
            cur.execute(sql, tuple(params))
            return cur.rowcount

    # -- taking mail in ---------------------------------------------------------

    def add(self, mail_from: str, recipients: Sequence[tuple[str, str | None]],
            raw: bytes, via: str | None = None, receipt: Receipt | None = None
            ) -> list[int]:
        """Commit one row per (recipient, order key), durably, and return their ids.

        With a ``receipt`` (a mail taken from a mailbox) the receipt is committed
        with the rows; if that mail already has one (another process took it
        first), nothing is spooled and ``MailTakenElsewhere`` is raised."""
        ids = self.add_many([(mail_from, recipients, raw, via, receipt)])[0]
        if ids is None:
            raise MailTakenElsewhere(f"{receipt.source} UID {receipt.uid}: already taken")
        return ids

    @property
    def receipts(self) -> Receipts:
        """What the mailbox sources took (mailgate.store.receipts)."""
        return Receipts(self.db)

    def add_many(self, mails: Sequence[tuple]) -> list[list[int] | None]:
        """Several mails, each ``add``'s arguments as a tuple, in one transaction: one
        commit, one fsync, for all of them; each one's ids, in order.  A mail whose
        receipt was already recorded is left out (None in its place)."""
        now = time.time()
        batches: list[list[int] | None] = []
        with self.db.transaction() as cur:
            for mail_from, recipients, raw, via, receipt in mails:
                if receipt is not None and not receipts.record(cur, self.db.backend,
                                                               receipt, "spooled"):
                    batches.append(None)
                    continue
                inline, body = self._store(cur, raw, len(recipients))
                ids = []
                for rcpt, order_key in recipients:
                    cur.execute(self.sql.insert,
                                (now, mail_from, rcpt, inline, order_key, body, via))
                    ids.append(cur.fetchone()[0])
                batches.append(ids)
        return batches

    def _store(self, cur, raw: bytes, rows: int) -> tuple[bytes, int | None]:
        """(the bytes each of the mail's ``rows`` holds, the id of a separate body, if any)."""
        return raw, None

    # -- the worker's side --------------------------------------------------------

    def claim(self, ids: Sequence[int] | None = None, now: float | None = None,
              lease: float | None = None) -> SpooledMail | None:
        """Take the oldest due mail (of ``ids``, if given) under a lease, in ticket order."""
        raise NotImplementedError

    def release_dead_claims(self, now: float | None = None) -> int:
        """Take back at once the claims of this host's processes that are gone (a
        worker killed with its mail in hand); returns how many.  Claims of other
        hosts are left to their leases."""
        now = time.time() if now is None else now
        released = 0
        for mail_id, holder in self._all(self.sql.held, (now, host_prefix() + "%")):
            if holder_is_gone(holder):
                released += self._run(self.sql.release, (mail_id, holder))
        return released

    def renew(self, mail_id: int, until: float) -> None:
        """Keep the lease of a mail still being worked on."""
        self._run(self.sql.renew, (until, mail_id))

    def next_due(self) -> float | None:
        row = self._one(self.sql.next_due)
        return row[0] if row else None

    def finish(self, mail_id: int, outcome: dict) -> None:
        self._run(self.sql.finish, (json.dumps(outcome), time.time(), mail_id))

    def defer(self, mail_id: int, error: str, until: float) -> None:
        """Try the mail again at ``until`` (time.time())."""
        self._run(self.sql.defer, (until, error, mail_id))

    def bury(self, mail_id: int, error: str, outcome: dict | None = None) -> None:
        """Dead-letter a mail: kept with its reason, never retried on its own."""
        self._run(self.sql.bury,
                  (error, json.dumps(outcome) if outcome else None, time.time(), mail_id))

    # -- idempotency ----------------------------------------------------------------

    def seen(self, mail_key: str, route: str) -> dict | None:
        row = self._one(self.sql.seen, (mail_key, route))
        return json.loads(row[0]) if row else None

    def attempt(self, mail_key: str, route: str) -> None:
        """Record, before writing to Redmine, that a (mail, route) is being written: until
        its outcome is remembered, any later try looks for the mail's marker first."""
        self._run(self.sql.attempt, (mail_key, route, _ATTEMPT, time.time()))

    def remember(self, mail_key: str, route: str, outcome: dict) -> bool:
        """Record what a (mail, route) became (over the record of its attempt); False if
        an outcome was already recorded."""
        return self._run(self.sql.remember, (
            mail_key, route, outcome.get("ticket"), outcome.get("journal_id"),
            json.dumps(outcome), time.time(), _ATTEMPT)) == 1

    def waiting_tickets(self, limit: int = 100) -> list[int]:
        """Tickets whose next mail is due and not in hand (their facts are read together)."""
        now = time.time()
        rows = self._all(self.sql.waiting, (now, now, limit))
        return [int(key.split(":", 1)[1]) for (key,) in rows if key.split(":", 1)[1].isdigit()]

    # -- retention (the sweep) --------------------------------------------------------

    def purge(self, before: float) -> dict[str, int]:
        """Delete what finished before ``before`` in the whole store: done mails,
        sent Discord posts, sent and dead notices (dead mail is kept for an operator)."""
        return retention.purge(self.db, before)

    # -- for operators (``mailgate spool``) ------------------------------------------

    def get(self, mail_id: int) -> SpooledMail | None:
        row = self._one(self.sql.get, (mail_id,))
        return SpooledMail.from_row(row) if row else None

    def mails(self, state: str | None = "queued", limit: int = 1000) -> list[SpooledMail]:
        rows = (self._all(self.sql.mails_in, (state, limit)) if state
                else self._all(self.sql.mails, (limit,)))
        return [SpooledMail.from_row(r) for r in rows]

    def retry(self, mail_id: int | None = None) -> int:
        """Make a waiting or dead mail (or all of them) due now; returns how many."""
        if mail_id is None:
            return self._run(self.sql.retry_all)
        return self._run(self.sql.retry_one, (mail_id,))

    def drop(self, mail_id: int) -> int:
        return self._run(self.sql.drop, (mail_id,))

    def counts(self) -> dict[str, int]:
        return dict(self._all(self.sql.counts))

    def oldest_queued(self) -> float | None:
        row = self._one(self.sql.oldest_queued)
        return row[0] if row and row[0] is not None else None


#: The mail goes into its blob in pieces this big.
BLOB_CHUNK = 1024 * 1024
#: A mail whose copies in its rows (one a recipient) are smaller than this is kept
#: in them, not in ``bodies`` (a constant, not a setting: it only trades CPU).
INLINE_BELOW = 64 * 1024


class _Waiting:
    """One mail waiting for a group commit, and what became of it."""

    def __init__(self, mail: tuple):
        self.mail = mail
        self.ids: list[int] | None = None
        self.error: BaseException | None = None
        self.done = False


class SqliteSpool(Spool):
    sql = SQLITE

    def __init__(self, path: str | Path, *, lease_seconds: float = 300.0):
        self.path = Path(path)
        super().__init__(connect(Location(path=self.path)), lease_seconds=lease_seconds)
        #: The connection itself: the mail's bytes go through its blob handles.
        self._db = self.db.connection
        self._lock = self.db.lock
        self._waiting: list[_Waiting] = []
        self._waiting_lock = threading.Lock()
        self._committer = threading.Lock()

    def add(self, mail_from: str, recipients: Sequence[tuple[str, str | None]],
            raw: bytes, via: str | None = None, receipt: Receipt | None = None
            ) -> list[int]:
        """Group commit: mails that arrive while a commit is on disk share the next one.

        Each caller still returns only after the commit that holds its mail, so
        250 still means "on disk"; but under load one fsync serves many mails.
        """
        me = _Waiting((mail_from, recipients, raw, via, receipt))
        with self._waiting_lock:
            self._waiting.append(me)
        with self._committer:
            if not me.done:
                with self._waiting_lock:
                    batch, self._waiting = self._waiting, []
                try:
                    for waiting, ids in zip(batch, self.add_many([w.mail for w in batch])):
                        waiting.ids = ids
                except BaseException as exc:
                    for waiting in batch:
                        waiting.error = exc
                for waiting in batch:
                    waiting.done = True
        if me.error is not None:
            raise me.error
        if me.ids is None:
            raise MailTakenElsewhere(f"{receipt.source} UID {receipt.uid}: already taken")
        return me.ids

    # -- the mail's bytes: in ``bodies``, written and read through blob handles --------
    #
    # An INSERT with the mail as a parameter makes SQLite build the whole record
    # in memory (about twice a 25 MB mail); zeroblob() and an incremental write
    # do not, and one copy serves every recipient of the mail.  A small mail is
    # kept in its rows, as PostgreSQL keeps every mail: two statements and a blob
    # handle less per mail were a tenth of the SMTP listener's spool writer's CPU
    # (docs/performance.md, A).

    def _store(self, cur: sqlite3.Cursor, raw: bytes, rows: int) -> tuple[bytes, int | None]:
        if len(raw) * rows < INLINE_BELOW:
            return raw, None
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
        with self.db.transaction() as cur:
            bodies = [row[0] for row in cur.execute(self.sql.drop, (mail_id,)).fetchall()]
            for body in filter(None, bodies):
                # A body no recipient row points at any more goes with the last of them.
                cur.execute(retention.SQLITE_ORPHAN_BODY, (body, body))
        return len(bodies)

    def claim(self, ids: Sequence[int] | None = None, now: float | None = None,
              lease: float | None = None) -> SpooledMail | None:
        """As Spool.claim; the raw mail is read once, through a blob handle.

        UPDATE ... RETURNING buffers the rows it returns: with the raw mail among
        them that is ~6x a big mail at its peak; a read-only blob read is 1x.
        """
        now = time.time() if now is None else now
        until = now + (self.lease_seconds if lease is None else lease)
        only = f"AND m.id IN ({','.join('?' * len(ids))})" if ids else ""
        with self.db.transaction() as cur:
            row = cur.execute(self.sql.claim.format(only=only),
                              [until, this_process(), now, now, *(ids or [])]).fetchone()
            if row is not None:
                row = (*row[:4], self._read_raw(row[0]), *row[5:])
        return SpooledMail.from_row(row) if row else None


class PostgresSpool(Spool):
    """The spool in PostgreSQL: the mail's bytes in its row; claims that skip the rows
    other workers are claiming (``FOR UPDATE SKIP LOCKED``, spool_sql.POSTGRES)."""

    sql = POSTGRES

    def __init__(self, url: str, *, lease_seconds: float = 300.0):
        self.url = url
        super().__init__(connect(Location(url=url)), lease_seconds=lease_seconds)

    def claim(self, ids: Sequence[int] | None = None, now: float | None = None,
              lease: float | None = None) -> SpooledMail | None:
        now = time.time() if now is None else now
        until = now + (self.lease_seconds if lease is None else lease)
        only, chosen = ("AND m.id = ANY(%s)", [list(ids)]) if ids else ("", [])
        row = self._one(self.sql.claim.format(only=only),
                        [now, now, *chosen, until, this_process()])
        return SpooledMail.from_row(row) if row else None
