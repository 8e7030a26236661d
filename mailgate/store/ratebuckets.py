"""The rate limits' token buckets, in the store (SQLite or PostgreSQL).

One row per key (a sender, a client): its tokens and when they were counted.
``take`` reads, refills and takes a token in one transaction, so processes and
hosts sharing the store share each sender's bucket: ``pipe`` beside ``serve``,
or every host of a PostgreSQL store.  The arithmetic is the limit's
(``mailgate.intake.ratelimit.Limit``); this module only keeps the numbers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from mailgate.store.connect import connect
from mailgate.store.database import Location

#: Full buckets deleted per ``take``: keeps each transaction short.
CLEAN_BATCH = 100


@dataclass(frozen=True)
class _SQL:
    #: Makes the key's row exist and be ours until the commit, or "" when the
    #: transaction already excludes every other writer.
    hold: str
    read: str
    write: str
    clean: str


SQLITE = _SQL(
    # BEGIN IMMEDIATE (SqliteDatabase.transaction) already holds the file's write lock.
    hold="",
    read="SELECT tokens, updated_at FROM rate_buckets WHERE key = ?",
    write="INSERT INTO rate_buckets (key, tokens, updated_at) VALUES (?, ?, ?)"
          " ON CONFLICT (key) DO UPDATE SET tokens = excluded.tokens,"
          " updated_at = excluded.updated_at",
    clean="DELETE FROM rate_buckets WHERE key IN (SELECT key FROM rate_buckets"
          " WHERE updated_at < ? LIMIT ?)",
)

POSTGRES = _SQL(
    # A new key's row is made full first, so that FOR UPDATE has a row to lock
    # and two hosts meeting a new sender at once take turns on it.
    hold="INSERT INTO rate_buckets (key, tokens, updated_at) VALUES (%s, %s, %s)"
         " ON CONFLICT (key) DO NOTHING",
    read="SELECT tokens, updated_at FROM rate_buckets WHERE key = %s FOR UPDATE",
    write="INSERT INTO rate_buckets (key, tokens, updated_at) VALUES (%s, %s, %s)"
          " ON CONFLICT (key) DO UPDATE SET tokens = EXCLUDED.tokens,"
          " updated_at = EXCLUDED.updated_at",
    # SKIP LOCKED: never wait for (or deadlock with) a bucket another host is using.
    clean="DELETE FROM rate_buckets WHERE key IN (SELECT key FROM rate_buckets"
          " WHERE updated_at < %s LIMIT %s FOR UPDATE SKIP LOCKED)",
)


class RateBuckets:
    """Every key's bucket.  A bucket that has refilled completely carries no
    information: it is deleted, and an absent key counts as full."""

    def __init__(self, where: Location | str | os.PathLike[str], *, timeout: float = 2.0):
        # Losing the last bucket update in a power cut forgives one mail: no fsync needed.
        self.db = connect(where, synchronous="NORMAL", timeout=timeout)
        self.sql = SQLITE if self.db.backend == "sqlite" else POSTGRES

    def close(self) -> None:
        self.db.close()

    def take(self, key: str, now: float, limit: Any) -> bool:
        """Take a token from ``key``'s bucket under ``limit`` (its ``mails``, ``per_seconds``
        and ``refilled``); False, and nothing taken, when it is empty."""
        full = float(limit.mails)
        with self.db.transaction() as cur:
            if self.sql.hold:
                cur.execute(self.sql.hold, (key, full, now))
            row = cur.execute(self.sql.read, (key,)).fetchone()
            tokens = limit.refilled(*row, now) if row else full
            allowed = tokens >= 1.0
            if allowed:
                cur.execute(self.sql.write, (key, tokens - 1.0, now))
                cur.execute(self.sql.clean, (now - limit.per_seconds, CLEAN_BATCH))
        return allowed

    def __len__(self) -> int:
        return self.db.rows("SELECT count(*) FROM rate_buckets")[0][0]
