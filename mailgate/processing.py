"""Processing one spooled mail: parse it, plan it once, carry the plan out, record it.

``Processor.process`` is the spool runner's work (``mailgate.runner``).  The
plan (``handlers.planning``) holds every decision; this module only reads it:
the executor carries out its step, the log line and the spool record show it,
the Discord fan-out and the notice are made from it.

A refused plan (and a write Redmine refuses for good) is an outcome, not an
exception: ``refused`` is dead-lettered with its reason by the spool queue and
the sender is told when the plan allows.  A temporary failure is raised, so
the runner retries the mail later.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

from handlers.notices import notice_for
from handlers.planning import MailPlan, plan_mail
from handlers.plans import Defer, OpenTicket, PostNote, Refuse

from mailgate.errors import PermanentError, RedmineUnavailable, TemporaryError
from mailgate.mail.message import parse_mail
from mailgate.outcome import Outcome
from mailgate.store.spool import SpooledMail

log = logging.getLogger("mailgate")


class Processor:
    def __init__(self, config, client, spool, facts, *, fanout=None, notifier=None,
                 metrics=None):
        self.config = config
        self.client = client
        self.spool = spool
        self.facts = facts
        self.fanout = fanout
        self.notifier = notifier
        self.metrics = metrics

    def plan(self, spooled: SpooledMail) -> MailPlan:
        return plan_mail(parse_mail(spooled.raw), spooled.rcpt, self.facts, self.config,
                         envelope_sender=spooled.mail_from, seen=self.spool.seen,
                         via_our_mta=self.config.trust.through_our_mta(spooled.via))

    def process(self, spooled: SpooledMail) -> Outcome:
        """Apply one spooled mail, once: a (mail, route) already applied is a duplicate."""
        started = time.monotonic()
        try:
            plan = self.plan(spooled)
            outcome = self._carry_out(plan)
        except RedmineUnavailable as exc:
            self.metrics.redmine_failed(exc)
            raise
        self.metrics.redmine_ok()
        seconds = time.monotonic() - started
        self.metrics.mails.labels(outcome.kind).inc()
        self.metrics.processing.observe(seconds)
        _log_line(plan, outcome, seconds)
        return outcome

    def _carry_out(self, plan: MailPlan) -> Outcome:
        step = plan.step
        if isinstance(step, Defer):
            raise TemporaryError(step.reason)
        if isinstance(step, Refuse):
            outcome = _refused(plan, step.reason, step.error.__name__)
            self._tell_sender(plan, outcome)
            return outcome
        from mailgate.executor import execute

        if isinstance(step, (PostNote, OpenTicket)):
            # Committed before the write: a later try of this mail (or a copy of it)
            # then knows this one may have written, and looks for its marker first.
            self.spool.attempt(plan.mail_key, plan.route_key)
        try:
            outcome = execute(step, self.client, self.facts.status_ids)
        except PermanentError as exc:
            # Redmine refused this write for good: a dead letter, the sender told.
            outcome = _refused(plan, f"{type(exc).__name__}: {exc}", type(exc).__name__)
            self._tell_sender(plan, outcome, exc)
            return outcome
        outcome = replace(outcome, plan=plan.record())
        if outcome.kind != "duplicate":
            self._tell_discord(plan, outcome)
        if plan.route_key is not None:
            # A duplicate found by its marker is recorded too, over its attempt (with
            # the ticket it is on): a later copy of the mail is then a duplicate at once.
            record = {"ticket": plan.ticket, **outcome.as_dict()}
            self.spool.remember(plan.mail_key, plan.route_key, record)
        self._tell_sender(plan, outcome)
        return outcome

    def _tell_discord(self, plan: MailPlan, outcome: Outcome) -> None:
        if self.fanout is None or not isinstance(plan.step, (PostNote, OpenTicket)):
            return
        from mailgate.outbound.fanout import event_for

        event = event_for(plan, outcome, url=f"{self.config.redmine.url}/issues/{outcome.ticket}",
                          site=self._site_name(plan))
        if event is not None:
            self.fanout.enqueue(event)

    def _site_name(self, plan: MailPlan) -> str | None:
        """The site whose channel hears of it: a new ticket's, or the ticket's project's
        (never the address a reply came through: a reply to Redmine's notification
        reaches triage's address, and its ticket's thread is elsewhere).  None: the
        channel the ticket's posts went to so far."""
        step = plan.step
        if isinstance(step, OpenTicket):
            return step.site.name
        found = self.config.site_for_project(getattr(step, "project", None))
        return found.name if found else None

    def _tell_sender(self, plan: MailPlan, outcome: Outcome,
                     error: BaseException | None = None) -> None:
        if self.notifier is None:
            return
        decision = notice_for(plan, outcome, error)
        if decision is not None:
            self.notifier.tell(plan, decision)


def _refused(plan: MailPlan, reason: str, error: str) -> Outcome:
    return Outcome("refused", ticket=plan.ticket, reason=reason, error=error,
                   plan=plan.record())


def _log_line(plan: MailPlan, outcome: Outcome, seconds: float) -> None:
    # One line per mail, key=value, for people and for log search.
    log.info("mail key=%s route=%s role=%s step=%s action=%s outcome=%s duration_ms=%d%s",
             plan.mail_key, plan.route_key or "-", plan.sender.role, type(plan.step).__name__,
             outcome.action or "-", outcome.kind, seconds * 1000,
             f" reason={outcome.reason!r}" if outcome.reason else "")
