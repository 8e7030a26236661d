"""``serve``'s IMAP side: one watcher per mailbox, each a thread that never dies.

A watcher logs in, takes what waits (``MailboxSource.run_pass``), then waits
for news with IDLE (RFC 2177) when the server offers it and the mailbox has
``idle: true``, else sleeps ``poll_interval``; IDLE is renewed, and a pass made
anyway, every ``poll_interval`` (at most 25 minutes: servers drop an IDLE
after 30).  A lost connection, a server restart (its BYE), a refused login or
a failing store is logged, counted, and tried again with backoff and jitter.
Only stopping ends the loop.

It offers what ``serve`` asks of a queue runner (mailgate.runner.Runner):
``start``, ``join``, ``wake``, ``alive``, ``health`` and ``stats``, so
/healthz and /metrics see it like the others.  /healthz also fails when the
mailbox has had no successful login for ``imap.login_alarm`` seconds.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError

from mailgate.errors import MailboxUnavailable, MailgateError
from mailgate.intake.imap import MailboxSource, _close, _said, connect

log = logging.getLogger("mailgate.intake.imap")

#: Backoff after a failure: from FIRST_PAUSE doubling to MAX_PAUSE (seconds).
FIRST_PAUSE = 1.0
MAX_PAUSE = 300.0
#: An IDLE is ended and renewed (with a pass) at least this often.
IDLE_RENEW = 25 * 60.0
#: How long one wait inside IDLE lasts: how soon a stop is noticed.
IDLE_TICK = 1.0


class MailboxWatcher:
    def __init__(self, source: MailboxSource, *, login_alarm: float,
                 on_spooled=lambda: None, metrics=None, clock=time.time):
        self.source = source
        self.box = source.box
        self.name = f"imap {self.box.name}"
        self.login_alarm = login_alarm
        self.on_spooled = on_spooled
        self.metrics = metrics
        self.clock = clock
        self.wake = threading.Event()
        self.counts: Counter[str] = Counter()
        self.beat: float | None = None
        #: When the last login succeeded (the start counts, for the alarm).
        self.last_login: float | None = None
        self.last_error: str | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # -- the loop --------------------------------------------------------------------

    def run_forever(self, stop: threading.Event) -> None:
        self._stop = stop
        self.last_login = self.clock()
        pause = FIRST_PAUSE
        while not stop.is_set():
            self.beat = self.clock()
            try:
                client = connect(self.box)
            except Exception as exc:    # noqa: BLE001 - the watcher must outlive any failure
                self._failed("login" if isinstance(exc, MailgateError) and
                             not isinstance(exc, MailboxUnavailable) else "connect", exc)
                pause = self._pause(pause)
                continue
            self._logged_in()
            try:
                self._watch(client)
                pause = FIRST_PAUSE
            except Exception as exc:    # noqa: BLE001
                self._failed("connection", exc)
                pause = self._pause(pause)
            finally:
                _close(client)

    def _watch(self, client: IMAPClient) -> None:
        """Passes, and waits between them, until the stop or a failure."""
        idle = self.box.idle and client.has_capability("IDLE")
        log.info("%s: logged in to %s as %s; %s", self.name, self.box.host, self.box.user,
                 "waiting with IDLE" if idle else f"polling every {self.box.poll_interval:g} s")
        while not self._stop.is_set():
            summary = self.source.run_pass(client)
            self.beat = self.clock()
            if summary.spooled:
                self.on_spooled()
            if summary.counts:
                log.info("%s: %s", self.name, summary)
            if idle:
                self._idle(client)
            elif not self._wait(self.box.poll_interval):
                client.noop()

    def _idle(self, client: IMAPClient) -> None:
        """Wait in IDLE until the folder has news, the renewal is due, or the stop."""
        client.idle()
        deadline = self.clock() + min(self.box.poll_interval, IDLE_RENEW)
        try:
            while not self._stop.is_set() and not self.wake.is_set() \
                    and self.clock() < deadline:
                self.beat = self.clock()
                responses = client.idle_check(timeout=IDLE_TICK)
                if any(_is(r, b"BYE") for r in responses):
                    raise MailboxUnavailable(f"{self.name}: the server closed the"
                                             f" connection: {responses}")
                if any(_is(r, b"EXISTS") or _is(r, b"RECENT") for r in responses):
                    return
        finally:
            self.wake.clear()
            client.idle_done()

    def _wait(self, seconds: float) -> bool:
        """Sleep, ending early on the stop or a wake; True if stopping."""
        self.wake.wait(seconds)
        self.wake.clear()
        return self._stop.is_set()

    def _pause(self, pause: float) -> float:
        self._wait(pause * random.uniform(0.5, 1.0))
        return min(MAX_PAUSE, pause * 2)

    # -- what it went through ----------------------------------------------------------

    def _logged_in(self) -> None:
        self.last_login = self.clock()
        self.counts["logins"] += 1
        if self.metrics is not None:
            self.metrics.imap_logins.labels(self.box.name, "ok").inc()

    def _failed(self, stage: str, exc: BaseException) -> None:
        said = str(exc) if isinstance(exc, MailgateError) else \
            f"{type(exc).__name__}: {_said(exc)}"
        self.last_error = said
        kind = "login_failures" if stage == "login" else "connection_errors"
        self.counts[kind] += 1
        if self.metrics is not None:
            if stage == "login":
                self.metrics.imap_logins.labels(self.box.name, "failed").inc()
            else:
                self.metrics.imap_errors.labels(self.box.name, stage).inc()
        unexpected = not isinstance(exc, (MailgateError, OSError, IMAPClientError))
        log.log(logging.ERROR if unexpected else logging.WARNING, "%s: %s failed (again"
                " soon): %s", self.name, stage, said, exc_info=exc if unexpected else None)

    # -- as serve runs and watches it (like mailgate.runner.Runner) --------------------

    def start(self, stop: threading.Event) -> None:
        thread = threading.Thread(target=self.run_forever, args=(stop,),
                                  name=f"imap-{self.box.name}", daemon=True)
        thread.start()
        self._thread = thread           # seen by health() once started (Runner.start)

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def health(self, now: float, stall_after: float) -> str | None:
        if self._thread is None:
            return None                 # not started here
        if not self.alive:
            return f"{self.name} runner is not running"
        if self.last_login is not None and now - self.last_login > self.login_alarm:
            return (f"{self.name}: no successful login for {now - self.last_login:.0f} s"
                    f" ({self.last_error or 'no error yet'})")
        if self.beat is not None and now - self.beat > stall_after:
            return f"{self.name} runner stalled for {now - self.beat:.0f} s"
        return None

    def stats(self) -> dict[str, int]:
        return {f"run_{k}": v for k, v in self.counts.items()}


def _is(response, word: bytes) -> bool:
    """An untagged response such as (3, b'EXISTS') or (b'BYE', ...)."""
    return isinstance(response, tuple) and word in response[:2]


def build_watchers(gateway) -> list[MailboxWatcher]:
    """One watcher per configured mailbox (none without an imap: section)."""
    settings = gateway.config.imap
    if settings is None:
        return []
    from mailgate.intake.imap import sources

    metrics = gateway.metrics

    def counted(mailbox: str, kind: str) -> None:
        metrics.imap_mails.labels(mailbox, kind).inc()

    return [MailboxWatcher(source, login_alarm=settings.login_alarm,
                           on_spooled=gateway.worker.wake.set, metrics=metrics)
            for source in sources(gateway, settings, on_result=counted)]
