"""Per-sender rate limits: a flood from one address is deferred, never lost.

A token bucket per key (the envelope sender, or a client IP): it holds up to
``mails`` tokens and refills at ``mails / per_seconds`` tokens a second, so a
sender may send a burst of ``mails`` and then one more every
``per_seconds / mails`` seconds.  A refused mail takes no token.  Refusals are
temporary (``RateLimited``: SMTP 450 4.7.1, exit 75), so the sending MTA keeps
the mail and tries again later: nothing is lost, the flood is only slowed.

Two stores, one arithmetic:

* ``StoreRateLimiter`` keeps them in the spool's store (SQLite or PostgreSQL),
  which is what ``serve`` and ``pipe`` use: every process on the store counts
  in the same buckets (``pipe`` beside ``serve``, several hosts on one
  PostgreSQL), and the pipe, one process per mail, sees the mails before it.
  If the store fails, mail is let through (a broken limiter must not stop or
  bounce mail).
* ``RateLimiter`` keeps the buckets in memory, for one process that shares
  them with nobody: forgetting them on a restart only forgives the senders
  once.  Memory is bounded: a bucket that has refilled completely carries no
  information and is dropped, and beyond ``max_keys`` the least recently seen
  sender is forgotten.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Mapping

from mailgate.errors import TemporaryError
from mailgate.settings.read import read_section
from mailgate.settings.schema import Limit, Limits
from mailgate.store.database import Location
from mailgate.store.ratebuckets import RateBuckets

log = logging.getLogger("mailgate.intake.ratelimit")


class RateLimited(TemporaryError):
    """Too many mails from one sender: try again later (RFC 3463 4.7.1, policy)."""

    smtp_code = 450
    smtp_status = "4.7.1"


def sender_key(address: str | None) -> str:
    """One key per sender address, whatever its case; the null sender is ``<>``."""
    return (address or "").strip().strip("<>").lower() or "<>"


def refusal(key: str) -> RateLimited:
    return RateLimited(f"too many messages from <{key.strip('<>')}>, try again later")


class RateLimiter:
    """Token buckets in memory, for one long-running process that shares nothing."""

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


class StoreRateLimiter:
    """The same buckets in the spool's store (mailgate.store.ratebuckets), shared by
    every process and host on it."""

    def __init__(self, store: Location | str | Path, mails: int, per_seconds: float, *,
                 clock: Callable[[], float] = time.time):
        self.limit = _checked(mails, per_seconds)
        self.where = Location.of(store)
        self.clock = clock
        self.buckets = RateBuckets(self.where)

    @classmethod
    def for_limit(cls, store: Location | str | Path, limit: Limit,
                  **kwargs) -> "StoreRateLimiter":
        return cls(store, limit.mails, limit.per_seconds, **kwargs)

    def allow(self, key: str) -> bool:
        try:
            return self.buckets.take(key, self.clock(), self.limit)
        except Exception as exc:    # noqa: BLE001 - a broken limiter must not stop mail
            log.error("rate limit: store %s failed, letting <%s> through: %s",
                      self.where, key, exc)
            return True

    def check(self, key: str) -> None:
        if not self.allow(key):
            raise refusal(key)

    def __len__(self) -> int:
        return len(self.buckets)

    def close(self) -> None:
        self.buckets.close()


# ------------------------------------------------------------------ configuration

def load_limits(section: Mapping[str, Any] | None) -> Limits:
    """The ``limits:`` section, checked: ``per_sender`` and ``per_client``, each optional
    (declared in mailgate.settings.schema)."""
    return read_section(section, Limits, "limits")


def load_rate_limit(section: Mapping[str, Any] | None,
                    where: str = "limits.per_sender") -> Limit | None:
    """One ``{mails: N, per_seconds: S}`` block; None when absent."""
    return None if section is None else read_section(section, Limit, where)


def _checked(mails: int, per_seconds: float) -> Limit:
    if mails < 1 or per_seconds <= 0:
        raise ValueError(f"a rate limit needs mails >= 1 and per_seconds > 0,"
                         f" got {mails}, {per_seconds}")
    return Limit(int(mails), float(per_seconds))
