"""Delivery: ``Fanout`` queues a post for each event and sends the queued posts to Discord.

* At least once: a row leaves the queue only when Discord has confirmed the
  message (``wait=true``), or when it is dead-lettered (a message Discord
  refuses, or one that could not be delivered for ``max_age``).
* A thread per ticket: the first post of a ticket creates its thread (a forum
  post named ``#<ticket> <subject>``, or a bot's thread in a text channel) and
  a ticket's later posts wait in line until it exists, so each ticket's story
  reads in order.  The thread id is kept in ``discord_threads`` and handed to
  ``on_thread_created(ticket, thread_id)`` (which writes Redmine's
  ``discord-thread`` fields), retried on its own if Redmine is down.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from mailgate.clients.discord import (MAX_SLEEP, DiscordClient, DiscordConfigError, DiscordRateLimited,
                       DiscordRejected, DiscordUnavailable, Posted, UnknownChannel)
from mailgate.outbound.fanout.events import FanoutEvent
from mailgate.outbound.fanout.rendering import render
from mailgate.outbound.fanout.settings import Destination, DiscordSettings
from mailgate.store.database import Location
from mailgate.store.discord import PendingThread, PostQueue, QueuedPost

log = logging.getLogger("mailgate.clients.discord")


class Fanout:
    """Queues posts for events (the mail side) and delivers them (a ``Runner``).

    One runner serves both of the fan-out's kinds of work, in this order: a
    thread's Redmine fields, then the oldest due post (``_FanoutQueue``).
    """

    name = "discord"

    def __init__(self, settings: DiscordSettings, store: Location | str | Path, *,
                 on_thread_created: Callable[[int, str], Any] | None = None,
                 clock: Callable[[], float] = time.time):
        from mailgate.runner import Backoff, Runner

        self.settings = settings
        # The spool's store (its SQLite file or PostgreSQL URL): every host and
        # process on it shares the queue and the thread registry.
        self.queue = PostQueue(store)
        self.clock = clock
        # Only called when the config asks for the Redmine fields.
        self.on_thread_created = on_thread_created if settings.redmine_fields else None
        self.client = DiscordClient(settings.api_base, bot_token=settings.bot_token,
                                    timeout=settings.timeout, sleep=self._nap)
        self._counts: Counter[str] = Counter()
        # The lease is longer than one delivery can take (two requests, each after
        # a rate-limit wait), so that no other process takes a post this one sends.
        self.runner = Runner(
            _FanoutQueue(self), self._work, lease=2 * (settings.timeout + MAX_SLEEP) + 30.0,
            backoff=Backoff(settings.first_delay, settings.max_delay, settings.max_age,
                            settings.max_attempts or None),
            classify=self._classify, clock=clock)

    @property
    def wake(self) -> threading.Event:
        return self.runner.wake

    def _nap(self, seconds: float) -> None:
        # A rate-limit wait must not hold up a shutdown.
        self.runner.stopping.wait(seconds)

    def close(self) -> None:
        self.client.close()
        self.queue.close()

    # -- the mail side ---------------------------------------------------------

    def enqueue(self, event: FanoutEvent) -> None:
        """Queue the post for ``event`` durably; never raises (the mail is already applied)."""
        try:
            self.queue_event(event)
        except Exception:
            # Losing a Discord post is bad; failing a mail Redmine already has is worse.
            self._counts["enqueue_errors"] += 1
            log.error("discord: could not queue the post of %s for #%d:\n%s", event.mail_key,
                      event.ticket, traceback.format_exc())
        self.wake.set()

    def queue_event(self, event: FanoutEvent) -> None:
        """Queue the post for ``event`` durably (once per event key and channel); raises
        what the store raises, for a caller that retries (the Redmine watcher)."""
        self._enqueue(event)
        self.wake.set()

    def _enqueue(self, event: FanoutEvent) -> None:
        if self.queue.switched_off(event.ticket):
            # Its discord-thread field was cleared in Redmine: Discord hears no more of it.
            self._counts["switched_off"] += 1
            return
        destination = self._destination(event)
        if destination is None:
            self._counts["skipped"] += 1
            log.debug("discord: no channel for site %r; #%d not posted", event.site, event.ticket)
            return
        added = self.queue.add(event.mail_key, destination.key, event.ticket,
                               render(event, self.settings), self.clock())
        self._counts["queued" if added else "duplicates"] += 1

    def _destination(self, event: FanoutEvent) -> Destination | None:
        if event.site is None:
            # A reply to ticket<N>@ names no site: follow the ticket's earlier posts.
            earlier = self.queue.channel_of(event.ticket)
            if earlier and (found := self.settings.by_key(earlier)):
                return found
        return self.settings.destination_for(event.site)

    # -- running -----------------------------------------------------------------

    def run_once(self) -> bool:
        """Do one due piece of work (a post, or a thread's Redmine fields); False if none."""
        return self.runner.run_once() is not None

    def run_until_idle(self, max_wait: float = 10.0) -> int:
        return len(self.runner.drain(max_wait))

    def run_forever(self, stop: threading.Event, poll: float = 1.0) -> None:
        """Deliver until ``stop`` is set (set ``wake`` too, to stop at once)."""
        self.runner.run_forever(stop, poll)

    # -- the Discord side ------------------------------------------------------

    def _work(self, item) -> Any:
        if isinstance(item, _Announcement):
            try:
                return self.on_thread_created(item.pending.ticket, item.pending.thread_id)
            except Exception as exc:    # Redmine down, or anything: the Discord side goes on
                raise _AnnounceFailed(exc) from exc
        destination = self.settings.by_key(item.channel)
        if destination is None:
            raise _Gone("the channel is no longer in the configuration")
        if self.queue.switched_off(item.ticket):
            raise _Gone("not posted: the ticket's discord-thread field was cleared")
        self._counts["attempts"] += 1
        return self._send(item, destination)

    def _classify(self, exc: BaseException):
        from mailgate.runner import Disposition

        reason = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, _Gone):
            return Disposition("bury", str(exc))
        if isinstance(exc, DiscordRateLimited):
            self._counts["rate_limited"] += 1
            return Disposition("wait", str(exc), until=self.clock() + exc.retry_after,
                               hold=exc.is_global)
        if isinstance(exc, DiscordRejected):
            return Disposition("bury", str(exc))
        if isinstance(exc, DiscordUnavailable):
            # While Discord as a whole is failing, probe with one post, not all of them.
            return Disposition("retry", reason, hold=True)
        if isinstance(exc, (UnknownChannel, DiscordConfigError)):
            # Not a thread (those are replaced in _send): the channel itself is gone.
            return Disposition("retry", reason)
        if isinstance(exc, _AnnounceFailed):
            self._counts["announce_failures"] += 1
            return Disposition("retry", f"{type(exc.error).__name__}: {exc.error}")
        return Disposition("bury", f"crash: {reason}")

    def _send(self, post: QueuedPost, destination: Destination) -> tuple[Posted, bool]:
        """Post in the ticket's thread, creating it first if it has none."""
        if not destination.threads:
            return self.client.execute_webhook(destination.webhook, post.content), False
        thread = self.queue.thread(post.channel, post.ticket)
        if thread is not None:
            try:
                return self._post_in_thread(destination, thread, post), False
            except UnknownChannel:
                # Someone deleted the thread: the ticket gets a new one.
                log.warning("discord: thread %s of #%d is gone; starting a new one", thread,
                            post.ticket)
                self.queue.forget_thread(post.channel, post.ticket, thread)
        return self._start_thread(destination, post)

    def _post_in_thread(self, destination: Destination, thread: str, post: QueuedPost) -> Posted:
        if destination.webhook is not None:
            return self.client.execute_webhook(destination.webhook, post.content,
                                               thread_id=thread)
        return self.client.create_message(thread, post.content, nonce=post.nonce)

    def _start_thread(self, destination: Destination, post: QueuedPost) -> tuple[Posted, bool]:
        self._counts["threads_created"] += 1
        if destination.webhook is not None:
            # A forum post: the thread and its first message in one request.
            posted = self.client.execute_webhook(destination.webhook, post.content,
                                                 thread_name=post.thread_name)
            return posted, True
        # Bot: two requests, so the thread is recorded before the message is tried.
        thread = self.client.start_thread(destination.channel_id, post.thread_name)
        self.queue.add_thread(post.channel, post.ticket, thread, self.clock(),
                              announced=self.on_thread_created is None)
        return self._post_in_thread(destination, thread, post), False

    def stats(self) -> dict:
        """What the queue holds (durable) and what this process did (since start)."""
        counts = self.runner.stats()
        counts.update({f"run_{k}": v for k, v in self._counts.items()})
        return counts


