"""Discord's durable queue and thread registry, in the store (SQLite or PostgreSQL).

* ``discord_posts``: a post waits here as ``queued`` until it is ``sent`` or
  ``dead`` (dead-lettered, kept with its reason).  At most once per (mail,
  channel): the table has that unique key, so a mail processed twice (a worker
  restart) is queued once.  The one duplicate left is a message Discord saved
  while its answer was lost (a timeout); bot mode closes even that window with
  ``enforce_nonce`` (``QueuedPost.nonce``), webhooks have no such thing.
* ``discord_threads``: each ticket's thread in each channel, and whether
  Redmine has been told about it yet (``announced``).

* ``discord_switch``: a ticket's ``discord-thread`` field, as the Redmine
  watcher last saw it set or cleared (``switch``).  Cleared: nothing is posted
  about the ticket, and its thread is not read (``mailgate.store.discord_reads``).

``claim`` hands out, under a lease, the oldest due post whose ticket has no
older post still waiting, so that a ticket's posts go out in order, and only
the first of them can open the ticket's thread.  Because the registry is in the
shared store, that holds across processes and hosts: a second host waits for
the first post, then finds its thread.  ``due_thread`` leases a thread's
Redmine announcement the same way, so the fields are written once.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

from mailgate.store.connect import connect
from mailgate.store.database import Location

_POST = "id, mail_key, channel, ticket, content, thread_name, created_at, failures"
_THREAD = "channel, ticket, thread_id, created_at, failures"


@dataclass(frozen=True)
class QueuedPost:
    id: int
    mail_key: str
    channel: str
    ticket: int
    content: str
    thread_name: str
    created_at: float
    failures: int

    @property
    def nonce(self) -> str:
        """The same for every attempt of this post (bot mode's duplicate guard)."""
        return hashlib.sha256(f"{self.mail_key}\0{self.channel}".encode()).hexdigest()[:25]


@dataclass(frozen=True)
class PendingThread:
    channel: str
    ticket: int
    thread_id: str
    created_at: float
    failures: int


@dataclass(frozen=True)
class _SQL:
    add: str
    claim: str
    channel_of: str
    thread: str
    add_thread: str
    forget_thread: str
    sent: str
    defer: str
    bury: str
    due_thread: str
    announced: str
    next_due: str


#: The post ``p`` is the first still waiting of its ticket in its channel (same SQL in both).
_FIRST_OF_TICKET = """NOT EXISTS (SELECT 1 FROM discord_posts e
                                      WHERE e.channel = p.channel AND e.ticket = p.ticket
                                        AND e.state = 'queued' AND e.id < p.id)"""
_COUNT_POSTS = "SELECT state, count(*) FROM discord_posts GROUP BY state"
_COUNT_THREADS = "SELECT announced, count(*) FROM discord_threads GROUP BY announced"

SQLITE = _SQL(
    add="INSERT OR IGNORE INTO discord_posts (mail_key, channel, ticket, content,"
        " thread_name, created_at) VALUES (?, ?, ?, ?, ?, ?)",
    claim=f"""UPDATE discord_posts SET lease_until = ?
        WHERE id = (SELECT p.id FROM discord_posts p
                    WHERE p.state = 'queued' AND p.next_attempt_at <= ?
                      AND p.lease_until <= ?
                      AND {_FIRST_OF_TICKET}
                    ORDER BY p.id LIMIT 1)
        RETURNING {_POST}""",
    channel_of="SELECT channel FROM discord_posts WHERE ticket = ? ORDER BY id LIMIT 1",
    thread="SELECT thread_id FROM discord_threads WHERE channel = ? AND ticket = ?",
    # A new thread for the ticket (its old one was deleted) starts afresh.
    add_thread="INSERT OR REPLACE INTO discord_threads (channel, ticket, thread_id,"
               " created_at, announced) VALUES (?, ?, ?, ?, ?)",
    forget_thread="DELETE FROM discord_threads WHERE channel = ? AND ticket = ?"
                  " AND thread_id = ?",
    sent="UPDATE discord_posts SET state='sent', finished_at=?, message_id=?, thread_id=?,"
         " lease_until=0, last_error=NULL WHERE id=?",
    defer="UPDATE discord_posts SET next_attempt_at=?, last_error=?, lease_until=0,"
          " failures = failures + ? WHERE id=?",
    bury="UPDATE discord_posts SET state='dead', last_error=?, finished_at=?, lease_until=0"
         " WHERE id=?",
    due_thread=f"""UPDATE discord_threads SET lease_until = ?
        WHERE rowid = (SELECT rowid FROM discord_threads
                       WHERE announced = 0 AND next_attempt_at <= ? AND lease_until <= ?
                       ORDER BY created_at LIMIT 1)
        RETURNING {_THREAD}""",
    announced="UPDATE discord_threads SET announced=?, last_error=?, next_attempt_at=?,"
              " lease_until=0, failures = failures + ?"
              " WHERE channel=? AND ticket=? AND thread_id=?",
    # An item leased elsewhere is due when its lease ends, and a post waiting for
    # an earlier one of its ticket when that one is: never a busy loop meanwhile.
    next_due=f"""SELECT min(t) FROM (
        SELECT min(max(p.next_attempt_at, p.lease_until)) t FROM discord_posts p
        WHERE p.state = 'queued' AND {_FIRST_OF_TICKET}
        UNION ALL SELECT min(max(next_attempt_at, lease_until)) FROM discord_threads
        WHERE announced = 0)""",
)

POSTGRES = _SQL(
    add="INSERT INTO discord_posts (mail_key, channel, ticket, content, thread_name,"
        " created_at) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (mail_key, channel) DO NOTHING",
    # SKIP LOCKED: hosts claiming at once take different posts, never one twice.
    claim=f"""UPDATE discord_posts SET lease_until = %s
        WHERE id = (SELECT p.id FROM discord_posts p
                    WHERE p.state = 'queued' AND p.next_attempt_at <= %s
                      AND p.lease_until <= %s
                      AND {_FIRST_OF_TICKET}
                    ORDER BY p.id LIMIT 1
                    FOR UPDATE SKIP LOCKED)
        RETURNING {_POST}""",
    channel_of="SELECT channel FROM discord_posts WHERE ticket = %s ORDER BY id LIMIT 1",
    thread="SELECT thread_id FROM discord_threads WHERE channel = %s AND ticket = %s",
    add_thread="INSERT INTO discord_threads (channel, ticket, thread_id, created_at, announced)"
               " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (channel, ticket) DO UPDATE SET"
               " thread_id = EXCLUDED.thread_id, created_at = EXCLUDED.created_at,"
               " announced = EXCLUDED.announced, failures = 0, next_attempt_at = 0,"
               " lease_until = 0, last_error = NULL",
    forget_thread="DELETE FROM discord_threads WHERE channel = %s AND ticket = %s"
                  " AND thread_id = %s",
    sent="UPDATE discord_posts SET state='sent', finished_at=%s, message_id=%s, thread_id=%s,"
         " lease_until=0, last_error=NULL WHERE id=%s",
    defer="UPDATE discord_posts SET next_attempt_at=%s, last_error=%s, lease_until=0,"
          " failures = failures + %s WHERE id=%s",
    bury="UPDATE discord_posts SET state='dead', last_error=%s, finished_at=%s, lease_until=0"
         " WHERE id=%s",
    due_thread=f"""UPDATE discord_threads SET lease_until = %s
        WHERE (channel, ticket) = (SELECT channel, ticket FROM discord_threads
                                   WHERE announced = 0 AND next_attempt_at <= %s
                                     AND lease_until <= %s
                                   ORDER BY created_at LIMIT 1
                                   FOR UPDATE SKIP LOCKED)
        RETURNING {_THREAD}""",
    announced="UPDATE discord_threads SET announced=%s, last_error=%s, next_attempt_at=%s,"
              " lease_until=0, failures = failures + %s"
              " WHERE channel=%s AND ticket=%s AND thread_id=%s",
    next_due=f"""SELECT min(t) FROM (
        SELECT min(greatest(p.next_attempt_at, p.lease_until)) t FROM discord_posts p
        WHERE p.state = 'queued' AND {_FIRST_OF_TICKET}
        UNION ALL SELECT min(greatest(next_attempt_at, lease_until)) FROM discord_threads
        WHERE announced = 0) due""",
)


# The switch, in both dialects ({p}: the parameter).
_SWITCH = {
    "has_thread": "SELECT 1 FROM discord_threads WHERE ticket = {p}",
    "switched_off": "SELECT 1 FROM discord_switch WHERE ticket = {p} AND tracked = 0",
    "switch_row": "SELECT tracked, since, journal_id FROM discord_switch WHERE ticket = {p}",
    "switch": "INSERT INTO discord_switch (ticket, tracked, since, journal_id, changed_at)"
              " VALUES ({p}, {p}, {p}, {p}, {p}) ON CONFLICT (ticket) DO UPDATE SET"
              " tracked = excluded.tracked, since = excluded.since,"
              " journal_id = excluded.journal_id, changed_at = excluded.changed_at",
    # Set again after it was cleared: what was written in between stays unread.
    "resume": "UPDATE discord_reads SET after = CASE WHEN after > {p} THEN after ELSE {p} END"
              " WHERE ticket = {p}",
}


class PostQueue:
    """The fan-out's tables.  Every write is its own durable commit."""

    def __init__(self, where: Location | str | os.PathLike[str]):
        self.db = connect(where)
        self.sql = SQLITE if self.db.backend == "sqlite" else POSTGRES
        mark = "?" if self.db.backend == "sqlite" else "%s"
        self.switch_sql = {name: sql.format(p=mark) for name, sql in _SWITCH.items()}

    # -- the discord-thread field ---------------------------------------------------

    def has_thread(self, ticket: int) -> bool:
        return bool(self.db.rows(self.switch_sql["has_thread"], (ticket,)))

    def switched_off(self, ticket: int) -> bool:
        """Whether the ticket's discord-thread field was cleared (and not set since)."""
        return bool(self.db.rows(self.switch_sql["switched_off"], (ticket,)))

    def switch(self, ticket: int, tracked: bool, since: int, journal_id: int,
               now: float) -> bool:
        """Record the field set (``tracked``) or cleared by journal ``journal_id`` at
        ``since`` (a snowflake); False when a later journal was recorded already.

        Set after being cleared, the ticket's threads are read from ``since`` on: what
        was said while it was cleared is not for Redmine."""
        sql = self.switch_sql
        with self.db.transaction() as cur:
            cur.execute(sql["switch_row"], (ticket,))
            row = cur.fetchone()
            if row is not None and row[2] >= journal_id:
                return False
            resumed = tracked and row is not None and not row[0]
            # A field set by mailgate with its new thread: read the thread from its start.
            mark = since if (resumed or not tracked) else (row[1] if row else 0)
            cur.execute(sql["switch"], (ticket, int(tracked), mark, journal_id, now))
            if resumed:
                cur.execute(sql["resume"], (since, since, ticket))
        return True

    def close(self) -> None:
        self.db.close()

    def add(self, mail_key: str, channel: str, ticket: int, rendered: Any,
            now: float) -> bool:
        """Queue a post (``rendered``: its ``content`` and ``thread_name``); False if this
        mail already has one for this channel."""
        return self.db.change(self.sql.add, (mail_key, channel, ticket, rendered.content,
                                             rendered.thread_name, now)) == 1

    def claim(self, now: float, lease: float) -> QueuedPost | None:
        """The oldest due post whose ticket has no older post still waiting in its channel."""
        rows = self.db.rows(self.sql.claim, (now + lease, now, now))
        return QueuedPost(*rows[0]) if rows else None

    def channel_of(self, ticket: int) -> str | None:
        """The channel a ticket's posts went to first (for events that name no site)."""
        rows = self.db.rows(self.sql.channel_of, (ticket,))
        return rows[0][0] if rows else None

    def thread(self, channel: str, ticket: int) -> str | None:
        rows = self.db.rows(self.sql.thread, (channel, ticket))
        return rows[0][0] if rows else None

    def add_thread(self, channel: str, ticket: int, thread_id: str, now: float,
                   announced: bool) -> None:
        self.db.change(self.sql.add_thread, (channel, ticket, thread_id, now, int(announced)))

    def forget_thread(self, channel: str, ticket: int, thread_id: str) -> None:
        self.db.change(self.sql.forget_thread, (channel, ticket, thread_id))

    def sent(self, post: QueuedPost, posted: Any, now: float,
             new_thread: bool = False, announced: bool = True) -> None:
        """Mark a post delivered (``posted``: Discord's ``message_id`` and ``channel_id``),
        and record the thread it created in the same commit.

        One transaction, so that a crash cannot leave a delivered thread-starting
        post queued (it would open a second thread for the ticket).
        """
        with self.db.transaction() as cur:
            if new_thread:
                cur.execute(self.sql.add_thread, (post.channel, post.ticket, posted.channel_id,
                                                  now, int(announced)))
            cur.execute(self.sql.sent, (now, posted.message_id, posted.channel_id, post.id))

    def defer(self, post: QueuedPost, error: str, until: float, failed: bool) -> None:
        self.db.change(self.sql.defer, (until, error, int(failed), post.id))

    def bury(self, post: QueuedPost, error: str, now: float) -> None:
        """Dead-letter a post: kept with its reason; the ticket's next post moves up."""
        self.db.change(self.sql.bury, (error, now, post.id))

    def due_thread(self, now: float, lease: float = 60.0) -> PendingThread | None:
        """A thread whose Redmine fields are due, leased to this caller for ``lease`` s."""
        rows = self.db.rows(self.sql.due_thread, (now + lease, now, now))
        return PendingThread(*rows[0]) if rows else None

    def announced(self, pending: PendingThread, state: int = 1, error: str | None = None,
                  until: float = 0.0) -> None:
        """``state`` 1: done; -1: given up; 0: failed, try again at ``until``."""
        self.db.change(self.sql.announced, (state, error, until, int(state != 1),
                                            pending.channel, pending.ticket,
                                            pending.thread_id))

    def next_due(self) -> float | None:
        return self.db.rows(self.sql.next_due)[0][0]

    def counts(self) -> dict[str, int]:
        posts = dict(self.db.rows(_COUNT_POSTS))
        threads = dict(self.db.rows(_COUNT_THREADS))
        return {"queued": posts.get("queued", 0), "sent": posts.get("sent", 0),
                "dead": posts.get("dead", 0), "threads": sum(threads.values()),
                "threads_unannounced": threads.get(0, 0)}
