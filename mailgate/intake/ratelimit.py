"""Per-sender rate limits: a flood from one address is deferred, never lost.

A token bucket per key (the envelope sender, or a client IP): it holds up to
``mails`` tokens and refills at ``mails / per_seconds`` tokens a second, so a
sender may send a burst of ``mails`` and then one more every
``per_seconds / mails`` seconds.  A refused mail takes no token.  Refusals are
temporary (``RateLimited``: SMTP 450 4.7.1, exit 75), so the sending MTA keeps
the mail and tries again later: nothing is lost, the flood is only slowed.

Two stores, one arithmetic:

* ``RateLimiter`` keeps the buckets in memory, for ``mailgate serve``: one
  process sees every SMTP/LMTP connection, and forgetting the buckets on a
  restart only forgives the senders once.  Memory is bounded: a bucket that
  has refilled completely carries no information and is dropped, and beyond
  ``max_keys`` the least recently seen sender is forgotten.
* ``SqliteRateLimiter`` keeps them in the spool's SQLite file, for
  ``mailgate pipe``: the MTA starts one process per mail, so a limit held in
  memory would never see a second mail.  If that database fails, mail is let
  through (a broken limiter must not stop or bounce mail).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from mailgate.errors import ConfigError, TemporaryError

log = logging.getLogger("mailgate.intake.ratelimit")


class RateLimited(TemporaryError):
    """Too many mails from one sender: try again later (RFC 3463 4.7.1, policy)."""

    smtp_code = 450
    smtp_status = "4.7.1"


@dataclass(frozen=True)
class Limit:
    """A configured limit: at most ``mails`` in a burst, refilled over ``per_seconds``."""

    mails: int
    per_seconds: float

    def refilled(self, tokens: float, since: float, now: float) -> float:
        # A clock that went back (a wall clock reset) refills nothing.
        gained = max(0.0, now - since) * self.mails / self.per_seconds
        return min(float(self.mails), tokens + gained)


@dataclass(frozen=True)
class Limits:
    """The ``limits:`` section: each limit is None when not configured."""

    per_sender: Limit | None = None
    #: Only for a mailgate that faces the internet itself: behind an MTA every
    #: mail comes from that MTA's address, and one bucket would hold them all.
    per_client: Limit | None = None


def sender_key(address: str | None) -> str:
    """One key per sender address, whatever its case; the null sender is ``<>``."""
    return (address or "").strip().strip("<>").lower() or "<>"


def refusal(key: str) -> RateLimited:
    return RateLimited(f"too many messages from <{key.strip('<>')}>, try again later")


class RateLimiter:
    """Token buckets in memory, for one long-running process (``serve``)."""

    def __init__(self, mails: int, per_seconds: float, *,
                 clock: Callable[[], float] = time.monotonic, max_keys: int = 10_000):
        self.limit = _checked(mails, per_seconds)
        self.clock = clock
        if max_keys < 1:
            raise ValueError(f"max_keys must be >= 1, got {max_keys}")
        self.max_keys = max_keys
        #: key -> (tokens, when counted); least recently seen first.
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        # The SMTP handler calls from worker threads (asyncio.to_thread).
        self._lock = threading.Lock()

    @classmethod
    def for_limit(cls, limit: Limit, **kwargs) -> "RateLimiter":
        return cls(limit.mails, limit.per_seconds, **kwargs)

    def allow(self, key: str) -> bool:
        """Take a token for ``key``; False (and nothing taken) when its bucket is empty."""
        now = self.clock()
        with self._lock:
            tokens, since = self._buckets.pop(key, (float(self.limit.mails), now))
            tokens = self.limit.refilled(tokens, since, now)
            allowed = tokens >= 1.0
            self._buckets[key] = (tokens - 1.0 if allowed else tokens, now)
            self._evict(now)
        return allowed

    def check(self, key: str) -> None:
        """``allow``, as the edges want it: raises ``RateLimited`` when refused."""
        if not self.allow(key):
            raise refusal(key)

    def _evict(self, now: float) -> None:
        # Oldest first: a bucket untouched for a whole window is full again,
        # which is what an absent key means too, so dropping it changes nothing.
        while self._buckets:
            key, (_, since) = next(iter(self._buckets.items()))
            if now - since < self.limit.per_seconds and len(self._buckets) <= self.max_keys:
                break
            if now - since < self.limit.per_seconds:
                # Over max_keys with every bucket in use (many senders at once):
                # forgive the least recent one rather than grow without bound.
                log.warning("rate limit: more than %d senders at once; forgetting <%s>",
                            self.max_keys, key)
            del self._buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS rate_buckets (
    key TEXT PRIMARY KEY,
    tokens REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS rate_buckets_updated ON rate_buckets (updated_at);
"""


