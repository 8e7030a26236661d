"""What the fan-out is told about a processed mail: one ``FanoutEvent``.

``event_for`` makes it from the mail and the outcome of its processing: a new
ticket, or a reply to one (applied, or with its status change refused); any
other outcome is not worth a post.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FanoutEvent:
    mail_key: str            # idempotency key of the mail (Message-ID or sha256:...)
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


def event_for(outcome, mail, *, site: str | None, url: str, excerpt: str,
              subject: str | None = None) -> FanoutEvent | None:
    """The event for a processed mail, or None when nothing happened worth telling."""
    kinds = {"created": "new", "applied": "reply", "status-refused": "reply"}
    if outcome.kind not in kinds or outcome.ticket is None:
        return None
    return FanoutEvent(
        mail_key=mail.key, kind=kinds[outcome.kind], ticket=outcome.ticket, site=site,
        subject=subject if subject is not None else mail.subject,
        sender_name=mail.from_name, sender_address=mail.from_address, action=outcome.action,
        from_state=outcome.from_state, to_state=outcome.to_state, excerpt=excerpt, url=url)
