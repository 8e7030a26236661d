"""Which notice, if any, the sender of a processed mail gets: read from its plan.

The plan says who may be told (``MailPlan.reply_to``: nobody for automatic
mail or the null sender) and why a refused mail was refused
(``Refuse.notice``).  What only Redmine's answer can tell (a status change its
own workflow dropped, a ticket that has gone, a write it refused) comes in the
outcome.  The text of each kind is ``mailgate.outbound.notify.TEXTS``.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailgate.errors import Forbidden, MessageTooBig, NoSuchTicket, PermanentError
from mailgate.outcome import Outcome

from .planning import MailPlan
from .plans import PostNote, Refuse

name = "notices"
description = "One notice per processed mail that fell short of what its sender meant."

#: Errors met while carrying a plan out -> the kind of notice; the first class
#: that matches wins (a subclass before its base).  Others: "rejected".
ERROR_KINDS: tuple[tuple[type, str], ...] = (
    (NoSuchTicket, "unknown-ticket"),
    (Forbidden, "forbidden"),
    (MessageTooBig, "too-large"),
)


@dataclass(frozen=True)
class NoticeDecision:
    kind: str
    #: What happened, in a few words ("Redmine's workflow refused ...").
    detail: str
    ticket: int | None


def notice_for(plan: MailPlan, outcome: Outcome | None = None,
               error: BaseException | None = None) -> NoticeDecision | None:
    """The notice for ``plan`` carried out with ``outcome`` (or failed with ``error``)."""
    if plan.reply_to is None:
        return None
    if isinstance(plan.step, Refuse):
        return NoticeDecision(plan.step.notice, plan.step.reason, plan.ticket)
    if error is not None:
        return _for_error(plan, error)
    if outcome is None:
        return None
    if outcome.kind == "status-refused":
        return NoticeDecision("status-refused", outcome.reason or "", outcome.ticket)
    step = plan.step
    # ``refused`` is also set when a default action could not apply; only a
    # command the sender wrote is something they meant and must hear about.
    if outcome.kind == "applied" and isinstance(step, PostNote) and step.decision.refused \
            and plan.commands:
        return NoticeDecision("command-refused", step.decision.refused, outcome.ticket)
    return None


def _for_error(plan: MailPlan, error: BaseException) -> NoticeDecision | None:
    # Temporary errors given up on and crashes are the operator's to retry
    # (``mailgate spool retry``): telling the sender "not recorded" could be untrue.
    if not isinstance(error, PermanentError):
        return None
    kind = next((k for cls, k in ERROR_KINDS if isinstance(error, cls)), "rejected")
    messages = getattr(error, "messages", None)
    return NoticeDecision(kind, "; ".join(messages) if messages else str(error), plan.ticket)
