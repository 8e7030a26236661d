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
import sqlite3
import threading
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any, Callable

from ..discord import (MAX_SLEEP, DiscordClient, DiscordConfigError, DiscordRateLimited,
                       DiscordRejected, DiscordUnavailable, Posted, UnknownChannel)
from .events import FanoutEvent
from .queue import PendingThread, PostQueue, QueuedPost
from .rendering import render
from .settings import Destination, DiscordSettings

log = logging.getLogger("mailgate.discord")


class Fanout:
    def __init__(self, settings: DiscordSettings, db_path: str | Path, *,
                 on_thread_created: Callable[[int, str], Any] | None = None,
                 clock: Callable[[], float] = time.time):
        self.settings = settings
        self.queue = PostQueue(db_path)
        self.clock = clock
        # Only called when the config asks for the Redmine fields.
        self.on_thread_created = on_thread_created if settings.redmine_fields else None
        self.wake = threading.Event()
        self._stop = threading.Event()
        self.client = DiscordClient(settings.api_base, bot_token=settings.bot_token,
                                    timeout=settings.timeout, sleep=self._nap)
        # While Discord as a whole is failing, probe with one post, not all of them.
        self._hold_until = 0.0
        self._counts: Counter[str] = Counter()
        # Longer than one delivery can take (two requests, each after a rate-limit
        # wait), so that no other process takes a post this one is still sending.
        self._lease = 2 * (settings.timeout + MAX_SLEEP) + 30.0

    def _nap(self, seconds: float) -> None:
        # A rate-limit wait must not hold up a shutdown.
        self._stop.wait(seconds)

    def close(self) -> None:
        self.client.close()
        self.queue.close()

    # -- the mail side ---------------------------------------------------------

    def enqueue(self, event: FanoutEvent) -> None:
        """Queue the post for ``event`` durably; never raises (the mail is already applied)."""
        try:
            self._enqueue(event)
        except Exception:
            # Losing a Discord post is bad; failing a mail Redmine already has is worse.
            self._counts["enqueue_errors"] += 1
            log.error("discord: could not queue the post of %s for #%d:\n%s", event.mail_key,
                      event.ticket, traceback.format_exc())
        self.wake.set()

    def _enqueue(self, event: FanoutEvent) -> None:
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

    # -- the Discord side ------------------------------------------------------

    def run_once(self) -> bool:
        """Do one due piece of work (a post, or a thread's Redmine fields); False if none."""
        if self._announce_one():
            return True
        now = self.clock()
        if now < self._hold_until:
            return False
        post = self.queue.claim(now, self._lease)
        if post is None:
            return False
        self._deliver(post)
        return True

    def run_forever(self, stop: threading.Event, poll: float = 1.0) -> None:
        """Deliver until ``stop`` is set (set ``wake`` too, to stop at once)."""
        self._stop = stop
        while not stop.is_set():
            try:
                busy = self.run_once()
                idle = 0.0 if busy else self._idle(poll)
            except sqlite3.Error as exc:
                # "database is locked" and the like: the thread must outlive them.
                log.error("discord: queue database error (retrying in %.0f s): %s", poll, exc)
                idle = poll
            if idle:
                self.wake.wait(idle)
                self.wake.clear()

    def _idle(self, poll: float) -> float:
        due = self.queue.next_due()
        wait_for = max(self._hold_until, due if due is not None else float("inf"))
        return min(poll, max(0.01, wait_for - self.clock()))

    def _deliver(self, post: QueuedPost) -> None:
        destination = self.settings.by_key(post.channel)
        if destination is None:
            self._bury(post, "the channel is no longer in the configuration")
            return
        self._counts["attempts"] += 1
        try:
            posted, new_thread = self._send(post, destination)
        except DiscordRateLimited as exc:
            self._rate_limited(post, exc)
        except UnknownChannel as exc:
            # Not a thread (those are replaced in _send): the channel itself is gone.
            self._retry_or_bury(post, exc)
        except DiscordRejected as exc:
            self._bury(post, str(exc))
        except (DiscordUnavailable, DiscordConfigError) as exc:
            self._retry_or_bury(post, exc)
        except Exception as exc:  # a bug met by one post must not stop the others
            log.error("discord: post %d dead-lettered after a crash:\n%s", post.id,
                      traceback.format_exc())
            self._bury(post, f"crash: {type(exc).__name__}: {exc}")
        else:
            self.queue.sent(post, posted, self.clock(), new_thread,
                            announced=self.on_thread_created is None)
            self._counts["delivered"] += 1
            self._hold_until = 0.0

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

    def _rate_limited(self, post: QueuedPost, exc: DiscordRateLimited) -> None:
        self._counts["rate_limited"] += 1
        until = self.clock() + exc.retry_after
        if exc.is_global:
            self._hold_until = until
        log.info("discord: post %d waits %.2f s: %s", post.id, exc.retry_after, exc)
        self.queue.defer(post, str(exc), until, failed=False)

    def _retry_or_bury(self, post: QueuedPost, exc: Exception) -> None:
        failures = post.failures + 1
        now = self.clock()
        limit = self.settings.max_attempts
        if now - post.created_at >= self.settings.max_age or (limit and failures >= limit):
            self._bury(post, f"gave up after {failures} failures: {exc}")
            return
        delay = self.settings.backoff(failures)
        if isinstance(exc, DiscordUnavailable):
            self._hold_until = now + delay
        self._counts["retries"] += 1
        log.warning("discord: post %d retried in %.1f s: %s", post.id, delay, exc)
        self.queue.defer(post, f"{type(exc).__name__}: {exc}", now + delay, failed=True)

    def _bury(self, post: QueuedPost, reason: str) -> None:
        self._counts["dead"] += 1
        log.warning("discord: post %d (#%d) dead-lettered: %s", post.id, post.ticket, reason)
        self.queue.bury(post, reason, self.clock())

    # -- Redmine's thread fields -----------------------------------------------

    def _announce_one(self) -> bool:
        if self.on_thread_created is None:
            return False
        pending = self.queue.due_thread(self.clock())
        if pending is None:
            return False
        try:
            self.on_thread_created(pending.ticket, pending.thread_id)
        except Exception as exc:  # Redmine down, or anything: the Discord side goes on
            self._announce_failed(pending, exc)
        else:
            self.queue.announced(pending)
        return True

    def _announce_failed(self, pending: PendingThread, exc: Exception) -> None:
        now = self.clock()
        error = f"{type(exc).__name__}: {exc}"
        self._counts["announce_failures"] += 1
        if now - pending.created_at >= self.settings.max_age:
            log.warning("discord: gave up telling Redmine #%d's thread: %s", pending.ticket, error)
            self.queue.announced(pending, -1, error)
            return
        delay = self.settings.backoff(pending.failures + 1)
        log.warning("discord: Redmine fields of #%d retried in %.1f s: %s", pending.ticket,
                    delay, error)
        self.queue.announced(pending, 0, error, now + delay)

    def stats(self) -> dict:
        """What the queue holds (durable) and what this process did (since start)."""
        try:
            held = self.queue.counts()
        except sqlite3.Error as exc:   # monitoring must not fail with the database
            held = {"database_error": str(exc)}
        return {**held, **{f"run_{k}": v for k, v in self._counts.items()}}
