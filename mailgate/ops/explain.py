"""``mailgate explain``: what would happen to a mail, decided exactly as the worker
decides it, with nothing written anywhere.

With a ticket state and owner given on the command line it does not contact
Redmine at all; otherwise it reads the ticket and the sender from Redmine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from handlers.planning import MailPlan, Seen, plan_mail
from handlers.plans import Defer, Duplicate, Ignore, OpenTicket, PostNote, Refuse

from mailgate.config import Config
from mailgate.errors import MailgateError
from mailgate.facts import Facts
from mailgate.intake.receive import recipient_from_headers
from mailgate.mail.message import ParsedMail, parse_mail


@dataclass
class Explanation:
    data: dict[str, Any]

    def text(self) -> str:
        d = self.data
        route = d["route"]
        where = {"reply": f"reply to ticket #{route['ticket']}",
                 "new": f"new ticket in {route['site']}"}.get(route["kind"], route["kind"])
        lines = [f"{d['file']}: {where}"]
        if d["sender"]["address"]:
            s = d["sender"]
            # No role for mail the plan stopped before looking at its sender.
            role = f", role {s['role']}" if s["role"] else ""
            lines.append(f"  from {s['name']} <{s['address']}>{role}")
        if d["action"] == "open":
            lines.append("  opens a new ticket")
        elif d["action"]:
            lines.append(f"  {d['action']}: {d['from_state']} -> {d['to_state']}")
        for key in ("refused", "reason"):
            if d[key]:
                lines.append(f"  {key}: {d[key]}")
        if d["body"]:
            lines.append("  | " + "\n  | ".join(d["body"].splitlines()))
        return "\n".join(lines)


def explain(name: str, raw: bytes, config: Config, facts: Facts,
            recipient: str | None = None, via: str = "pipe",
            seen: Seen = lambda key, route: None) -> Explanation:
    """``via``: how the mail reached us, as the spool would record it (the default:
    handed over by our MTA, whose Authentication-Results then count); ``seen``: the
    spool's record of mail already applied (a duplicate is said to be one)."""
    data: dict[str, Any] = {
        "file": name, "route": {"kind": "rejected", "ticket": None, "site": None},
        "sender": {"address": None, "name": None, "role": None, "verified": False},
        "from_state": None, "action": None, "to_state": None, "refused": None,
        "subject": None, "body": None, "attachments": [], "reason": None,
    }
    try:
        mail = parse_mail(raw)
        _describe_mail(data, mail)
        address = recipient or recipient_from_headers(mail, config)
        plan = plan_mail(mail, address, facts, config,
                         via_our_mta=config.trust.through_our_mta(via), seen=seen)
    except MailgateError as exc:
        data["reason"] = str(exc)
        return Explanation(data)
    route = plan.route
    if route is not None:
        data["route"] = {"kind": route.kind, "ticket": route.ticket,
                         "site": route.site.name if route.site else None}
    data["plan"] = plan.record()
    _describe_plan(data, plan)
    return Explanation(data)


def _describe_mail(data: dict, mail: ParsedMail) -> None:
    data["sender"].update(address=mail.from_address, name=mail.from_name)
    data["subject"] = mail.subject
    data["attachments"] = _attachments(mail.attachments)


def _attachments(attachments) -> list[dict]:
    return [{"filename": a.filename, "size": a.size, "content_type": a.content_type}
            for a in attachments]


def _describe_plan(data: dict, mail_plan: MailPlan) -> None:
    plan = mail_plan.step
    if isinstance(plan, (PostNote, OpenTicket)):
        # What would be attached, which may include the original mail.
        data["attachments"] = _attachments(plan.attachments)
    if isinstance(plan, PostNote):
        decision = plan.decision
        data["sender"].update(role=plan.sender.role, verified=plan.sender.verified)
        data.update(from_state=decision.from_state, action=decision.action,
                    to_state=decision.to_state, refused=decision.refused, body=plan.text)
    elif isinstance(plan, OpenTicket):
        data["sender"].update(role=plan.sender.role, verified=plan.sender.verified)
        data.update(action="open", to_state="open", body=plan.description,
                    reason=f"new ticket in project {plan.site.project}")
    elif isinstance(plan, Refuse):
        data["route"]["kind"] = "rejected"
        data["reason"] = plan.reason
    elif isinstance(plan, (Ignore, Duplicate, Defer)):
        data["route"]["kind"] = {Ignore: "ignored", Duplicate: "duplicate",
                                 Defer: "deferred"}[type(plan)]
        data["reason"] = plan.reason
