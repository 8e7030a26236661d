"""What the fan-out is told about a processed mail: one ``FanoutEvent``.

``event_for`` makes it from the mail's plan (``handlers.planning.MailPlan``)
and the outcome of carrying it out: a new ticket, or a reply to one (applied,
or with its status change refused); any other outcome is not worth a post.
Nothing here parses or routes the mail: the plan has already said it all.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailgate.mail.idempotency import without_marker


@dataclass(frozen=True)
class FanoutEvent:
    mail_key: str            # idempotency key of the mail and its route
    kind: str                # "new", "reply", or "reminder" (from the sweep)
    ticket: int
    site: str | None         # site name; None: the ticket's channel so far, else triage
    subject: str
    sender_name: str
    sender_address: str
    action: str | None       # e.g. "answer"
    from_state: str | None
    to_state: str | None
    excerpt: str             # note text (truncated and escaped when rendered)
    url: str                 # link to the ticket in Redmine


_KINDS = {"created": "new", "applied": "reply", "status-refused": "reply"}


def event_for(plan, outcome, *, site: str | None, url: str) -> FanoutEvent | None:
    """The event for a carried-out plan, or None when nothing happened worth telling."""
    step = plan.step
    if outcome.kind not in _KINDS or outcome.ticket is None:
        return None
    # The text as the mail has it: what Redmine is given is escaped for its formatting.
    text = getattr(step, "excerpt", "") or getattr(step, "description", None) \
        or getattr(step, "text", "")
    return FanoutEvent(
        # One post per (mail, route): the same mail on two tickets is two posts.
        mail_key=f"{plan.mail_key}|{plan.route_key}", kind=_KINDS[outcome.kind],
        ticket=outcome.ticket, site=site, subject=getattr(step, "subject", "") or plan.subject,
        sender_name=plan.sender.name, sender_address=plan.sender.address,
        action=outcome.action, from_state=outcome.from_state, to_state=outcome.to_state,
        excerpt=without_marker(text), url=url)
