"""The Redmine watcher: what people write in Redmine itself, told onwards (issue 13).

Mail that mailgate applies is told to Discord as it is applied.  What support
types in Redmine's web UI (or over REST) is not mail: nobody would hear of it
but Redmine's own users.  The watcher polls Redmine for it and turns each new
journal into events: a post in the ticket's Discord thread, and the answer
mailed to a reporter who is not a Redmine user (``handlers.journals`` decides
which, ``mailgate.outbound.answers`` writes the mail).

It is one queue of ``mailgate.runner`` with two kinds of item, both in the
store (``mailgate.store.watch``), so they survive restarts and are shared by
the hosts on one store:

* **the poll**, due every ``watch.poll_interval`` seconds and leased, so the
  hosts take turns.  It asks for the issues updated since the watermark
  (``/issues.json?updated_on=>=…&status_id=*&sort=updated_on``, paged): one
  request when nothing changed.  Each changed issue's journals are read
  (``/issues/N.json?include=journals``) and the new ones queued, once per
  journal id.  The watermark moves on only when the whole poll went through:
  with Redmine down the poll fails, is retried with backoff, and loses nothing.
* **a journal**: its facts gathered (who wrote it; is the reporter a Redmine
  user?), planned, and its events queued in the Discord fan-out and the
  notices' outbox.  Both take an event once (``journal:<id>`` per channel,
  ``answer:<id>`` per recipient), so a journal worked twice (a lease that ran
  out on a dying host) is still told once.  A journal that sets or clears the
  ticket's ``discord-thread`` field switches its thread on or off (issue 14):
  the switch is recorded where the fan-out and the Discord reader look
  (``discord_switch``), and set on a ticket with no thread it opens one.

Polls look back ``MARGIN`` seconds behind the watermark: Redmine gives
``updated_on`` to the second (and reads ``>=`` as "after the second before"),
and a save may commit a moment after the time it records.  The issues already
handled in that stretch are remembered with the watermark (``handled``), so
looking back costs nothing but the list.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.utils import parseaddr
from typing import Any, Callable

from handlers.journals import JournalFacts, JournalPlan, participants, plan_journal

from mailgate.errors import Forbidden, NoSuchTicket, RedmineUnavailable
from mailgate.runner import Backoff, Runner
from mailgate.outbound.fanout.settings import THREAD_FIELD, THREAD_ID_FIELD
from mailgate.store.database import Location
from mailgate.store.discord_reads import snowflake_at
from mailgate.store.watch import FoundJournal, PollState, WatchStore

log = logging.getLogger("mailgate.watcher")

#: How far behind the watermark each poll looks (seconds).
MARGIN = 60
#: How long after an issue's ``updated_on`` (whole seconds) a poll may count it as
#: handled: another save within that same second would carry the same ``updated_on``,
#: and a poll that trusted it at once would never read that save's journal.  Until
#: then the issue is read again each poll (its journals are queued once regardless).
SETTLE = 2
#: How long a journal may fail (Redmine down) before it is dead-lettered.
JOURNAL_MAX_AGE = 2 * 24 * 3600.0

_ISO = "%Y-%m-%dT%H:%M:%SZ"


@dataclass(frozen=True)
class _Poll:
    """The poll, as an item of the runner."""

    state: PollState
    created_at: float

    id = "poll"

    @property
    def failures(self) -> int:
        return self.state.failures


@dataclass(frozen=True)
class Polled:
    """What a poll reached: the new watermark, the issues handled near it, and how many
    journals it queued."""

    watermark: str
    handled: dict[int, str]
    found: int = 0


class Watcher:
    """Polls Redmine and tells what changed (a ``Runner`` works it)."""

    name = "watch"

    def __init__(self, config, client, store: Location, *, fanout=None, notifier=None,
                 metrics: Callable[[], Any] | None = None,
                 clock: Callable[[], float] = time.time):
        self.config = config
        self.settings = config.watch
        self.client = client
        self.store = WatchStore(store)
        self.fanout = fanout
        #: The notices' notifier: answers go through its outbox (None: no answers).
        self.notifier = notifier if config.answers is not None else None
        #: The gateway's metrics (mailgate.ops.metrics), asked for when needed: they
        #: watch every runner, this one too, so they cannot exist before it.
        self.metrics = metrics
        self.clock = clock
        #: The next claim takes the poll whenever no other process holds it.
        self.force = False
        self._statuses: dict[int, str] = {}
        self._field_names: dict[int, str] | None = None
        interval = self.settings.poll_interval
        self.runner = Runner(self, self._work, lease=4 * config.redmine.timeout + 30.0,
                             backoff=Backoff(min(30.0, interval), max(600.0, interval),
                                             JOURNAL_MAX_AGE),
                             clock=clock)

    @property
    def wake(self):
        return self.runner.wake

    def close(self) -> None:
        self.store.close()

    def drain(self) -> int:
        """One poll now, and the journals it found (the one-shot ``mailgate worker``)."""
        self.force = True
        return len(self.runner.drain(max_wait=0.0))

    def stats(self) -> dict[str, int]:
        return self.runner.stats()

    # -- the queue, as the runner uses it (mailgate.runner.Queue) ----------------------

    def claim(self, now: float, lease: float):
        journal = self.store.claim(now, lease)
        if journal is not None:
            return journal
        state = self.store.claim_poll(now, lease, force=self.force)
        if state is None:
            return None
        self.force = False
        # A poll is never too old to retry: it starts afresh from the watermark.
        return _Poll(state, now)

    def renew(self, item, until: float) -> None:
        if isinstance(item, _Poll):
            self.store.renew_poll(until)
        else:
            self.store.renew(item.id, until)

    def done(self, item, result, now: float) -> None:
        if isinstance(item, _Poll):
            self.store.polled(result.watermark, result.handled,
                              now + self.settings.poll_interval, now)
        else:
            self.store.done(item.id, result, now)

    def defer(self, item, error: str, until: float, failed: bool) -> None:
        if isinstance(item, _Poll):
            # The watermark stays: the next poll starts where this one did.
            self.store.poll_failed(error, until)
        else:
            self.store.defer(item.id, error, until, failed)

    def bury(self, item, error: str, now: float) -> None:
        if isinstance(item, _Poll):
            self.store.poll_failed(error, now + self.settings.poll_interval)
        else:
            self.store.bury(item.id, error, now)

    def next_due(self) -> float | None:
        return self.store.next_due()

    def counts(self) -> dict[str, int]:
        return self.store.counts()

    # -- the work ------------------------------------------------------------------------

    def _work(self, item) -> Any:
        metrics = self.metrics() if self.metrics is not None else None
        try:
            result = self.poll(item.state) if isinstance(item, _Poll) else self.tell(item)
        except RedmineUnavailable as exc:
            if metrics is not None:
                metrics.redmine_failed(exc)     # /healthz: Redmine unreachable for ...
            raise
        if metrics is not None:
            metrics.redmine_ok()
        return result

    def poll(self, state: PollState) -> Polled:
        """Queue the journals written since ``state``'s watermark; the watermark reached."""
        if state.watermark is None:
            # The first poll: what is in Redmine already is history, not news.
            latest = self.client.latest_update() or _iso(self.clock())
            log.info("watch: starting from Redmine's latest update, %s", latest)
            return Polled(latest, {})
        bound = _shift(state.watermark, -MARGIN)
        # Journals older than this were found by earlier polls (or are history).
        floor = max(_shift(bound, -1), state.started or "")
        handled, watermark, found = dict(state.handled), state.watermark, 0
        settled = _iso(self.clock() - SETTLE)
        since, offset = bound, 0
        while True:
            changes, total = self.client.changed_since(since, offset)
            for change in changes:
                if handled.get(change.id) != change.updated_on:
                    found += self._journals_of(change.id, floor)
                    if change.updated_on <= settled:
                        handled[change.id] = change.updated_on
                watermark = max(watermark, change.updated_on)
            if not changes or offset + len(changes) >= total:
                break
            # Go on from the last update seen rather than by offset: an issue updated
            # while we page moves to the end, and would shift an offset past another.
            last = changes[-1].updated_on
            since, offset = (last, 0) if last > since else (since, offset + len(changes))
        keep = _shift(watermark, -MARGIN - 1)
        if found:
            log.info("watch: %d new journal(s); watermark %s", found, watermark)
        return Polled(watermark, {i: u for i, u in handled.items() if u >= keep}, found)

    def _journals_of(self, issue_id: int, floor: str) -> int:
        try:
            issue = self.client.issue_journals(issue_id)
        except (NoSuchTicket, Forbidden):
            return 0        # deleted (or hidden) since it was listed: nothing to tell
        found = 0
        for journal in issue.journals:
            if journal.created_on >= floor and self.store.add(
                    journal.id, issue.id, snapshot(issue, journal, self._fields_of(journal)),
                    self.clock()):
                found += 1
        return found

    def _fields_of(self, journal) -> dict[int, str]:
        """Custom field names by id, asked for once, when a journal changed a field."""
        if self._field_names is None and any(d.get("property") == "cf"
                                             for d in journal.details):
            self._field_names = self.client.custom_field_names()
        return self._field_names or {}

    def tell(self, item: FoundJournal) -> dict:
        """Plan one journal and queue its events; what was told, for its record."""
        plan = plan_journal(self.facts(item.snapshot), self.config)
        record = plan.record()
        if plan.thread is not None and self.fanout is not None:
            # First: a thread switched off hears nothing of this journal either.
            self._switch(plan, item.snapshot)
        if plan.announce is not None and self.fanout is not None:
            self.fanout.queue_event(self._event(plan, item.snapshot))
        elif plan.thread == "open" and self.fanout is not None:
            self.fanout.queue_event(self._opening(plan, item.snapshot))
        if plan.answer_to:
            record["mailed"] = self._answer(plan, item.snapshot)
        log.info("watch: journal %d of #%d: %s", item.id, item.ticket, record)
        return record

    # -- facts ----------------------------------------------------------------------------

    def facts(self, snap: dict) -> JournalFacts:
        """What ``handlers.journals`` decides on: the snapshot, and what Redmine knows of
        the people in it."""
        fields = snap["fields"]
        reporter = parseaddr(fields.get(self.config.redmine.reporter_field) or "")[1].lower()
        author = self.client.user(snap["user_id"])
        old, new = snap.get("status_change") or (None, None)
        return JournalFacts(
            ticket=snap["ticket"], journal_id=snap["journal_id"], subject=snap["subject"],
            project=snap["project"], author_name=snap["user_name"],
            author_login=author.login if author else None,
            author_email=author.email if author else None,
            notes=snap["notes"], private=snap["private"],
            old_status=self._status(old), new_status=self._status(new),
            reporter=reporter or None,
            participants=participants(fields.get(self.config.redmine.participants_field)),
            reporter_is_user=self._is_user(reporter, snap),
            thread_switch=_switched(snap), has_thread=self._has_thread(snap))

    def _has_thread(self, snap: dict) -> bool:
        # Only looked up when it decides something: the switch was set.
        if not _switched(snap):
            return False
        return bool(snap["fields"].get(THREAD_ID_FIELD)) or (
            self.fanout is not None and self.fanout.queue.has_thread(snap["ticket"]))

    def _is_user(self, reporter: str, snap: dict) -> bool:
        # Only looked up when it decides something: a public note on a ticket with one.
        if not reporter or snap["private"] or not snap["notes"].strip():
            return False
        return self.client.find_user_by_email(reporter) is not None

    def _status(self, status_id: int | None) -> str | None:
        if status_id is None:
            return None
        if status_id not in self._statuses:
            self._statuses = self.client.status_names()
        return self._statuses.get(status_id, f"status {status_id}")

    # -- events ---------------------------------------------------------------------------

    def _event(self, plan: JournalPlan, snap: dict):
        from mailgate.outbound.fanout import FanoutEvent

        said = plan.announce
        site = self.config.site_for_project(snap["project"])
        return FanoutEvent(
            # Once per journal and channel, whoever tells it and however often.
            mail_key=f"journal:{plan.journal_id}", kind="reply", ticket=plan.ticket,
            site=site.name if site else None, subject=snap["subject"],
            sender_name=said.sender_name, sender_address="", action=said.action,
            from_state=said.from_state, to_state=said.to_state, excerpt=said.excerpt,
            url=f"{self.config.redmine.url}/issues/{plan.ticket}#change-{plan.journal_id}")

    def _switch(self, plan: JournalPlan, snap: dict) -> None:
        """Record the ticket's thread switched on or off, as of this journal."""
        since = snowflake_at(datetime.strptime(snap["created_on"], _ISO).replace(
            tzinfo=timezone.utc).timestamp())
        self.fanout.queue.switch(plan.ticket, plan.thread != "off", since, plan.journal_id,
                                 self.clock())
        log.info("watch: #%d's discord-thread field %s (journal %d)", plan.ticket,
                 "cleared: its thread is off" if plan.thread == "off" else "set", plan.journal_id)

    def _opening(self, plan: JournalPlan, snap: dict):
        """The post that opens a thread for a ticket whose discord-thread field was set."""
        from mailgate.outbound.fanout import FanoutEvent

        site = self.config.site_for_project(snap["project"])
        return FanoutEvent(
            mail_key=f"thread:{plan.journal_id}", kind="reply", ticket=plan.ticket,
            site=site.name if site else None, subject=snap["subject"],
            sender_name=snap["user_name"], sender_address="", action="followed in Discord",
            from_state=None, to_state=None, excerpt="",
            url=f"{self.config.redmine.url}/issues/{plan.ticket}")

    def _answer(self, plan: JournalPlan, snap: dict) -> dict[str, str]:
        if self.notifier is None:
            return {address: "answers are off" for address in plan.answer_to}
        from mailgate.outbound.answers import AnswerMail, queue_answer

        config = self.config
        site = config.site_for_project(snap["project"]) or config.triage
        sent = {}
        for address in plan.answer_to:
            answer = AnswerMail(
                ticket=plan.ticket, journal_id=plan.journal_id, day=snap["created_on"][:10],
                to=address, from_address=site.address if site else
                config.notify.from_address,
                ticket_address=f"ticket{plan.ticket}@{config.domains[0]}",
                subject=snap["subject"], writer_name=plan.writer_name, text=plan.text,
                new_status=plan.new_status, hostname=config.hostname)
            sent[address] = queue_answer(self.notifier, answer, config.answers.max_per_hour,
                                         self.clock())
        return sent


