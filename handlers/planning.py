"""The one planning step: every decision about one mail for one recipient, made once.

``plan_mail`` decides, in this order, and records the result as a ``MailPlan``:

1. the route (``ticket<N>@``, a subject tag or a Redmine Message-ID, a site),
   with its fallback: a tag naming no ticket, sent to a site, opens one;
2. automatic mail (auto-replies, bounces, loops): ignored, never answered;
3. a duplicate: the (mail, route) was applied before (or, when an earlier attempt
   may have written it, its marker is on the ticket already);
4. the sender: role (owner / admin / other), Redmine login, verification,
   and the unknown- and unverified-sender policies;
5. the workflow decision and the note (``handlers.reply``, ``handlers.new_ticket``);
6. who may be told about it, and the notice the plan itself calls for.

Everything downstream reads the plan: the executor carries out its ``step``,
the log line, ``explain``, the Discord fan-out and the notices read the rest.
None of them parses or routes the mail again.

``screen`` is the part of the same decisions that can be known while the
sender is still connected (DATA, or the pipe before it exits): a sender the
policies refuse is refused there, with the same words the plan would record.

Facts come through ``Facts`` (``mailgate.facts``): the planner asks, it never
does I/O itself, so ``explain`` can plan with facts from the command line.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Protocol

from mailgate.config import Config, Site
from mailgate.errors import NoSuchTicket, UnknownAddress
from mailgate.mail.addresses import unread_mailbox
from mailgate.mail.idempotency import ATTEMPTED, marker, normalise_key, route_key
from mailgate.mail.message import ParsedMail
from mailgate.routing import Route, resolve_recipient, route_mail
from mailgate.trust import Verdict
from workflow import parse_commands

from . import new_ticket, reply
from .automatic import automatic_reason
from .plans import Defer, Duplicate, Ignore, OpenTicket, Plan, PostNote, Refuse, Sender, TicketView
from .senders import (NOT_NEEDED, identity, needs_proof, role_of, unknown_policy,
                      unverified_policy)

name = "planning"
description = "Route, screen, identify, decide: one plan per mail and recipient."


class Facts(Protocol):
    """What the planner asks about the world (``mailgate.facts`` answers)."""

    def ticket(self, ticket_id: int, history: bool = True) -> TicketView:
        """``history=False``: the markers may be left out, and ``has_answer`` given only
        when known (``TicketView.answer_known``)."""

    def login_for(self, address: str) -> str | None: ...

    def sender_verdict(self, mail: ParsedMail, via_our_mta: bool) -> Verdict: ...


#: ``seen(mail_key, route_key)``: the recorded outcome of an earlier delivery, or None;
#: ``{"kind": ATTEMPTED}`` when an earlier attempt began to write and did not record.
Seen = Callable[[str, str], "dict | None"]

@dataclass(frozen=True)
class MailPlan:
    """Every decision about one mail for one recipient.  Plain data, recorded."""

    mail_key: str
    recipient: str
    #: Where the mail goes; None when no route could be made (then ``step`` refuses).
    route: Route | None
    #: Why the mail is automatic (no person wrote it), or None.
    automatic: str | None
    sender: Sender
    #: What the executor does: PostNote, OpenTicket, Refuse, Defer, Ignore, Duplicate.
    step: Plan
    #: The commands the sender wrote at the top of the mail, as written.
    commands: tuple[str, ...] = ()
    #: Where a notice to the sender may go (the envelope sender), or None: nobody
    #: may be told (automatic mail, the null sender, the mail system itself).
    reply_to: str | None = None
    #: What identifies the mail in a notice (never more of what it said).
    subject: str = ""
    message_id: str | None = None
    references: tuple[str, ...] = field(default=())
    #: The address of the site the mail reached, suggested in notices.
    site_address: str | None = None

    @property
    def route_key(self) -> str | None:
        if self.route is None:
            return None
        return route_key(self.route.kind, self.route.ticket,
                         self.route.site.name if self.route.site else None)

    @property
    def ticket(self) -> int | None:
        ticket = getattr(self.step, "ticket", None)
        return ticket if ticket is not None else (self.route.ticket if self.route else None)

    @property
    def site(self) -> Site | None:
        if isinstance(self.step, OpenTicket):
            return self.step.site
        return self.route.site if self.route else None

    def record(self) -> dict:
        """What was decided, as it is kept with the mail and logged."""
        step = self.step
        record = {
            "route": self.route_key or "-", "how": self.route.how if self.route else None,
            "step": type(step).__name__, "role": self.sender.role,
            "login": self.sender.login, "verified": self.sender.verified,
            "automatic": self.automatic, "reason": getattr(step, "reason", None),
        }
        decision = getattr(step, "decision", None)
        if decision is not None:
            record.update(action=decision.action, from_state=decision.from_state,
                          to_state=decision.to_state, refused=decision.refused)
        if isinstance(step, (PostNote, OpenTicket)):
            record["as_user"] = step.as_user
            if step.new_account is not None:
                record["new_account"] = step.new_account.login
        if isinstance(step, OpenTicket) and step.recorded:
            record["recorded"] = dict(step.recorded)
        return {k: v for k, v in record.items() if v is not None}


def plan_mail(mail: ParsedMail, recipient: str, facts: Facts, config: Config, *,
              envelope_sender: str | None = None, via_our_mta: bool = False,
              seen: Seen = lambda key, route: None) -> MailPlan:
    """The plan for ``mail`` to ``recipient`` (asks ``facts``; writes nothing).

    ``via_our_mta``: the mail came through our own MTA, so its topmost
    Authentication-Results are our MTA's (``TrustSettings.through_our_mta``).
    """
    key = normalise_key(mail.key)
    try:
        route = route_mail(resolve_recipient(recipient, config), mail)
    except UnknownAddress as exc:
        return _plan(mail, recipient, None, None, _unknown(mail),
                     Refuse(str(exc), type(exc), notice="unknown-ticket"), envelope_sender,
                     facts, via_our_mta)
    automatic = automatic_reason(mail.headers, envelope_sender, mail.from_address,
                                 content_type=mail.headers.get("content-type", "text/plain"),
                                 own_loop_id=config.hostname,
                                 redmine_address=config.redmine.notification_address)
    if automatic:
        # Never a note, never a refusal: answering robots makes mail loops.
        return _plan(mail, recipient, route, automatic, _unknown(mail),
                     Ignore(f"automatic mail: {automatic}"), envelope_sender, facts,
                     via_our_mta)
    asked = _key_of(route)
    earlier = seen(key, asked)
    # Only a mail whose write was begun before can be on the ticket already (a crash
    # after Redmine answered): only then are the ticket's markers looked for.
    route, ticket, step = _ticket_for(route, facts, history=_attempted(earlier))
    if _key_of(route) != asked:
        earlier = seen(key, _key_of(route))     # a tag naming no ticket: a new one
    if step is None:
        step = _duplicate(earlier)
    if step is not None:
        return _plan(mail, recipient, route, None, _unknown(mail), step, envelope_sender,
                     facts, via_our_mta)
    login = facts.login_for(mail.from_address)
    mark = marker(mail.key, _key_of(route), config.redmine.marker_secret)
    claimed = role_of(mail.from_address, ticket.owners if ticket else (), config)
    # Proof of identity is looked for only where it decides something (saves DNS).
    verdict = facts.sender_verdict(mail, via_our_mta) \
        if needs_proof(claimed, login, route.site, config) else NOT_NEEDED
    if ticket is None:
        step = new_ticket.handle(mail, route.site, login, config, mark, verdict)
        if isinstance(step, OpenTicket):
            step = replace(step, may_exist=_attempted(earlier))
    else:
        step = reply.handle(mail, ticket, login, route.site, config, mark, verdict)
        if _decided_without(step, ticket):
            ticket = facts.ticket(ticket.id, history=True)
            step = reply.handle(mail, ticket, login, route.site, config, mark, verdict)
    return _plan(mail, recipient, route, None, _sender(step, mail, login), step,
                 envelope_sender, facts, via_our_mta)


def screen(mail: ParsedMail, recipient: str, facts: Facts, config: Config, *,
           envelope_sender: str | None = None, via_our_mta: bool = False) -> Refuse | None:
    """What the plan would refuse that can be known at DATA (the header fields only).

    Only the ``reject`` policies are screened here, and only when one applies:
    the others cost Redmine requests and DNS lookups the worker makes anyway.
    """
    route = route_mail(resolve_recipient(recipient, config), mail)
    site = route.site
    if not screen_asks(site, config):
        return None
    if automatic_reason(mail.headers, envelope_sender, mail.from_address,
                        content_type=mail.headers.get("content-type", "text/plain"),
                        own_loop_id=config.hostname,
                        redmine_address=config.redmine.notification_address):
        return None
    login = facts.login_for(mail.from_address)
    sender = Sender(mail.from_address, mail.from_name, "other", login)
    if login is None and unknown_policy(site, config) == "reject":
        if _reporter_of(route, mail, facts, config):
            return None     # the worker checks their proof, with the ticket
        who = identity(sender, NOT_NEEDED, site, config)
    elif unverified_policy(site, config) == "reject":
        # The role does not matter here: every account needs proof to be written as.
        who = identity(sender, facts.sender_verdict(mail, via_our_mta), site, config)
    else:
        return None
    return who if isinstance(who, Refuse) else None


def screen_asks(site: Site | None, config: Config) -> bool:
    """Whether ``screen`` may ask the facts (Redmine, DNS) about mail to ``site``
    (None: a ticket address): only where a ``reject`` policy applies.  Elsewhere it
    refuses nothing, so a listener can screen without a thread (mailgate.intake)."""
    return unknown_policy(site, config) == "reject" or unverified_policy(site, config) == "reject"


# -- the steps ---------------------------------------------------------------------------

def _reporter_of(route: Route, mail: ParsedMail, facts: Facts, config: Config) -> bool:
    """Whether a stranger's reply comes from the ticket's recorded reporter."""
    if route.kind != "reply" or not config.redmine.reporter_field:
        return False
    try:
        reporter = facts.ticket(route.ticket, history=False).reporter_address
        return mail.from_address.lower() == (reporter or "")
    except NoSuchTicket:
        return False


def _ticket_for(route: Route, facts: Facts, history: bool
                ) -> tuple[Route, TicketView | None, Plan | None]:
    """(the route, as it stands; the ticket it replies to; a step, if that decides it)."""
    if route.kind != "reply":
        return route, None, None
    try:
        return route, facts.ticket(route.ticket, history=history), None
    except NoSuchTicket as exc:
        if route.site is None:
            return route, None, Refuse(str(exc), NoSuchTicket, notice="unknown-ticket")
    # "[#123]" in a subject to a site address that names no real ticket: the
    # sender meant to write to the site, so open one there.
    return Route("new", None, route.site, f"{route.how} names no ticket"), None, None


def _attempted(earlier: dict | None) -> bool:
    return earlier is not None and earlier.get("kind") == ATTEMPTED


def _decided_without(step: Plan, ticket: TicketView) -> bool:
    """Whether the workflow refused a command on facts read without the ticket's history
    that did not know if it had an answer: a confirm needs one, so decide again on
    the whole ticket (the only fact read without the history that can be short)."""
    return (isinstance(step, PostNote) and step.decision.refused is not None
            and not ticket.answer_known)


def _duplicate(earlier: dict | None) -> Duplicate | None:
    if earlier is None or _attempted(earlier):
        return None
    ticket = earlier.get("ticket")
    return Duplicate(f"already on ticket #{ticket}" if ticket
                     else f"already applied: {earlier.get('kind')}")


def _key_of(route: Route) -> str:
    return route_key(route.kind, route.ticket, route.site.name if route.site else None)


def _sender(step: Plan, mail: ParsedMail, login: str | None) -> Sender:
    found = getattr(step, "sender", None)
    return found if found is not None else Sender(mail.from_address, mail.from_name, "other",
                                                  login)


def _unknown(mail: ParsedMail) -> Sender:
    """The sender of a mail nobody looked up (refused or ignored before that)."""
    return Sender(mail.from_address, mail.from_name, "other", None)


def _plan(mail: ParsedMail, recipient: str, route: Route | None, automatic: str | None,
          sender: Sender, step: Plan, envelope_sender: str | None, facts: Facts,
          via_our_mta: bool) -> MailPlan:
    commands, _ = parse_commands(mail.body)
    written = tuple(f"{name}: {value}" for name, value in (("Status", commands.status),
                                                           ("Action", commands.action)) if value)
    site = route.site if route else None
    return MailPlan(
        mail_key=normalise_key(mail.key), recipient=recipient, route=route,
        automatic=automatic, sender=sender, step=step, commands=written,
        reply_to=None if automatic else _reply_to(mail, envelope_sender, sender, facts,
                                                  via_our_mta),
        subject=mail.subject, message_id=mail.message_id, references=mail.references,
        site_address=site.address if site else None)


def _reply_to(mail: ParsedMail, envelope_sender: str | None, sender: Sender, facts: Facts,
              via_our_mta: bool) -> str | None:
    """Where a notice may go: the return path (RFC 3834 §4; From: when it is unknown),
    and only when it is proven to be the sender's, so that a forged envelope sender
    cannot aim our notices at someone else (issue 18): the verified From: itself, or
    an envelope sender our MTA's SPF check passed.  Never the mail system."""
    to = (mail.from_address if envelope_sender is None else envelope_sender).strip().strip("<>")
    if not to or "@" not in to or any(c in to for c in "\r\n<> ,;\0"):
        return None
    if unread_mailbox(to):
        return None
    if sender.verified and to.lower() == sender.address.lower():
        return to
    return to if facts.return_path_proven(mail, to, via_our_mta) else None
