"""One queue runner for every durable queue: the spool, Discord's posts and thread
fields, the notice outbox.

A queue says how to claim an item under a lease and how to record what
became of it (``Queue``); the work says what to do with one item.  The runner
owns everything else, once: the loop, leases renewed while the work is in
hand, backoff with jitter, dead letters with their reason, counts for
``/metrics``, and a heartbeat for ``/healthz``.

What happens to an item whose work raised is decided by ``classify`` from the
exception alone (``mailgate.errors``: temporary -> retry later, permanent ->
dead letter); anything unexpected is a bug met by this one item, which is
dead-lettered with its traceback logged while the others go on.

The runner never dies of its queue: a locked, read-only or full database, or
a lost connection, is logged and tried again after a pause.  Only stopping it
ends the loop; ``alive`` then turns false and ``/healthz`` says so.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import traceback
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Generic, Protocol, TypeVar

from mailgate.errors import ConfigError, PermanentError, TemporaryError

log = logging.getLogger("mailgate.runner")

Item = TypeVar("Item")


class QueueItem(Protocol):
    id: int
    #: When the item entered its queue (time.time()).
    created_at: float
    #: How many attempts failed before this one.
    failures: int


class Queue(Protocol[Item]):
    """A durable queue, as the runner uses it.  Every method is one durable commit."""

    name: str

    def claim(self, now: float, lease: float) -> Item | None: ...

    # Optional: ``renew(item, until)`` extends the lease of an item in hand.

    def done(self, item: Item, result: Any, now: float) -> None: ...

    def defer(self, item: Item, error: str, until: float, failed: bool) -> None: ...

    def bury(self, item: Item, error: str, now: float) -> None: ...

    def next_due(self) -> float | None: ...

    def counts(self) -> dict[str, int]: ...


@dataclass(frozen=True)
class Backoff:
    first_delay: float = 30.0
    max_delay: float = 3600.0
    #: An item still failing this long after it was queued is dead-lettered.
    max_age: float = 5 * 24 * 3600.0
    #: ... or after this many failures (None: only age counts).
    max_failures: int | None = None

    def delay(self, failures: int) -> float:
        base = min(self.max_delay, self.first_delay * 2 ** max(0, failures - 1))
        # Jitter spreads the retries of items that failed together (an outage).
        return base * random.uniform(0.5, 1.0)

    def exhausted(self, age: float, failures: int) -> bool:
        return age >= self.max_age or (self.max_failures is not None
                                       and failures >= self.max_failures)


@dataclass(frozen=True)
class Disposition:
    """What to do with an item whose work raised."""

    kind: str                   # "retry", "wait" (until, not a failure), "bury"
    reason: str
    until: float | None = None
    #: The whole queue waits too (the remote side as a whole is failing).
    hold: bool = False


def classify_error(exc: BaseException) -> Disposition:
    """The default: by mailgate's error hierarchy."""
    reason = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, (TemporaryError, ConfigError)):
        return Disposition("retry", reason)
    if isinstance(exc, PermanentError):
        return Disposition("bury", reason)
    return Disposition("bury", f"crash: {reason}")


@dataclass(frozen=True)
class Handled(Generic[Item]):
    """One item the runner took: the work's result, or the exception it raised."""

    item: Item
    result: Any = None
    error: BaseException | None = None


#: How long the loop pauses after its queue failed, doubling up to the maximum.
LOOP_PAUSE = 0.5
LOOP_PAUSE_MAX = 30.0


