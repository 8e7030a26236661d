"""Retention: what is finished is deleted after ``spool.keep_done_days`` (the sweep).

* done mails, and their bodies once no recipient's row points at them;
* sent Discord posts (the thread registry stays: a ticket keeps its thread);
* sent and dead notices (their once-a-day record is the notifier's, kept a week);
* journals the Redmine watcher has told (a poll never finds them again: it
  looks only at journals written since its watermark), and Discord messages
  written in Redmine (a thread is read only past its watermark).

Dead mail is kept whatever its age: an operator must look at it
(``mailgate spool list --state dead``), and dead Discord posts likewise.  The
``processed`` record is kept too: it is what makes a mail delivered again
months later a duplicate rather than a second note.

Deletes go in batches, each its own transaction, so that a first purge of a
large store does not hold SQLite's write lock (and every incoming mail) for
long.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailgate.store.database import Database

#: Rows deleted per transaction.
BATCH = 500


@dataclass(frozen=True)
class _PurgeSQL:
    #: Each takes (before, batch) and returns what it deleted.
    mails: str
    posts: str
    notices: str
    journals: str
    discord_messages: str
    #: Takes (body, body); None where bodies are kept in their rows.
    orphan_body: str | None


SQLITE_ORPHAN_BODY = ("DELETE FROM bodies WHERE id = ? AND NOT EXISTS"
                      " (SELECT 1 FROM messages WHERE body_id = ?)")

SQLITE = _PurgeSQL(
    mails="DELETE FROM messages WHERE id IN (SELECT id FROM messages WHERE state = 'done'"
          " AND finished_at < ? LIMIT ?) RETURNING body_id",
    posts="DELETE FROM discord_posts WHERE id IN (SELECT id FROM discord_posts"
          " WHERE state = 'sent' AND finished_at < ? LIMIT ?) RETURNING id",
    notices="DELETE FROM notice_outbox WHERE id IN (SELECT id FROM notice_outbox"
            " WHERE state IN ('sent', 'dead') AND finished_at < ? LIMIT ?) RETURNING id",
    journals="DELETE FROM watch_journals WHERE journal_id IN (SELECT journal_id FROM"
             " watch_journals WHERE state = 'done' AND finished_at < ? LIMIT ?)"
             " RETURNING journal_id",
    discord_messages="DELETE FROM discord_messages WHERE message_id IN (SELECT message_id"
                     " FROM discord_messages WHERE state = 'done' AND finished_at < ?"
                     " LIMIT ?) RETURNING message_id",
    orphan_body=SQLITE_ORPHAN_BODY,
)

POSTGRES = _PurgeSQL(
    mails="DELETE FROM messages WHERE id IN (SELECT id FROM messages WHERE state = 'done'"
          " AND finished_at < %s LIMIT %s) RETURNING body_id",
    posts="DELETE FROM discord_posts WHERE id IN (SELECT id FROM discord_posts"
          " WHERE state = 'sent' AND finished_at < %s LIMIT %s) RETURNING id",
    notices="DELETE FROM notice_outbox WHERE id IN (SELECT id FROM notice_outbox"
            " WHERE state IN ('sent', 'dead') AND finished_at < %s LIMIT %s) RETURNING id",
    journals="DELETE FROM watch_journals WHERE journal_id IN (SELECT journal_id FROM"
             " watch_journals WHERE state = 'done' AND finished_at < %s LIMIT %s)"
             " RETURNING journal_id",
    discord_messages="DELETE FROM discord_messages WHERE message_id IN (SELECT message_id"
                     " FROM discord_messages WHERE state = 'done' AND finished_at < %s"
                     " LIMIT %s) RETURNING message_id",
    # PostgreSQL keeps the mail in its messages row.
    orphan_body=None,
)


def purge(db: Database, before: float, batch: int = BATCH) -> dict[str, int]:
    """Delete what finished before ``before`` (time.time()); returns how many of each."""
    sql = SQLITE if db.backend == "sqlite" else POSTGRES
    purged = {"mails": 0, "bodies": 0, "posts": 0, "notices": 0, "journals": 0,
              "discord_messages": 0}
    for kind, statement in (("mails", sql.mails), ("posts", sql.posts),
                            ("notices", sql.notices), ("journals", sql.journals),
                            ("discord_messages", sql.discord_messages)):
        while True:
            with db.transaction() as cur:
                deleted = cur.execute(statement, (before, batch)).fetchall()
                if kind == "mails":
                    purged["bodies"] += _orphans(cur, sql, deleted)
            purged[kind] += len(deleted)
            if len(deleted) < batch:
                break
    return purged


def _orphans(cur, sql: _PurgeSQL, deleted: list[tuple]) -> int:
    """Delete the bodies of deleted mails that no other row points at."""
    count = 0
    for body in {row[0] for row in deleted if row[0] is not None}:
        if sql.orphan_body is not None:
            cur.execute(sql.orphan_body, (body, body))
            count += cur.rowcount
    return count