def snapshot(issue, journal, field_names: dict[int, str] | None = None) -> dict:
    """A journal and its issue as a poll saw them: what telling it needs, kept with it.
    ``field_names``: custom field names by id, for the fields the journal changed."""
    names = field_names or {}
    return {
        "ticket": issue.id, "journal_id": journal.id, "subject": issue.subject,
        "project": issue.project_name, "fields": dict(issue.custom_fields),
        "user_id": journal.user_id, "user_name": journal.user_name, "notes": journal.notes,
        "private": journal.private, "created_on": journal.created_on,
        "status_change": list(journal.status_change) if journal.status_change else None,
        "field_changes": {names.get(_int(d.get("name")), str(d.get("name"))):
                          [d.get("old_value"), d.get("new_value")]
                          for d in journal.details if d.get("property") == "cf"},
    }


def _switched(snap: dict) -> bool | None:
    """Whether the journal set (True) or cleared (False) the discord-thread field."""
    change = (snap.get("field_changes") or {}).get(THREAD_FIELD)
    if change is None:
        return None
    # Redmine keeps a boolean field as "1" / "0", or "" once cleared over REST.
    return str(change[1]).lower() in ("1", "true")


def _int(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _iso(moment: float) -> str:
    return time.strftime(_ISO, time.gmtime(moment))


def _shift(value: str, seconds: float) -> str:
    """Redmine's ISO time ``value``, moved by ``seconds``."""
    moment = datetime.strptime(value, _ISO).replace(tzinfo=timezone.utc)
    return (moment + timedelta(seconds=seconds)).strftime(_ISO)


def build_watcher(gateway) -> Watcher | None:
    """The watcher for ``gateway``'s configuration (None without ``watch:``)."""
    config = gateway.config
    if config.watch is None:
        return None
    return Watcher(config, gateway.client, config.store, fanout=gateway.fanout,
                   notifier=gateway.notifier, metrics=lambda: gateway.metrics)
