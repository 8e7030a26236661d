"""The spool as a queue of ``mailgate.runner``, and the worker that applies its mail.

What becomes of a mail whose processing raised depends only on the error's
class (``mailgate.errors``, read by ``runner.classify_error``): temporary
errors are retried later with exponential backoff and jitter, until the mail
is older than ``spool.max_age``; anything unexpected is a bug met by one mail
(a "poison" mail), dead-lettered with its traceback logged while the worker
goes on with the others.  A refused mail is not an error: its outcome is
``refused``, and the queue dead-letters it with the plan's reason.
"""

from __future__ import annotations

import logging
from typing import Sequence

from mailgate.outcome import Outcome
from mailgate.runner import Backoff, Handled, Runner
from mailgate.store.spool import Spool, SpooledMail

log = logging.getLogger("mailgate.worker")


#: How often a runner looks for claims left by dead processes of its host.
RELEASE_EVERY = 5.0


class SpoolQueue:
    """The spool's ``messages`` table, as the runner uses it (mailgate.runner.Queue)."""

    name = "spool"

    def __init__(self, spool: Spool):
        self.spool = spool
        #: Only these mails, when set (the pipe and replay apply the mail they spooled).
        self.only: Sequence[int] | None = None
        self._released_at = float("-inf")

    def claim(self, now: float, lease: float) -> SpooledMail | None:
        if now - self._released_at >= RELEASE_EVERY:
            # A gateway killed with mail in hand: its tickets must not wait for the lease.
            self._released_at = now
            if released := self.spool.release_dead_claims(now):
                log.warning("spool: took up %d mail(s) claimed by a process that died",
                            released)
        return self.spool.claim(self.only, now=now, lease=lease)

    def renew(self, item: SpooledMail, until: float) -> None:
        self.spool.renew(item.id, until)

    def done(self, item: SpooledMail, outcome: Outcome, now: float) -> None:
        if outcome.kind == "refused":
            self.spool.bury(item.id, outcome.reason or "refused", outcome.as_dict())
        else:
            self.spool.finish(item.id, outcome.as_dict())

    def defer(self, item: SpooledMail, error: str, until: float, failed: bool) -> None:
        self.spool.defer(item.id, error, until)

    def bury(self, item: SpooledMail, error: str, now: float) -> None:
        self.spool.bury(item.id, error)

    def next_due(self) -> float | None:
        return self.spool.next_due()

    def counts(self) -> dict[str, int]:
        return self.spool.counts()


def spool_backoff(config) -> Backoff:
    return Backoff(config.retry_first_delay, config.retry_max_delay, config.max_age)


class Worker:
    """The spool's runner, with the gateway's processing as its work."""

    def __init__(self, gateway, backoff: Backoff | None = None):
        self.gateway = gateway
        self.queue = SpoolQueue(gateway.spool)
        self.runner = Runner(self.queue, gateway.process,
                             backoff=backoff or spool_backoff(gateway.config),
                             lease=gateway.config.lease_seconds,
                             concurrency=gateway.config.spool_workers)

    @property
    def wake(self):
        return self.runner.wake

    def run_once(self, ids: Sequence[int] | None = None
                 ) -> tuple[SpooledMail, Outcome | BaseException] | None:
        """Process one due mail (of ``ids``, if given); None when nothing is due."""
        self.queue.only = ids
        try:
            handled = self.runner.run_once()
        finally:
            self.queue.only = None
        return None if handled is None else _pair(handled)

    def run_until_idle(self, ids: Sequence[int] | None = None) -> list[tuple]:
        results = []
        while (result := self.run_once(ids)) is not None:
            results.append(result)
        return results

    def run_forever(self, stop, poll: float = 1.0) -> None:
        self.runner.run_forever(stop, poll)


def _pair(handled: Handled) -> tuple:
    return handled.item, handled.error if handled.error is not None else handled.result
