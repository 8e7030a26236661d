"""Discord threads read back into Redmine (issue 14), in the store (SQLite or PostgreSQL).

* ``discord_reads``: each tracked thread, with its watermark (``after``: the
  newest message id read, a snowflake), when it is next read, and a lease on
  the read, so that the hosts sharing a store take turns.  A thread is tracked
  when it is in the thread registry (``discord_threads``) with its Redmine
  fields set (``announced``), and its ticket's ``discord-thread`` field has not
  been cleared since (``discord_switch``, kept by ``mailgate.store.discord``).
  ``sync`` adds the registry's new threads; one read from before reading was
  first turned on starts at that moment (``discord_read_state.started``), not
  at the thread's first message: old conversations are history.
* ``discord_messages``: each message a read found, keyed by Discord's message
  id.  The key is the claim: a message read again (a read repeated after a
  crash, another host's read) is not added again, so each becomes at most one
  note.  It waits as ``queued`` until it is applied (``done``) or given up on
  (``dead``), under a lease like every durable queue's items.  A page of
  messages and the watermark past it are one commit.

Every method is one durable commit.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any

from mailgate.store.connect import connect
from mailgate.store.database import Location

#: Milliseconds of the Discord epoch (2015-01-01): snowflakes count from it.
DISCORD_EPOCH_MS = 1420070400000
#: Reading first turned on starts this long before: Discord's clock and ours may differ.
START_MARGIN = 60.0


def snowflake_at(moment: float) -> int:
    """The smallest snowflake of ``moment`` (time.time()): every message written at or
    after it has a greater id (https://discord.com/developers/docs/reference#snowflakes)."""
    return max(0, int(moment * 1000) - DISCORD_EPOCH_MS) << 22


@dataclass(frozen=True)
class ThreadRead:
    """A tracked thread due to be read (a queue item of ``mailgate.runner``)."""

    thread_id: str
    ticket: int
    #: The newest message id read so far.
    after: int
    failures: int
    #: A read is never too old to retry: it starts afresh from the watermark.
    created_at: float

    @property
    def id(self) -> str:
        return f"thread {self.thread_id} of #{self.ticket}"


@dataclass(frozen=True)
class ReadMessage:
    """A message read from a thread, waiting to become a note (a queue item)."""

    id: int                     # Discord's message id
    thread_id: str
    ticket: int
    #: The message as Discord answered it (the fields mailgate reads).
    message: dict
    created_at: float
    failures: int


#: The read ``r`` is tracked: its thread is the ticket's current one, with its Redmine
#: fields set, and the ticket's discord-thread field not cleared since.
_TRACKED = ("r.gone = 0 AND EXISTS (SELECT 1 FROM discord_threads t"
            " WHERE t.thread_id = r.thread_id AND t.announced = 1)"
            " AND NOT EXISTS (SELECT 1 FROM discord_switch s"
            " WHERE s.ticket = r.ticket AND s.tracked = 0)")

# Each statement in both dialects: {p} is the parameter, {skip} PostgreSQL's way of
# passing over rows another host is claiming, {max} the larger of two values.
_SQL = {
    "ensure": "INSERT INTO discord_read_state (name, started) VALUES ('discord', {p})"
              " ON CONFLICT (name) DO NOTHING",
    "started": "SELECT started FROM discord_read_state WHERE name = 'discord'",
    # The registry's new threads.  A thread starts after its own id (a forum post's
    # first message has the thread's id, and is ours), after reading started, and
    # after a cleared field was set again (discord_switch.since).
    "sync": "INSERT INTO discord_reads (thread_id, ticket, after, created_at)"
            " SELECT t.thread_id, t.ticket, {max}({max}(CAST(t.thread_id AS {int}), {p}),"
            " COALESCE((SELECT s.since FROM discord_switch s WHERE s.ticket = t.ticket"
            " AND s.tracked = 1), 0)), {p} FROM discord_threads t WHERE t.announced = 1"
            " AND NOT EXISTS (SELECT 1 FROM discord_reads r WHERE r.thread_id = t.thread_id)"
            " ON CONFLICT (thread_id) DO NOTHING",
    "claim_read": "UPDATE discord_reads SET lease_until = {p} WHERE thread_id = ("
                  f"SELECT r.thread_id FROM discord_reads r WHERE {_TRACKED}"
                  " AND r.lease_until <= {p} AND r.next_poll_at <= {p}"
                  " ORDER BY r.next_poll_at LIMIT 1{skip})"
                  " RETURNING thread_id, ticket, after, failures",
    "renew_read": "UPDATE discord_reads SET lease_until = {p} WHERE thread_id = {p}"
                  " AND lease_until > 0",
    "page_after": "UPDATE discord_reads SET after = {max}(after, {p}) WHERE thread_id = {p}",
    "read_done": "UPDATE discord_reads SET next_poll_at = {p}, lease_until = 0, failures = 0,"
                 " last_error = NULL, polled_at = {p} WHERE thread_id = {p}",
    "read_failed": "UPDATE discord_reads SET next_poll_at = {p}, lease_until = 0,"
                   " failures = failures + {p}, last_error = {p} WHERE thread_id = {p}",
    "gone": "UPDATE discord_reads SET gone = 1, lease_until = 0, last_error = {p}"
            " WHERE thread_id = {p}",
    # Not one waiting out a 429 or an outage: that wait is Discord's word.
    "all_due": f"UPDATE discord_reads SET next_poll_at = 0 WHERE last_error IS NULL AND"
               f" thread_id IN (SELECT r.thread_id FROM discord_reads r WHERE {_TRACKED})",
    "read": "SELECT ticket, after, failures, last_error, polled_at, gone FROM discord_reads"
            " WHERE thread_id = {p}",
    "add": "INSERT INTO discord_messages (message_id, thread_id, ticket, message, created_at)"
           " VALUES ({p}, {p}, {p}, {p}, {p}) ON CONFLICT (message_id) DO NOTHING",
    # The oldest due message whose ticket has no older one waiting: a ticket's notes
    # are written in the order they were said.
    "claim": "UPDATE discord_messages SET lease_until = {p} WHERE message_id = ("
             "SELECT m.message_id FROM discord_messages m WHERE m.state = 'queued'"
             " AND m.next_attempt_at <= {p} AND m.lease_until <= {p}"
             " AND NOT EXISTS (SELECT 1 FROM discord_messages e WHERE e.ticket = m.ticket"
             " AND e.state = 'queued' AND e.message_id < m.message_id)"
             " ORDER BY m.message_id LIMIT 1{skip})"
             " RETURNING message_id, thread_id, ticket, message, created_at, failures",
    "renew": "UPDATE discord_messages SET lease_until = {p} WHERE message_id = {p}"
             " AND state = 'queued' AND lease_until > 0",
    "done": "UPDATE discord_messages SET state = 'done', outcome = {p}, finished_at = {p},"
            " lease_until = 0, last_error = NULL WHERE message_id = {p}",
    "defer": "UPDATE discord_messages SET next_attempt_at = {p}, last_error = {p},"
             " lease_until = 0, failures = failures + {p} WHERE message_id = {p}",
    "bury": "UPDATE discord_messages SET state = 'dead', last_error = {p}, finished_at = {p},"
            " lease_until = 0 WHERE message_id = {p}",
    "message": "SELECT state, outcome, last_error, ticket FROM discord_messages"
               " WHERE message_id = {p}",
    "message_due": "SELECT min(CASE WHEN next_attempt_at > lease_until THEN next_attempt_at"
                   " ELSE lease_until END) FROM discord_messages WHERE state = 'queued'",
    "read_due": "SELECT min(CASE WHEN r.next_poll_at > r.lease_until THEN r.next_poll_at"
                f" ELSE r.lease_until END) FROM discord_reads r WHERE {_TRACKED}",
    "counts": "SELECT state, count(*) FROM discord_messages GROUP BY state",
    "tracked": f"SELECT count(*) FROM discord_reads r WHERE {_TRACKED}",
}


def _dialect(backend: str) -> dict[str, str]:
    postgres = backend != "sqlite"
    return {name: sql.format(p="%s" if postgres else "?",
                             skip=" FOR UPDATE SKIP LOCKED" if postgres else "",
                             max="greatest" if postgres else "max",
                             int="BIGINT" if postgres else "INTEGER")
            for name, sql in _SQL.items()}


class ThreadReads:
    """``discord_reads`` and ``discord_messages``, through a connection of their own."""

    def __init__(self, where: Location | str | os.PathLike[str], *,
                 now: float | None = None):
        self.db = connect(where)
        self.sql = _dialect(self.db.backend)
        moment = time.time() if now is None else now
        self.db.change(self.sql["ensure"], (snowflake_at(moment - START_MARGIN),))
        #: Reading was first turned on then: threads from before start reading here.
        self.started = int(self.db.rows(self.sql["started"])[0][0])

    def close(self) -> None:
        self.db.close()

    # -- the threads --------------------------------------------------------------

    def sync(self, now: float) -> int:
        """Track the registry's threads not tracked yet; how many were added."""
        return self.db.change(self.sql["sync"], (self.started, now))

    def claim_read(self, now: float, lease: float) -> ThreadRead | None:
        """A tracked thread due to be read that no other process is reading."""
        rows = self.db.rows(self.sql["claim_read"], (now + lease, now, now))
        if not rows:
            return None
        thread_id, ticket, after, failures = rows[0]
        return ThreadRead(thread_id, ticket, int(after), failures, now)

    def renew_read(self, thread_id: str, until: float) -> None:
        self.db.change(self.sql["renew_read"], (until, thread_id))

    def add_page(self, thread_id: str, ticket: int, messages: list[dict], last_id: int,
                 now: float) -> int:
        """Queue ``messages`` (those to apply, of a page read up to ``last_id``) and move
        the thread's watermark past the page, in one commit; how many were new."""
        added = 0
        with self.db.transaction() as cur:
            for message in messages:
                cur.execute(self.sql["add"], (int(message["id"]), thread_id, ticket,
                                              json.dumps(message), now))
                added += max(cur.rowcount, 0)
            cur.execute(self.sql["page_after"], (last_id, thread_id))
        return added

    def read_done(self, thread_id: str, next_read: float, now: float) -> None:
        self.db.change(self.sql["read_done"], (next_read, now, thread_id))

    def read_failed(self, thread_id: str, error: str, until: float, failed: bool) -> None:
        """The watermark stays: the next read starts where this one stopped."""
        self.db.change(self.sql["read_failed"], (until, 1 if failed else 0, error[:1000],
                                                 thread_id))

    def gone(self, thread_id: str, error: str) -> None:
        """Discord no longer has the thread: it is not read again."""
        self.db.change(self.sql["gone"], (error[:1000], thread_id))

    def all_due(self) -> None:
        """Every tracked thread due now (the one-shot ``mailgate worker`` reads them all),
        but those waiting out a rate limit or an outage."""
        self.db.change(self.sql["all_due"])

    def read(self, thread_id: str) -> dict[str, Any] | None:
        """A thread's row, for people and tests."""
        rows = self.db.rows(self.sql["read"], (thread_id,))
        keys = ("ticket", "after", "failures", "last_error", "polled_at", "gone")
        return dict(zip(keys, rows[0])) if rows else None

    # -- the messages -------------------------------------------------------------

    def claim(self, now: float, lease: float) -> ReadMessage | None:
        rows = self.db.rows(self.sql["claim"], (now + lease, now, now))
        if not rows:
            return None
        message_id, thread_id, ticket, message, created_at, failures = rows[0]
        return ReadMessage(int(message_id), thread_id, ticket, json.loads(message), created_at,
                           failures)

    def renew(self, message_id: int, until: float) -> None:
        self.db.change(self.sql["renew"], (until, message_id))

    def done(self, message_id: int, outcome: dict, now: float) -> None:
        self.db.change(self.sql["done"], (json.dumps(outcome), now, message_id))

    def defer(self, message_id: int, error: str, until: float, failed: bool) -> None:
        self.db.change(self.sql["defer"], (until, error[:1000], 1 if failed else 0,
                                           message_id))

    def bury(self, message_id: int, error: str, now: float) -> None:
        self.db.change(self.sql["bury"], (error[:1000], now, message_id))

    def message(self, message_id: int | str) -> dict | None:
        """What became of one message: state, outcome, last error (None: never read)."""
        rows = self.db.rows(self.sql["message"], (int(message_id),))
        if not rows:
            return None
        state, outcome, error, ticket = rows[0]
        return {"state": state, "outcome": json.loads(outcome) if outcome else None,
                "last_error": error, "ticket": ticket}

    # -- for the runner --------------------------------------------------------------

    def next_due(self) -> float | None:
        """When a message or a thread's read is due next (None: nothing waits)."""
        times = [self.db.rows(self.sql[name])[0][0] for name in ("message_due", "read_due")]
        times = [t for t in times if t is not None]
        return min(times) if times else None

    def counts(self) -> dict[str, int]:
        counts = {"queued": 0, "done": 0, "dead": 0}
        counts.update(dict(self.db.rows(self.sql["counts"])))
        counts["threads"] = self.db.rows(self.sql["tracked"])[0][0]
        return counts
