"""Discord threads read back: what people write in a ticket's thread becomes a note (issue 14).

The fan-out opens a thread per ticket and posts in it; with ``discord.read``
the bot reads each tracked thread back over REST and each new message becomes
a note on the ticket, planned as a mail replying to it would be
(``handlers.discord``) and written by the executor.

It is one queue of ``mailgate.runner`` with two kinds of item, both in the
store (``mailgate.store.discord_reads``), so they survive restarts and are
shared by the hosts on one store:

* **a thread's read**, due every ``discord.poll_interval`` seconds and leased,
  so the hosts take turns: ``GET /channels/{thread}/messages?after=<the newest
  read>&limit=100``, oldest first, page after page.  Each page's messages by
  people are queued, once per message id, in the same commit as the watermark
  past the page.  A 429 puts the read back for ``retry_after``; Discord down,
  with backoff; the watermark never moves past what is not queued.
* **a message**: its facts gathered (the ticket, who its author is in
  Redmine, its files fetched within the mail limits), planned, and carried out
  in Redmine.  Its note carries the idempotency marker of its message id, so a
  message applied twice (a lease that ran out on a dying host) is found on the
  ticket and not written again.

Never an echo: our own posts (a webhook's, the bot's) are not read as anyone's
words, and a note that came from Discord carries mailgate's marker, so the
Redmine watcher does not post it back (``handlers.journals``).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

from handlers.discord import (DiscordFile, Writer, files_to_fetch, message_of, not_a_person,
                              plan_message, withheld)
from handlers.plans import Defer, Refuse

from mailgate.clients.discord import (MAX_PAGE, MAX_SLEEP, DiscordClient, DiscordConfigError,
                                      DiscordRateLimited, DiscordRejected, DiscordUnavailable,
                                      UnknownChannel)
from mailgate.errors import PermanentError, RedmineUnavailable, TemporaryError
from mailgate.mail.message import Attachment
from mailgate.runner import Backoff, Disposition, Runner, classify_error
from mailgate.store.database import Location
from mailgate.store.discord_reads import ReadMessage, ThreadRead, ThreadReads

log = logging.getLogger("mailgate.intake.discord_threads")

#: The fields of a message kept with it in the queue (the rest is Discord's business).
_KEPT = ("id", "type", "author", "content", "attachments", "mentions", "webhook_id",
         "timestamp", "edited_timestamp", "sticker_items", "poll", "message_snapshots")
#: How often the registry's new threads are looked for (seconds).
SYNC_EVERY = 1.0


class _Gone(Exception):
    """The thread is no more in Discord (deleted): it is not read again."""


class _Refused(PermanentError):
    """The plan refused the message: dead-lettered with the plan's reason."""