class Runner(Generic[Item]):
    def __init__(self, queue: Queue[Item], work: Callable[[Item], Any], *,
                 backoff: Backoff, lease: float,
                 classify: Callable[[BaseException], Disposition] = classify_error,
                 clock: Callable[[], float] = time.time, concurrency: int = 1):
        self.queue = queue
        self.name = queue.name
        self.work = work
        self.backoff = backoff
        self.lease = lease
        self.classify = classify
        self.clock = clock
        self.wake = threading.Event()
        #: Set when the runner is asked to stop: a wait inside the work (a rate
        #: limit's) should end early on it.
        self.stopping = threading.Event()
        self.counts: Counter[str] = Counter()
        #: When the loop last went round (time.time()), for /healthz.
        self.beat: float | None = None
        self.last_error: str | None = None
        #: How many threads ``start`` runs the loop in (the queue keeps each
        #: ticket's items in order, whichever thread takes them).
        self.concurrency = concurrency
        self._threads: list[threading.Thread] = []
        self._hold_until = 0.0

    # -- one item ------------------------------------------------------------------

    def run_once(self) -> Handled[Item] | None:
        """Take one due item and deal with it; None when nothing is due."""
        now = self.clock()
        if now < self._hold_until:
            return None
        item = self.queue.claim(now, self.lease)
        if item is None:
            return None
        with _Renewing(self, item):
            try:
                result = self.work(item)
            except Exception as exc:    # noqa: BLE001 - classified, never lost
                self._failed(item, exc)
                return Handled(item, error=exc)
        self.queue.done(item, result, self.clock())
        self.counts["done"] += 1
        self._hold_until = 0.0
        return Handled(item, result=result)

    def _failed(self, item: Item, exc: BaseException) -> None:
        disposition = self.classify(exc)
        now = self.clock()
        failures = item.failures + 1
        if disposition.kind == "wait":
            self.counts["waits"] += 1
            self._hold(disposition, disposition.until)
            log.info("%s: item %s waits until %.0f: %s", self.name, item.id,
                     disposition.until, disposition.reason)
            self.queue.defer(item, disposition.reason, disposition.until, failed=False)
        elif disposition.kind == "retry" and not self.backoff.exhausted(
                now - item.created_at, failures):
            until = now + self.backoff.delay(failures)
            self.counts["retries"] += 1
            self._hold(disposition, until)
            log.warning("%s: item %s retried in %.0f s: %s", self.name, item.id,
                        until - now, disposition.reason)
            self.queue.defer(item, disposition.reason, until, failed=True)
        else:
            reason = disposition.reason if disposition.kind == "bury" else \
                f"gave up after {failures} attempts: {disposition.reason}"
            if reason.startswith("crash:"):
                self.counts["crashes"] += 1
                log.error("%s: item %s dead-lettered after a crash:\n%s", self.name, item.id,
                          "".join(traceback.format_exception(exc)))
            else:
                log.warning("%s: item %s dead-lettered: %s", self.name, item.id, reason)
            self.counts["dead"] += 1
            self.queue.bury(item, reason, now)

    def _hold(self, disposition: Disposition, until: float | None) -> None:
        if disposition.hold and until is not None:
            self._hold_until = max(self._hold_until, until)

    # -- many items ----------------------------------------------------------------

    def drain(self, max_wait: float = 10.0) -> list[Handled[Item]]:
        """Everything due now, and what comes due within ``max_wait`` seconds (a rate
        limit's short wait): the one-shot ``mailgate worker`` and ``fetch``.  In
        ``concurrency`` threads, as ``start`` would work the queue: one ticket's mail
        waits for another's reply from Redmine no more here than in ``serve``."""
        if self.concurrency == 1:
            return self._drain(max_wait)
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix=f"drain-{self.name}"
                                ) as pool:
            parts = list(pool.map(self._drain, [max_wait] * self.concurrency))
        return [handled for part in parts for handled in part]

    def _drain(self, max_wait: float) -> list[Handled[Item]]:
        handled: list[Handled[Item]] = []
        deadline = self.clock() + max_wait
        while True:
            result = self.run_once()
            if result is not None:
                handled.append(result)
                continue
            due = max(self.queue.next_due() or float("inf"), self._hold_until)
            if due > deadline:
                return handled
            time.sleep(max(0.01, due - self.clock()))

    def run_forever(self, stop: threading.Event, poll: float = 1.0) -> None:
        """Work until ``stop`` is set (set ``wake`` too, to stop at once)."""
        self.stopping = stop
        pause = LOOP_PAUSE
        while not stop.is_set():
            self.beat = self.clock()
            try:
                idle = 0.0 if self.run_once() is not None else self._idle(poll)
                pause = LOOP_PAUSE
            except Exception as exc:    # noqa: BLE001 - the runner must outlive its queue
                self.counts["loop_errors"] += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.error("%s: queue failed (again in %.1f s): %s", self.name, pause,
                          self.last_error)
                idle, pause = pause, min(LOOP_PAUSE_MAX, pause * 2)
            if idle:
                self.wake.wait(idle)
                self.wake.clear()

    def _idle(self, poll: float) -> float:
        due = max(self.queue.next_due() or float("inf"), self._hold_until)
        return min(poll, max(0.01, due - self.clock()))

    def start(self, stop: threading.Event, poll: float = 1.0) -> None:
        threads = [threading.Thread(target=self.run_forever, args=(stop, poll),
                                    name=f"runner-{self.name}-{n}", daemon=True)
                   for n in range(self.concurrency)]
        for thread in threads:
            thread.start()
        # Shown to health() only once started: /healthz, asked while they were being
        # started, said "not running" (a red start of serve that was no fault).
        self._threads = threads

    def join(self, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    @property
    def alive(self) -> bool:
        return bool(self._threads) and all(t.is_alive() for t in self._threads)

    def health(self, now: float, stall_after: float) -> str | None:
        """What is wrong with this runner, in words, or None."""
        if not self._threads:
            return None                 # not started here (a one-shot command)
        if not self.alive:
            return f"{self.name} runner is not running"
        # An item in hand renews its lease and beats (see _Renewing); a loop that
        # has not gone round for this long is stuck.
        if self.beat is not None and now - self.beat > stall_after:
            return f"{self.name} runner stalled for {now - self.beat:.0f} s"
        return None

    def stats(self) -> dict[str, int]:
        """What the queue holds (durable) and what this runner did (since start)."""
        try:
            held = dict(self.queue.counts())
        except Exception as exc:        # noqa: BLE001 - monitoring must not fail with the database
            log.warning("%s: counts unavailable: %s", self.name, exc)
            held = {}
        return {**held, **{f"run_{k}": v for k, v in self.counts.items()}}


class _Renewing:
    """While an item's work is in hand: renews its lease, so that the lease can be
    short (a dead worker's items are taken up soon) and long work is not taken
    over by another worker; and keeps the runner's heartbeat going."""

    def __init__(self, runner: Runner, item):
        self.runner, self.item = runner, item
        self._renew = getattr(runner.queue, "renew", None)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"lease-{runner.name}")

    def __enter__(self) -> "_Renewing":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()

    def _run(self) -> None:
        runner = self.runner
        while not self._done.wait(runner.lease / 3):
            runner.beat = runner.clock()
            if self._renew is None:
                continue
            try:
                self._renew(self.item, runner.clock() + runner.lease)
            except Exception as exc:    # noqa: BLE001 - the next renewal may succeed
                log.warning("%s: lease of item %s not renewed: %s", runner.name,
                            self.item.id, exc)