class SqliteRateLimiter:
    """The same buckets in a SQLite file, shared by short-lived processes (``pipe``)."""

    def __init__(self, path: str | Path, mails: int, per_seconds: float, *,
                 clock: Callable[[], float] = time.time):
        self.limit = _checked(mails, per_seconds)
        self.path = Path(path)
        self.clock = clock
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=2.0, isolation_level=None,
                                   check_same_thread=False)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        # Losing the last bucket update in a power cut forgives one mail: no fsync needed.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    @classmethod
    def for_limit(cls, path: str | Path, limit: Limit, **kwargs) -> "SqliteRateLimiter":
        return cls(path, limit.mails, limit.per_seconds, **kwargs)

    def allow(self, key: str) -> bool:
        try:
            with self._lock:
                return self._allow(key, self.clock())
        except sqlite3.Error as exc:
            log.error("rate limit: database %s failed, letting <%s> through: %s",
                      self.path, key, exc)
            return True

    def check(self, key: str) -> None:
        if not self.allow(key):
            raise refusal(key)

    def _allow(self, key: str, now: float) -> bool:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute("SELECT tokens, updated_at FROM rate_buckets WHERE key=?",
                             (key,)).fetchone()
            tokens = self.limit.refilled(*row, now) if row else float(self.limit.mails)
            allowed = tokens >= 1.0
            if allowed:
                db.execute("INSERT INTO rate_buckets (key, tokens, updated_at) VALUES (?,?,?)"
                           " ON CONFLICT (key) DO UPDATE SET tokens=excluded.tokens,"
                           " updated_at=excluded.updated_at", (key, tokens - 1.0, now))
                # Full buckets again: keeps the table as small as the senders of one window.
                db.execute("DELETE FROM rate_buckets WHERE updated_at < ?",
                           (now - self.limit.per_seconds,))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return allowed

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM rate_buckets").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()


# ------------------------------------------------------------------ configuration

def load_limits(section: Mapping[str, Any] | None) -> Limits:
    """The ``limits:`` section, checked: ``per_sender`` and ``per_client``, each optional."""
    if section is None:
        return Limits()
    if not isinstance(section, Mapping):
        raise ConfigError("limits: expected a mapping")
    unknown = sorted(str(k) for k in section if k not in ("per_sender", "per_client"))
    if unknown:
        raise ConfigError(f"limits.{unknown[0]}: unknown setting (known: per_client, per_sender)")
    return Limits(per_sender=load_rate_limit(section.get("per_sender"), "limits.per_sender"),
                  per_client=load_rate_limit(section.get("per_client"), "limits.per_client"))


def load_rate_limit(section: Mapping[str, Any] | None,
                    where: str = "limits.per_sender") -> Limit | None:
    """One ``{mails: N, per_seconds: S}`` block; None when absent."""
    if section is None:
        return None
    if not isinstance(section, Mapping):
        raise ConfigError(f"{where}: expected a mapping like {{mails: 30, per_seconds: 600}}")
    unknown = sorted(str(k) for k in section if k not in ("mails", "per_seconds"))
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown setting (known: mails, per_seconds)")
    for key in ("mails", "per_seconds"):
        if key not in section:
            raise ConfigError(f"{where}.{key}: missing")
    mails, seconds = section["mails"], section["per_seconds"]
    if isinstance(mails, str) and mails.isdigit():  # from the environment
        mails = int(mails)
    if isinstance(mails, bool) or not isinstance(mails, int) or mails < 1:
        raise ConfigError(f"{where}.mails: expected a whole number >= 1, got {mails!r}")
    try:
        seconds = float(seconds) if not isinstance(seconds, bool) else 0.0
    except (TypeError, ValueError):
        seconds = 0.0
    if not seconds > 0:
        raise ConfigError(f"{where}.per_seconds: expected a number of seconds > 0,"
                          f" got {section['per_seconds']!r}")
    return Limit(mails, seconds)


def _checked(mails: int, per_seconds: float) -> Limit:
    if mails < 1 or per_seconds <= 0:
        raise ValueError(f"a rate limit needs mails >= 1 and per_seconds > 0,"
                         f" got {mails}, {per_seconds}")
    return Limit(int(mails), float(per_seconds))
