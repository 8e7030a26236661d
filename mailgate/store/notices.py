"""The notices to senders, in the store (SQLite or PostgreSQL): two tables.

* ``notices``: who was told what, per UTC day: at most one notice per
  (recipient, kind of problem, day).  Its primary key is the guard, so two
  processes or hosts deciding the same notice at once queue it once.
* ``notice_outbox``: each notice, rendered once, waiting as ``queued`` until
  the relay took it (``sent``) or it was given up on (``dead``).

Answers to reporters (``mailgate.outbound.answers``) go through the same
outbox and relay, as kind ``answer``.  They are not once a day: their guard
row in ``notices`` is (recipient, ``answer:<journal id>``, the journal's day),
so each journal is mailed to each recipient once, however often it is found.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from mailgate.store.connect import connect
from mailgate.store.database import Location


@dataclass(frozen=True)
class Outgoing:
    id: int
    recipient: str
    reason_kind: str
    message: bytes
    created_at: float
    failures: int
    #: The envelope sender: "" (the null reverse path) for notices.
    mail_from: str = ""


#: The outbox's kind for answers (mailgate.outbound.answers).
ANSWER = "answer"


def utc_day(now: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(now))


@dataclass(frozen=True)
class _SQL:
    told: str
    queue: str
    claim: str
    sent: str
    defer: str
    bury: str
    forget_before: str
    next_due: str
    queued_since: str
    queue_from: str
    answers_since: str


_COUNTS = "SELECT state, count(*) FROM notice_outbox GROUP BY state"

SQLITE = _SQL(
    told="INSERT OR IGNORE INTO notices (sender, reason_kind, day, sent_at) VALUES (?, ?, ?, ?)",
    queue="INSERT INTO notice_outbox (recipient, reason_kind, message, created_at)"
          " VALUES (?, ?, ?, ?)",
    claim="UPDATE notice_outbox SET lease_until=? WHERE id = (SELECT id FROM notice_outbox"
          " WHERE state='queued' AND next_attempt_at <= ? AND lease_until <= ?"
          " ORDER BY id LIMIT 1)"
          " RETURNING id, recipient, reason_kind, message, created_at, failures, mail_from",
    sent="UPDATE notice_outbox SET state='sent', finished_at=?, lease_until=0,"
         " last_error=NULL WHERE id=?",
    defer="UPDATE notice_outbox SET next_attempt_at=?, last_error=?, lease_until=0,"
          " failures = failures + 1 WHERE id=?",
    bury="UPDATE notice_outbox SET state='dead', last_error=?, finished_at=?, lease_until=0"
         " WHERE id=?",
    forget_before="DELETE FROM notices WHERE day < ?",
    # A notice leased elsewhere is due when its lease ends, not before.
    next_due="SELECT min(max(next_attempt_at, lease_until)) FROM notice_outbox"
             " WHERE state='queued'",
    queued_since="SELECT count(*) FROM notice_outbox WHERE created_at >= ?"
                 " AND reason_kind <> 'answer'",
    queue_from="INSERT INTO notice_outbox (recipient, reason_kind, message, created_at,"
               " mail_from) VALUES (?, ?, ?, ?, ?)",
    answers_since="SELECT count(*) FROM notice_outbox WHERE lower(recipient) = ?"
                  " AND reason_kind = 'answer' AND created_at >= ?",
)

POSTGRES = _SQL(
    told="INSERT INTO notices (sender, reason_kind, day, sent_at) VALUES (%s, %s, %s, %s)"
         " ON CONFLICT (sender, reason_kind, day) DO NOTHING",
    queue="INSERT INTO notice_outbox (recipient, reason_kind, message, created_at)"
          " VALUES (%s, %s, %s, %s)",
    # SKIP LOCKED: hosts claiming at once take different notices, never one twice.
    claim="UPDATE notice_outbox SET lease_until=%s WHERE id = (SELECT id FROM notice_outbox"
          " WHERE state='queued' AND next_attempt_at <= %s AND lease_until <= %s"
          " ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)"
          " RETURNING id, recipient, reason_kind, message, created_at, failures, mail_from",
    sent="UPDATE notice_outbox SET state='sent', finished_at=%s, lease_until=0,"
         " last_error=NULL WHERE id=%s",
    defer="UPDATE notice_outbox SET next_attempt_at=%s, last_error=%s, lease_until=0,"
          " failures = failures + 1 WHERE id=%s",
    bury="UPDATE notice_outbox SET state='dead', last_error=%s, finished_at=%s,"
         " lease_until=0 WHERE id=%s",
    forget_before="DELETE FROM notices WHERE day < %s",
    next_due="SELECT min(greatest(next_attempt_at, lease_until)) FROM notice_outbox"
             " WHERE state='queued'",
    queued_since="SELECT count(*) FROM notice_outbox WHERE created_at >= %s"
                 " AND reason_kind <> 'answer'",
    queue_from="INSERT INTO notice_outbox (recipient, reason_kind, message, created_at,"
               " mail_from) VALUES (%s, %s, %s, %s, %s)",
    answers_since="SELECT count(*) FROM notice_outbox WHERE lower(recipient) = %s"
                  " AND reason_kind = 'answer' AND created_at >= %s",
)


class NoticeStore:
    """``notices`` and ``notice_outbox``.  Every write is its own durable commit."""

    def __init__(self, where: Location | str | os.PathLike[str]):
        self.db = connect(where)
        self.sql = SQLITE if self.db.backend == "sqlite" else POSTGRES

    def close(self) -> None:
        self.db.close()

    def add(self, notice: Any, message: bytes, now: float) -> bool:
        """Queue ``message`` for ``notice`` (its ``to`` and ``reason_kind``), unless this
        recipient was told of this kind today."""
        with self.db.transaction() as cur:
            cur.execute(self.sql.told, (notice.to.lower(), notice.reason_kind, utc_day(now), now))
            told = cur.rowcount == 1
            if told:
                cur.execute(self.sql.queue, (notice.to, notice.reason_kind, message, now))
        return told

    def add_answer(self, recipient: str, journal_id: int, day: str, message: bytes,
                   mail_from: str, now: float) -> bool:
        """Queue the answer mail of journal ``journal_id`` to ``recipient``, sent from
        ``mail_from``; False when it was queued before (``day``: the journal's)."""
        with self.db.transaction() as cur:
            cur.execute(self.sql.told, (recipient.lower(), f"{ANSWER}:{journal_id}", day, now))
            told = cur.rowcount == 1
            if told:
                cur.execute(self.sql.queue_from, (recipient, ANSWER, message, now, mail_from))
        return told

    def answers_since(self, recipient: str, since: float) -> int:
        """Answers queued to ``recipient`` from ``since`` on, by every host."""
        return self.db.rows(self.sql.answers_since, (recipient.lower(), since))[0][0]

    def claim(self, now: float, lease: float) -> Outgoing | None:
        rows = self.db.rows(self.sql.claim, (now + lease, now, now))
        if not rows:
            return None
        row = rows[0]
        return Outgoing(row[0], row[1], row[2], bytes(row[3]), row[4], row[5], row[6] or "")

    def sent(self, item: Outgoing, now: float) -> None:
        self.db.change(self.sql.sent, (now, item.id))

    def defer(self, item: Outgoing, error: str, until: float) -> None:
        self.db.change(self.sql.defer, (until, error, item.id))

    def bury(self, item: Outgoing, error: str, now: float) -> None:
        self.db.change(self.sql.bury, (error, now, item.id))

    def forget_before(self, day: str) -> None:
        """Drop the once-a-day record of days before ``day`` (YYYY-MM-DD)."""
        self.db.change(self.sql.forget_before, (day,))

    def next_due(self) -> float | None:
        return self.db.rows(self.sql.next_due)[0][0]

    def queued_since(self, since: float) -> int:
        """Notices queued from ``since`` on (time.time()), by every host (answers are
        people's words, limited per recipient: they do not count here)."""
        return self.db.rows(self.sql.queued_since, (since,))[0][0]

    def counts(self) -> dict[str, int]:
        return dict(self.db.rows(_COUNTS))
