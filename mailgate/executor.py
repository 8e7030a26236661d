"""The one place where plans become writes in Redmine."""

from __future__ import annotations

from typing import Mapping

from handlers.plans import Duplicate, Ignore, OpenTicket, Plan, PostNote

from mailgate.outcome import Outcome


def execute(plan: Plan, client, status_ids: Mapping[str, int]) -> Outcome:
    """Carry out a plan's step.  Refuse and Defer never come here: they write
    nothing, and ``mailgate.processing`` turns them into their outcome."""
    if isinstance(plan, PostNote):
        return _post_note(plan, client, status_ids)
    if isinstance(plan, OpenTicket):
        return _open_ticket(plan, client)
    if isinstance(plan, Ignore):
        return Outcome("ignored", reason=plan.reason)
    if isinstance(plan, Duplicate):
        return Outcome("duplicate", reason=plan.reason)
    raise TypeError(f"not a plan: {plan!r}")


def _uploads(client, plan) -> list[dict]:
    return [client.upload(a.data, a.filename, a.content_type) for a in plan.attachments]


def _post_note(plan: PostNote, client, status_ids: Mapping[str, int]) -> Outcome:
    decision = plan.decision
    status_id = status_ids[decision.to_state] if decision.changes_state else None
    result = client.add_note(plan.ticket, plan.text, status_id=status_id,
                             uploads=_uploads(client, plan), as_user=plan.as_user)
    kind, reason = "applied", None
    if status_id is not None and not result.status_applied:
        # Redmine keeps the note but silently drops a status change its own
        # workflow does not allow for that user: report it, never as success.
        kind = "status-refused"
        reason = (f"status change to {decision.to_state} refused by Redmine's workflow"
                  f" for {plan.as_user}")
    return Outcome(kind, ticket=plan.ticket, journal_id=result.journal_id,
                   action=decision.action, from_state=decision.from_state,
                   to_state=decision.to_state if kind == "applied" else decision.from_state,
                   refused=decision.refused, reason=reason)


def _open_ticket(plan: OpenTicket, client) -> Outcome:
    site = plan.site
    if plan.marker:
        # A crash after Redmine created the ticket but before we recorded it.
        found = client.find_issue_with_text(site.project, plan.marker)
        if found is not None:
            return Outcome("duplicate", ticket=found, reason=f"already ticket #{found}")
    tracker_id = client.tracker_id(site.tracker) if site.tracker else None
    fields = dict(site.fields)
    custom_fields = fields.pop("custom_fields", None)
    ticket = client.create_issue(site.project, plan.subject, plan.description,
                                 tracker_id=tracker_id, custom_fields=custom_fields,
                                 uploads=_uploads(client, plan), extra=fields,
                                 as_user=plan.as_user)
    return Outcome("created", ticket=ticket, action="open", to_state="open",
                   reason=f"new ticket in {site.project}")
