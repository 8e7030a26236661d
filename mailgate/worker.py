"""The spool worker: takes spooled mail, processes it, records what became of it.

What the worker does with an error depends only on its class (see
``mailgate.errors``): temporary errors are retried later with exponential
backoff and jitter, until the mail is older than ``max_age``; permanent ones
are dead-lettered at once with their reason.  Any other exception is a bug
met by one mail (a "poison" mail): it is dead-lettered with its traceback
logged, and the worker goes on with the others.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import traceback
from dataclasses import dataclass

from .errors import ConfigError, PermanentError, TemporaryError
from .notify import tell_sender
from .outcome import Outcome
from .spool import SpooledMail

log = logging.getLogger("mailgate.worker")


@dataclass(frozen=True)
class RetryPolicy:
    first_delay: float = 30.0
    max_delay: float = 3600.0
    #: Like MTAs: give up on a temporary failure after five days.
    max_age: float = 5 * 24 * 3600.0

    def delay(self, attempts: int) -> float:
        base = min(self.max_delay, self.first_delay * 2 ** max(0, attempts - 1))
        # Jitter spreads the retries of mail that failed together (Redmine down).
        return base * random.uniform(0.5, 1.0)


class Worker:
    def __init__(self, gateway, retry: RetryPolicy | None = None):
        self.gateway = gateway
        self.spool = gateway.spool
        config = gateway.config
        self.retry = retry or RetryPolicy(config.retry_first_delay, config.retry_max_delay,
                                          config.max_age)
        self.wake = threading.Event()

    def run_once(self, ids: list[int] | None = None) -> tuple[SpooledMail, Outcome | Exception] | None:
        """Process one due mail (of ``ids``, if given); None when nothing is due."""
        spooled = self.spool.claim(ids)
        if spooled is None:
            return None
        try:
            outcome = self.gateway.process(spooled)
        except (TemporaryError, ConfigError) as exc:
            self._retry_or_bury(spooled, exc)
            return spooled, exc
        except PermanentError as exc:
            log.warning("mail %d dead-lettered: %s", spooled.id, exc)
            self.spool.bury(spooled.id, f"{type(exc).__name__}: {exc}")
            tell_sender(self.gateway.notifier, spooled, exc, self.gateway.config)
            return spooled, exc
        except Exception as exc:  # a poison mail must not stop the others
            log.error("mail %d dead-lettered after a crash:\n%s", spooled.id,
                      traceback.format_exc())
            self.spool.bury(spooled.id, f"crash: {type(exc).__name__}: {exc}")
            return spooled, exc
        self.spool.finish(spooled.id, outcome.as_dict())
        # A command the workflow refused, a status Redmine dropped: say so, once.
        tell_sender(self.gateway.notifier, spooled, outcome, self.gateway.config)
        return spooled, outcome

    def _retry_or_bury(self, spooled: SpooledMail, exc: Exception) -> None:
        age = time.time() - spooled.received_at
        if age >= self.retry.max_age:
            log.warning("mail %d dead-lettered after %.0f s of retries: %s", spooled.id, age, exc)
            self.spool.bury(spooled.id, f"gave up after {spooled.attempts} attempts: {exc}")
            return
        delay = self.retry.delay(spooled.attempts)
        log.info("mail %d deferred %.0f s: %s", spooled.id, delay, exc)
        self.spool.defer(spooled.id, f"{type(exc).__name__}: {exc}", delay)

    def run_until_idle(self, ids: list[int] | None = None) -> list[tuple]:
        results = []
        while (result := self.run_once(ids)) is not None:
            results.append(result)
        return results

    def run_forever(self, stop: threading.Event, poll: float = 1.0) -> None:
        while not stop.is_set():
            if self.run_once() is None:
                self.wake.wait(poll)
                self.wake.clear()