class ThreadReader:
    """Reads the tracked threads and applies their messages (a ``Runner`` works it)."""

    name = "discord-read"

    def __init__(self, config, client, facts, store: Location, *,
                 metrics: Callable[[], Any] | None = None,
                 clock: Callable[[], float] = time.time):
        self.config = config
        self.settings = config.discord
        self.client = client
        self.facts = facts
        self.store = ThreadReads(store)
        self.metrics = metrics
        self.clock = clock
        settings = self.settings
        self.discord = DiscordClient(settings.api_base, bot_token=settings.bot_token,
                                     timeout=settings.timeout, sleep=self._nap)
        self._bot_id: str | None = None
        self._synced = 0.0
        self.runner = Runner(
            self, self._work,
            lease=max(2 * (settings.timeout + MAX_SLEEP), 4 * config.redmine.timeout) + 30.0,
            backoff=Backoff(settings.first_delay, settings.max_delay, settings.max_age),
            classify=self._classify, clock=clock)

    @property
    def wake(self):
        return self.runner.wake

    def _nap(self, seconds: float) -> None:
        # A rate-limit wait must not hold up a shutdown.
        self.runner.stopping.wait(seconds)

    def close(self) -> None:
        self.discord.close()
        self.store.close()

    def drain(self) -> int:
        """Every tracked thread read now, and what was read applied (``mailgate worker``)."""
        self.store.sync(self.clock())
        self.store.all_due()
        return len(self.runner.drain(max_wait=0.0))

    def stats(self) -> dict[str, int]:
        return self.runner.stats()

    # -- the queue, as the runner uses it (mailgate.runner.Queue) ----------------------

    def claim(self, now: float, lease: float):
        message = self.store.claim(now, lease)
        if message is not None:
            return message
        if now - self._synced >= SYNC_EVERY:
            self.store.sync(now)
            self._synced = now
        return self.store.claim_read(now, lease)

    def renew(self, item, until: float) -> None:
        if isinstance(item, ThreadRead):
            self.store.renew_read(item.thread_id, until)
        else:
            self.store.renew(item.id, until)

    def done(self, item, result, now: float) -> None:
        if isinstance(item, ThreadRead):
            self.store.read_done(item.thread_id, now + self.settings.poll_interval, now)
        else:
            self.store.done(item.id, result, now)

    def defer(self, item, error: str, until: float, failed: bool) -> None:
        if isinstance(item, ThreadRead):
            self.store.read_failed(item.thread_id, error, until, failed)
        else:
            self.store.defer(item.id, error, until, failed)

    def bury(self, item, error: str, now: float) -> None:
        if not isinstance(item, ThreadRead):
            self.store.bury(item.id, error, now)
        elif error.startswith(_Gone.__name__):
            self.store.gone(item.thread_id, error)
        else:
            # A read is never given up: the next one starts from the watermark.
            self.store.read_failed(item.thread_id, error, now + self.settings.poll_interval,
                                   True)

    def next_due(self) -> float | None:
        return self.store.next_due()

    def counts(self) -> dict[str, int]:
        return self.store.counts()

    # -- the work ------------------------------------------------------------------------

    def _work(self, item) -> Any:
        if isinstance(item, ThreadRead):
            return self.read(item)
        metrics = self.metrics() if self.metrics is not None else None
        try:
            result = self.apply(item)
        except RedmineUnavailable as exc:
            if metrics is not None:
                metrics.redmine_failed(exc)     # /healthz: Redmine unreachable for ...
            raise
        if metrics is not None:
            metrics.redmine_ok()
        return result

    def _classify(self, exc: BaseException) -> Disposition:
        if isinstance(exc, DiscordRateLimited):
            return Disposition("wait", str(exc), until=self.clock() + exc.retry_after,
                               hold=exc.is_global)
        if isinstance(exc, UnknownChannel):
            return Disposition("bury", f"{_Gone.__name__}: {exc}")
        if isinstance(exc, DiscordUnavailable):
            # While Discord as a whole fails, one item probes at a time.
            return Disposition("retry", f"{type(exc).__name__}: {exc}", hold=True)
        return classify_error(exc)

    # -- reading a thread ---------------------------------------------------------------

    def read(self, item: ThreadRead) -> int:
        """Queue the people's messages written in the thread since its watermark; how many."""
        bot_id = self._bot()
        after, found = item.after, 0
        while True:
            page = self.discord.messages_after(item.thread_id, after, MAX_PAGE)
            if not page:
                break
            wanted = [_kept(raw) for raw in page if self._wanted(raw, item, bot_id)]
            after = int(page[-1]["id"])
            found += self.store.add_page(item.thread_id, item.ticket, wanted, after,
                                         self.clock())
            if len(page) < MAX_PAGE:
                break
        if found:
            log.info("discord: %d new message(s) in thread %s of #%d", found, item.thread_id,
                     item.ticket)
        return found

    def _wanted(self, raw: dict, item: ThreadRead, bot_id: str) -> bool:
        message = message_of(raw, item.thread_id)
        if not_a_person(message, bot_id):
            return False
        if withheld(message):
            # Queued as it is, it would be lost: stop here, and carry on from this
            # very message once the operator has given the bot the intent.
            raise DiscordConfigError(
                f"thread {item.thread_id} of #{item.ticket}: Discord withholds what people"
                " write (message content is empty): turn on the bot's MESSAGE CONTENT"
                " intent (Developer Portal → Bot → Privileged Gateway Intents)")
        return True

    def _bot(self) -> str:
        """The bot's own user id, asked once: its messages are ours, not a person's."""
        if self._bot_id is None:
            self._bot_id = str(self.discord.current_user()["id"])
        return self._bot_id

    # -- applying a message ---------------------------------------------------------------

    def apply(self, item: ReadMessage) -> dict:
        """Plan the message as mail is planned and carry the plan out; its record."""
        from mailgate.executor import execute

        message = message_of(item.message, item.thread_id)
        ticket = self.facts.ticket(item.ticket)
        writer = self._writer(message.author_id)
        wanted = writer is not None or self.settings.unmapped != "ignore"
        files = tuple(self._fetch(file, why) for file, why in files_to_fetch(
            message, self.config)) if wanted else ()
        site = self.config.site_for_project(ticket.project)
        plan = plan_message(message, ticket, writer, files, site, self.config)
        step = plan.step
        if isinstance(step, Defer):
            raise TemporaryError(step.reason)
        if isinstance(step, Refuse):
            raise _Refused(step.reason)
        outcome = execute(step, self.client, self.facts.status_ids)
        record = {**outcome.as_dict(), "plan": plan.record()}
        log.info("discord message key=discord:%s ticket=#%d user=%s step=%s action=%s"
                 " outcome=%s", message.id, item.ticket, message.author_id,
                 type(step).__name__, outcome.action or "-", outcome.kind)
        return record

    def _writer(self, author_id: str) -> Writer | None:
        """The Redmine user ``discord.users`` maps the author to (None: nobody)."""
        login = self.settings.users.get(author_id)
        if login is None:
            return None
        user = self.client.user_by_login(login)
        if user is None:
            log.warning("discord.users maps %s to %r, which is not an active Redmine user:"
                        " their message is treated as an unmapped user's", author_id, login)
            return None
        return Writer(user.login, user.email or "", user.name)

    def _fetch(self, file: DiscordFile, why_not: str | None) -> Attachment:
        """The file as an attachment; one left out (or gone) says why, for the note."""
        if why_not is not None:
            return Attachment(file.filename, file.content_type, b"", problem=why_not)
        limits = self.config.attachment_limits
        try:
            # One byte over the lower limit, ours or Redmine's, is enough to know.
            data = self.discord.download(file.url,
                                         min(limits.max_size, limits.redmine_max_size))
        except DiscordRejected as exc:
            log.warning("discord: %s could not be fetched: %s", file.filename, exc)
            return Attachment(file.filename, file.content_type, b"",
                              problem="could not be fetched from Discord")
        return Attachment(file.filename, file.content_type, data)


def _kept(raw: dict) -> dict:
    return {key: raw[key] for key in _KEPT if key in raw}


def build_reader(gateway) -> ThreadReader | None:
    """The reader for ``gateway``'s configuration (None unless ``discord.read``)."""
    config = gateway.config
    if config.discord is None or not config.discord.read:
        return None
    return ThreadReader(config, gateway.client, gateway.facts, config.store,
                        metrics=lambda: gateway.metrics)
