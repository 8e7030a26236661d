"""Receipts: what a source that takes mail out of somewhere (an IMAP mailbox) records
of each mail it took, so that no mail is ever taken twice.

A receipt names the mail where it was (the mailbox, its UIDVALIDITY, the UID)
and what it is (its key: the Message-ID, else the SHA-256 of its bytes).  It is
written in the same transaction as the spooled mail (``Spool.add``), so it
exists exactly when the mail is in the spool: a mail still in the mailbox
after a crash between that commit and its move is recognised by its UID and
only moved.  After a UIDVALIDITY change every UID is new, and the mail is
recognised by its key instead: a mailbox's mail is taken once, whatever its
UIDs become.  A refused mail gets a receipt too (``outcome`` "rejected"), so
it is filed, not screened again.

Receipts are kept like the ``processed`` record: a mail may stay in its
mailbox (``after: seen``) for as long as the mailbox lives.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Receipt:
    #: The mailbox's identity: "user@host/folder".
    source: str
    uidvalidity: int
    uid: int
    #: mailgate.mail.message.ParsedMail.key
    mail_key: str


#: Each statement in SQLite's and PostgreSQL's parameter style.
_RECORD = ("INSERT INTO receipts (source, uidvalidity, uid, mail_key, outcome, reason,"
           " created_at) VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p})"
           " ON CONFLICT (source, uidvalidity, uid) DO NOTHING")
_BY_UID = ("SELECT outcome FROM receipts WHERE source = {p} AND uidvalidity = {p}"
           " AND uid = {p}")
_BY_KEY = ("SELECT outcome FROM receipts WHERE source = {p} AND mail_key = {p}"
           " ORDER BY created_at LIMIT 1")


def _sql(statement: str, backend: str) -> str:
    return statement.format(p="?" if backend == "sqlite" else "%s")


def record(cur, backend: str, receipt: Receipt, outcome: str, reason: str | None = None
           ) -> bool:
    """Write ``receipt`` in the caller's transaction; False if that UID already has one
    (another process took the mail first: the caller must not spool it again)."""
    cur.execute(_sql(_RECORD, backend), (receipt.source, receipt.uidvalidity, receipt.uid,
                                         receipt.mail_key, outcome, reason, time.time()))
    return cur.rowcount == 1


class Receipts:
    """The receipts as a source reads them (``db``: mailgate.store.database.Database)."""

    def __init__(self, db):
        self.db = db

    def by_uid(self, source: str, uidvalidity: int, uid: int) -> str | None:
        """The outcome recorded for this UID ("spooled", "rejected"), or None."""
        rows = self.db.rows(_sql(_BY_UID, self.db.backend), (source, uidvalidity, uid))
        return rows[0][0] if rows else None

    def by_key(self, source: str, mail_key: str) -> str | None:
        """The outcome recorded for this mail from this mailbox under any UID, or None."""
        rows = self.db.rows(_sql(_BY_KEY, self.db.backend), (source, mail_key))
        return rows[0][0] if rows else None

    def refused(self, receipt: Receipt, reason: str) -> None:
        with self.db.transaction() as cur:
            record(cur, self.db.backend, receipt, "rejected", reason[:1000])

    def taken_elsewhere(self, receipt: Receipt) -> None:
        """This UID is a mail already taken under another UID (a UIDVALIDITY change)."""
        with self.db.transaction() as cur:
            record(cur, self.db.backend, receipt, "duplicate")