class _Gone(Exception):
    """A queued post's channel left the configuration."""


class _AnnounceFailed(Exception):
    def __init__(self, error: BaseException):
        super().__init__(str(error))
        self.error = error


@dataclass(frozen=True)
class _Announcement:
    """Telling Redmine a ticket's thread: a piece of the fan-out's work, retried alone."""

    pending: PendingThread

    @property
    def id(self) -> str:
        return f"thread {self.pending.thread_id} of #{self.pending.ticket}"

    @property
    def created_at(self) -> float:
        return self.pending.created_at

    @property
    def failures(self) -> int:
        return self.pending.failures


class _FanoutQueue:
    """The fan-out's two tables as one queue for its runner (mailgate.runner.Queue)."""

    name = "discord"

    def __init__(self, fanout: Fanout):
        self.fanout = fanout
        self.queue = fanout.queue

    def claim(self, now: float, lease: float):
        if self.fanout.on_thread_created is not None:
            pending = self.queue.due_thread(now, lease)
            if pending is not None:
                return _Announcement(pending)
        return self.queue.claim(now, lease)

    def done(self, item, result, now: float) -> None:
        if isinstance(item, _Announcement):
            self.fanout._counts["announced"] += 1
            self.queue.announced(item.pending)
            return
        posted, new_thread = result
        self.queue.sent(item, posted, now, new_thread,
                        announced=self.fanout.on_thread_created is None)
        self.fanout._counts["delivered"] += 1

    def defer(self, item, error: str, until: float, failed: bool) -> None:
        if isinstance(item, _Announcement):
            log.warning("discord: Redmine fields of #%d retried: %s", item.pending.ticket, error)
            self.queue.announced(item.pending, 0, error, until)
        else:
            self.queue.defer(item, error, until, failed)

    def bury(self, item, error: str, now: float) -> None:
        if isinstance(item, _Announcement):
            log.warning("discord: gave up telling Redmine #%d's thread: %s",
                        item.pending.ticket, error)
            self.queue.announced(item.pending, -1, error)
        else:
            self.queue.bury(item, error, now)

    def next_due(self) -> float | None:
        return self.queue.next_due()

    def counts(self) -> dict[str, int]:
        return self.queue.counts()
