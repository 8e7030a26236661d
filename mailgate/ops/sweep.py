"""The time-based workflow: expiry (Launchpad's rule) and, with Discord, reminders;
and the store's retention (``purge_finished``).

A ticket in ``open`` or ``needs-info`` with no activity for ``expire_after_days``
gets the ``expire`` action as the ``system`` role: a note saying why, and the
status Expired.  The decision is the workflow's like any other, so a site's
table decides whether expiry applies.  Running the sweep twice changes nothing
more: an expired ticket is no longer open, and the note itself is activity.

``sweep`` takes ``now`` from its caller, so tests (and ``--dry-run``) control
the clock.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from workflow import Commands

from mailgate.outbound.fanout import FanoutEvent
from mailgate.mail.idempotency import marker, with_marker

log = logging.getLogger("mailgate.ops.sweep")

EXPIRABLE = ("open", "needs-info")


@dataclass(frozen=True)
class SweepAction:
    ticket: int
    action: str
    from_state: str
    to_state: str
    done: bool
    reason: str = ""

    def __str__(self) -> str:
        verb = "" if self.done else "would "
        return f"#{self.ticket}: {verb}{self.action} {self.from_state} -> {self.to_state}" + (
            f" ({self.reason})" if self.reason else "")


def expiry_note(days: float) -> str:
    return (f"This ticket has expired: nobody wrote on it for {days:g} days. "
            "If it still needs attention, reply to this ticket's mail and it opens again.")


def sweep(gateway, now: datetime | None = None, dry_run: bool = False) -> list[SweepAction]:
    """Expire what is due; returns what was (or, with ``dry_run``, would be) done."""
    config = gateway.config
    now = now or datetime.now(timezone.utc)
    if not dry_run:
        # First: it needs only the store, and Redmine being down must not stop it.
        purge_finished(gateway, now)
    days = config.expire_after_days
    status_ids = gateway.facts.status_ids
    cutoff = now - timedelta(days=days)
    actions = []
    for state in EXPIRABLE:
        for issue in gateway.client.issues(status_id=status_ids[state], updated_before=cutoff):
            actions.append(_expire(gateway, issue, state, days, dry_run))
    if gateway.fanout is not None and config.remind_after_hours:
        actions += _remind(gateway, now, config.remind_after_hours, dry_run)
    return actions


def purge_finished(gateway, now: datetime) -> dict[str, int]:
    """Retention: delete what finished more than ``spool.keep_done_days`` ago from the
    whole store (done mails, sent posts and notices; mailgate.store.retention)."""
    before = now - timedelta(days=gateway.config.keep_done_days)
    purged = gateway.spool.purge(before.timestamp())
    if any(purged.values()):
        log.info("sweep: purged what finished before %s: %s", before.isoformat(timespec="seconds"),
                 ", ".join(f"{count} {kind}" for kind, count in purged.items()))
    return purged


def _remind(gateway, now: datetime, hours: float, dry_run: bool) -> list[SweepAction]:
    """One Discord reminder per ``hours`` an open ticket goes without an update."""
    config = gateway.config
    cutoff = now - timedelta(hours=hours)
    actions = []
    for issue in gateway.client.issues(status_id=gateway.facts.status_ids["open"],
                                       updated_before=cutoff):
        idle = now - _parse_time(issue.updated_on)
        periods = int(idle / timedelta(hours=hours))
        site = config.site_for_project(issue.project_name)
        if not dry_run:
            # Keyed on the last update and the period: the queue's unique key makes
            # a second sweep in the same period a no-op, and the next period a new post.
            gateway.fanout.enqueue(FanoutEvent(
                mail_key=f"reminder:{issue.id}:{issue.updated_on}:{periods}", kind="reminder",
                ticket=issue.id, site=site.name if site else None, subject=issue.subject,
                sender_name="", sender_address="", action=None, from_state=None,
                to_state=None, excerpt=f"No update for {idle.total_seconds() / 3600:.0f} hours.",
                url=f"{config.redmine.url}/issues/{issue.id}"))
        actions.append(SweepAction(issue.id, "remind", "open", "open", not dry_run,
                                   f"no update for {periods * hours:g}+ hours"))
    return actions


def _parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _expire(gateway, issue, state: str, days: float, dry_run: bool) -> SweepAction:
    decision = gateway.config.workflow.decide("system", state, Commands(action="expire"))
    if decision.refused:
        return SweepAction(issue.id, "expire", state, state, False, decision.refused)
    if dry_run:
        return SweepAction(issue.id, "expire", state, decision.to_state, False)
    # Keyed on the last activity: a ticket that expires again later gets a new note.
    key = f"expire:{issue.id}:{issue.updated_on}"
    mark = marker(key, f"ticket:{issue.id}", gateway.config.redmine.marker_secret)
    result = gateway.client.add_note(issue.id, with_marker(expiry_note(days), mark),
                                     status_id=gateway.facts.status_ids[decision.to_state])
    done = result.status_applied
    reason = "" if done else "status change refused by Redmine's workflow"
    log.info("sweep: expired #%s (%s -> %s)%s", issue.id, state, decision.to_state,
             f": {reason}" if reason else "")
    _tell_expiry(gateway, issue, key, state, decision.to_state if done else state, days)
    return SweepAction(issue.id, "expire", state, decision.to_state, done, reason)


def _tell_expiry(gateway, issue, key: str, state: str, to_state: str, days: float) -> None:
    """The expiry in the ticket's Discord thread.  Its note carries our marker, so the
    Redmine watcher (mailgate.watcher) leaves it to us, as it does mail we applied."""
    if gateway.fanout is None:
        return
    config = gateway.config
    names = {s: config.redmine.statuses.get(s, title)
             for s, title in config.workflow.table.states.items()}
    site = config.site_for_project(issue.project_name)
    gateway.fanout.enqueue(FanoutEvent(
        mail_key=key, kind="reply", ticket=issue.id, site=site.name if site else None,
        subject=issue.subject, sender_name="mailgate (expiry)", sender_address="",
        action="expire", from_state=names[state], to_state=names[to_state],
        excerpt=expiry_note(days), url=f"{config.redmine.url}/issues/{issue.id}"))
