"""The fan-out's durable queue: in the spool's SQLite file, with its own tables and connection.

* ``discord_posts``: a post waits here as ``queued`` until it is ``sent`` or
  ``dead`` (dead-lettered, kept with its reason).  At most once per (mail,
  channel): the table has that unique key, so a mail processed twice (a worker
  restart) is queued once.  The one duplicate left is a message Discord saved
  while its answer was lost (a timeout); bot mode closes even that window with
  ``enforce_nonce`` (``QueuedPost.nonce``), webhooks have no such thing.
* ``discord_threads``: each ticket's thread in each channel, and whether
  Redmine has been told about it yet (``announced``).

``claim`` hands out, under a lease, the oldest due post whose ticket has no
older post still waiting, so that a ticket's posts go out in order.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from mailgate.clients.discord import Posted
from mailgate.outbound.fanout.rendering import Rendered
from mailgate.store.sqlite import Tables

SCHEMA = """
CREATE TABLE IF NOT EXISTS discord_posts (
    id INTEGER PRIMARY KEY,                 -- also the order of a ticket's posts
    mail_key TEXT NOT NULL,
    channel TEXT NOT NULL,                  -- Destination.key
    ticket INTEGER NOT NULL,
    content TEXT NOT NULL,
    thread_name TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'queued',   -- queued, sent, dead
    created_at REAL NOT NULL,
    failures INTEGER NOT NULL DEFAULT 0,    -- rate limits are not failures
    next_attempt_at REAL NOT NULL DEFAULT 0,
    lease_until REAL NOT NULL DEFAULT 0,
    last_error TEXT,
    finished_at REAL,
    message_id TEXT,
    thread_id TEXT,
    UNIQUE (mail_key, channel)
);
CREATE INDEX IF NOT EXISTS discord_posts_due ON discord_posts (state, next_attempt_at);
CREATE INDEX IF NOT EXISTS discord_posts_ticket ON discord_posts (channel, ticket, state);
CREATE TABLE IF NOT EXISTS discord_threads (
    channel TEXT NOT NULL,
    ticket INTEGER NOT NULL,
    thread_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    announced INTEGER NOT NULL DEFAULT 0,   -- 1: on_thread_created done; -1: given up
    failures INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    last_error TEXT,
    PRIMARY KEY (channel, ticket)
);
"""

_POST = "id, mail_key, channel, ticket, content, thread_name, created_at, failures"


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


class PostQueue(Tables):
    """The fan-out's tables.  Every write is its own durable commit (WAL, synchronous=FULL)."""

    def __init__(self, path: str | Path):
        super().__init__(path, SCHEMA)

    def add(self, mail_key: str, channel: str, ticket: int, rendered: Rendered,
            now: float) -> bool:
        """Queue a post; False if this mail already has one for this channel."""
        return self._change(
            "INSERT OR IGNORE INTO discord_posts (mail_key, channel, ticket, content,"
            " thread_name, created_at) VALUES (?,?,?,?,?,?)",
            (mail_key, channel, ticket, rendered.content, rendered.thread_name, now)) == 1

    def claim(self, now: float, lease: float) -> QueuedPost | None:
        """The oldest due post whose ticket has no older post still waiting in its channel."""
        rows = self._run(
            f"""UPDATE discord_posts SET lease_until = ?
                WHERE id = (SELECT p.id FROM discord_posts p
                            WHERE p.state = 'queued' AND p.next_attempt_at <= ?
                              AND p.lease_until <= ?
                              AND NOT EXISTS (SELECT 1 FROM discord_posts e
                                              WHERE e.channel = p.channel
                                                AND e.ticket = p.ticket
                                                AND e.state = 'queued' AND e.id < p.id)
                            ORDER BY p.id LIMIT 1)
                RETURNING {_POST}""", (now + lease, now, now))
        return QueuedPost(*rows[0]) if rows else None

    def channel_of(self, ticket: int) -> str | None:
        """The channel a ticket's posts went to first (for events that name no site)."""
        rows = self._run("SELECT channel FROM discord_posts WHERE ticket = ? ORDER BY id LIMIT 1",
                         (ticket,))
        return rows[0][0] if rows else None

    def thread(self, channel: str, ticket: int) -> str | None:
        rows = self._run("SELECT thread_id FROM discord_threads WHERE channel=? AND ticket=?",
                         (channel, ticket))
        return rows[0][0] if rows else None

    def add_thread(self, channel: str, ticket: int, thread_id: str, now: float,
                   announced: bool) -> None:
        self._change("INSERT OR REPLACE INTO discord_threads (channel, ticket, thread_id,"
                     " created_at, announced) VALUES (?,?,?,?,?)",
                     (channel, ticket, thread_id, now, 1 if announced else 0))

    def forget_thread(self, channel: str, ticket: int, thread_id: str) -> None:
        self._change("DELETE FROM discord_threads WHERE channel=? AND ticket=? AND thread_id=?",
                     (channel, ticket, thread_id))

    def sent(self, post: QueuedPost, posted: Posted, now: float,
             new_thread: bool = False, announced: bool = True) -> None:
        """Mark a post delivered, and record the thread it created in the same commit.

        One transaction, so that a crash cannot leave a delivered thread-starting
        post queued (it would open a second thread for the ticket).
        """
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if new_thread:
                    self._db.execute(
                        "INSERT OR REPLACE INTO discord_threads (channel, ticket, thread_id,"
                        " created_at, announced) VALUES (?,?,?,?,?)",
                        (post.channel, post.ticket, posted.channel_id, now, int(announced)))
                self._db.execute(
                    "UPDATE discord_posts SET state='sent', finished_at=?, message_id=?,"
                    " thread_id=?, lease_until=0, last_error=NULL WHERE id=?",
                    (now, posted.message_id, posted.channel_id, post.id))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def defer(self, post: QueuedPost, error: str, until: float, failed: bool) -> None:
        self._change("UPDATE discord_posts SET next_attempt_at=?, last_error=?, lease_until=0,"
                     " failures = failures + ? WHERE id=?", (until, error, int(failed), post.id))

    def bury(self, post: QueuedPost, error: str, now: float) -> None:
        """Dead-letter a post: kept with its reason; the ticket's next post moves up."""
        self._change("UPDATE discord_posts SET state='dead', last_error=?, finished_at=?,"
                     " lease_until=0 WHERE id=?", (error, now, post.id))

    def due_thread(self, now: float) -> PendingThread | None:
        rows = self._run("SELECT channel, ticket, thread_id, created_at, failures"
                         " FROM discord_threads WHERE announced = 0 AND next_attempt_at <= ?"
                         " ORDER BY created_at LIMIT 1", (now,))
        return PendingThread(*rows[0]) if rows else None

    def announced(self, pending: PendingThread, state: int = 1, error: str | None = None,
                  until: float = 0.0) -> None:
        """``state`` 1: done; -1: given up; 0: failed, try again at ``until``."""
        self._change("UPDATE discord_threads SET announced=?, last_error=?, next_attempt_at=?,"
                     " failures = failures + ? WHERE channel=? AND ticket=? AND thread_id=?",
                     (state, error, until, int(state != 1), pending.channel, pending.ticket,
                      pending.thread_id))

    def next_due(self) -> float | None:
        return self._run("SELECT min(t) FROM (SELECT min(next_attempt_at) t FROM discord_posts"
                         " WHERE state='queued' UNION ALL SELECT min(next_attempt_at)"
                         " FROM discord_threads WHERE announced=0)")[0][0]

    def counts(self) -> dict[str, int]:
        posts = dict(self._run("SELECT state, count(*) FROM discord_posts GROUP BY state"))
        threads = dict(self._run("SELECT announced, count(*) FROM discord_threads"
                                 " GROUP BY announced"))
        return {"queued": posts.get("queued", 0), "sent": posts.get("sent", 0),
                "dead": posts.get("dead", 0), "threads": sum(threads.values()),
                "threads_unannounced": threads.get(0, 0)}
