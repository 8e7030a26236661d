"""Intake: the one step every source takes a mail through before it is answered.

SMTP, LMTP, the pipe transport and replay all end in ``Intake.receive``.  It
checks what can be checked while the sender is still connected (rate, size,
the header fields, the address, and what the plan would refuse about the
sender: ``handlers.planning.screen``) and commits the mail to the spool: only
then may an edge say 250 or exit 0.  Nothing here decides what the mail
becomes; the worker plans that, once, from the spooled bytes.

``receive`` is two steps, ``screen`` and ``commit``, which the SMTP listener
calls apart: it screens on its event loop when nothing needs Redmine or the
store (``ask=False``), and its spool writer commits many screened mails at once
(mailgate.intake.spool_writer).  The checks are the same ones either way.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Sequence

from mailgate.config import Config
from mailgate.errors import (MailgateError, MailTakenElsewhere, MessageTooBig, NoSuchTicket,
                             RedmineUnavailable, UnknownAddress)
from mailgate.mail.message import RECIPIENT_HEADERS, ParsedMail, parse_mail, recipient_hints
from mailgate.intake.ratelimit import sender_key
from mailgate.routing import Recipient, resolve_recipient, route_mail
from mailgate.store.receipts import Receipt
from mailgate.store.spool import Spool

log = logging.getLogger("mailgate")

#: How long a ticket's existence, once confirmed, is trusted without asking Redmine.
KNOWN_TICKET_SECONDS = 300.0


@dataclass(frozen=True)
class Envelope:
    mail_from: str
    recipients: tuple[str, ...]
    raw: bytes
    #: How it reached us: "lmtp", "pipe", "smtp <client address>", "replay",
    #: "imap <mailbox>".
    via: str = "smtp"
    #: A mailbox source's record of where the mail was, committed with the mail
    #: (mailgate.store.receipts); None for mail handed to us.
    receipt: Receipt | None = None


@dataclass(frozen=True)
class Delivery:
    """The answer for one recipient: spooled (``spool_id``) or refused (``error``)."""

    recipient: str
    spool_id: int | None = None
    error: MailgateError | None = None


@dataclass(frozen=True)
class Screened:
    """A mail checked for each recipient (``Intake.screen``), not yet spooled."""

    envelope: Envelope
    #: The mail's key (its Message-ID, or a digest), for the log line.
    key: str
    #: The recipients it passed, in RCPT order, with their order keys.
    accepted: tuple[tuple[str, str | None], ...]
    #: The recipients it did not pass, with why.
    refused: dict[str, Delivery]


class Intake:
    def __init__(self, config: Config, client, spool: Spool, facts=None):
        self.config = config
        #: None on the pipe's --queue-only path: nothing is asked of Redmine there.
        self.client = client
        self.spool = spool
        self.facts = facts
        #: A per-sender rate limit checked on receive (the pipe's; serve checks at MAIL).
        self.sender_limit = None
        #: ticket id -> when Redmine last confirmed it exists (time.monotonic()).
        self._known_tickets: dict[int, float] = {}

    # -- what each source calls ----------------------------------------------------

    def check_recipient(self, address: str, *, ask: bool = True) -> Recipient | None:
        """RCPT-time check: an address we serve, and for ticket<N>@ a ticket that exists.

        ``ask=False``: nothing is asked of Redmine (the SMTP listener's event loop);
        None when the answer needs it: a ticket not confirmed lately.
        """
        recipient = resolve_recipient(address, self.config)
        if recipient.kind == "ticket" and self.client is not None:
            if not ask and not self._ticket_known(recipient.ticket):
                return None
            self._check_ticket(recipient.ticket)
        return recipient

    def check_size(self, raw: bytes) -> None:
        if len(raw) > self.config.max_message_size:
            raise MessageTooBig(f"message exceeds {self.config.max_message_size} bytes")

    def receive(self, envelope: Envelope, *, all_or_nothing: bool = False) -> list[Delivery]:
        """Check the mail for each recipient and spool it durably for those it passes.

        SMTP gives one answer for all recipients after DATA, so it asks for
        ``all_or_nothing``: the first refusal is raised and nothing is spooled
        (spooling some would be answered with a 5xx and then sent again).
        """
        screened = self.screen(envelope, all_or_nothing=all_or_nothing)
        ids = self.spool.add(envelope.mail_from, screened.accepted, envelope.raw,
                             envelope.via, envelope.receipt) if screened.accepted else []
        return self._answer(screened, ids)

    def screen(self, envelope: Envelope, *, all_or_nothing: bool = False,
               ask: bool = True) -> Screened | None:
        """Every check ``receive`` makes before the commit (refusals as it raises them).

        ``ask=False``: only if no check needs Redmine or the store, so that the
        caller's thread never blocks (the SMTP listener's event loop); None if one
        would (a rate limit to count, a ``reject`` policy to apply): the caller
        then calls ``receive`` in a thread.
        """
        if self.sender_limit is not None:
            if not ask:
                return None     # its buckets are in the store
            self.sender_limit.check(sender_key(envelope.mail_from))
        self.check_size(envelope.raw)
        # Routing and screening need the header fields only: the body is parsed
        # by the worker, after the 250, so the listener stays fast on big mail.
        mail = parse_mail(envelope.raw, headers_only=True)
        refused: dict[str, Delivery] = {}
        accepted: list[tuple[str, str | None]] = []
        for address in envelope.recipients:
            try:
                recipient = resolve_recipient(address, self.config)
                if not ask and self._asks(recipient):
                    return None
                accepted.append((address, self._screen(address, recipient, mail, envelope)))
            except MailgateError as exc:
                refused[address] = Delivery(address, error=exc)
        if all_or_nothing and refused:
            raise next(iter(refused.values())).error
        return Screened(envelope, mail.key, tuple(accepted), refused)

    def commit(self, batch: Sequence[Screened]) -> list[list[Delivery] | MailgateError]:
        """Spool screened mails in one transaction (one commit, one fsync for all of
        them) and answer each: its deliveries, or why none of it was spooled."""
        spooled = [s for s in batch if s.accepted]
        ids = iter(self.spool.add_many([
            (s.envelope.mail_from, s.accepted, s.envelope.raw, s.envelope.via,
             s.envelope.receipt) for s in spooled]))
        answers: list[list[Delivery] | MailgateError] = []
        for screened in batch:
            mine = next(ids) if screened.accepted else []
            if mine is None:
                receipt = screened.envelope.receipt
                answers.append(MailTakenElsewhere(f"{receipt.source} UID {receipt.uid}:"
                                                  " already taken"))
            else:
                answers.append(self._answer(screened, mine))
        return answers

    def _answer(self, screened: Screened, ids: Sequence[int]) -> list[Delivery]:
        """The deliveries of a committed mail, in RCPT order, each logged."""
        results = dict(screened.refused)
        results.update({a: Delivery(a, spool_id=i)
                        for (a, _), i in zip(screened.accepted, ids)})
        recipients = screened.envelope.recipients
        for address in recipients:
            log.info("received %s for <%s>: %s", screened.key, address,
                     results[address].error or f"spooled as {results[address].spool_id}")
        return [results[a] for a in recipients]

    def take(self, raw: bytes, recipient: str | None = None,
             sender: str | None = None, via: str = "pipe", *,
             hints: HeaderHints | None = None, receipt: Receipt | None = None) -> Delivery:
        """One mail without an SMTP envelope (the pipe, replay, a mailbox): what is
        missing of the envelope is read from the header fields, the same way for
        every such source (``hints``: a mailbox's own order of them, and its site)."""
        self.check_size(raw)
        mail = parse_mail(raw, headers_only=True)
        recipient = recipient or recipient_from_headers(mail, self.config, hints)
        self.check_recipient(recipient)
        sender = sender if sender is not None else envelope_sender_from_headers(mail)
        [delivery] = self.receive(Envelope(sender, (recipient,), raw, via, receipt),
                                  all_or_nothing=True)
        return delivery

    # -- the checks ------------------------------------------------------------------

    def _ticket_known(self, ticket: int) -> bool:
        """Whether the ticket was confirmed lately: its existence is not asked again."""
        confirmed = self._known_tickets.get(ticket)
        if confirmed is not None and time.monotonic() - confirmed < KNOWN_TICKET_SECONDS:
            return True
        # The worker (same client) read it lately: it exists, no need to ask again.
        reads = getattr(self.client, "reads", None)
        return reads is not None and reads.seen_within(ticket, KNOWN_TICKET_SECONDS)

    def _check_ticket(self, ticket: int) -> None:
        if self._ticket_known(ticket):
            return
        # One confirmed at any time is still accepted while Redmine is down, so
        # the spool takes replies during an outage instead of deferring them all.
        confirmed = self._known_tickets.get(ticket)
        now = time.monotonic()
        try:
            exists = self.client.issue_exists(ticket)
        except RedmineUnavailable:
            if confirmed is not None:
                return
            raise
        if not exists:
            self._known_tickets.pop(ticket, None)
            raise NoSuchTicket(f"no such ticket #{ticket}")
        self._known_tickets[ticket] = now

    def _asks(self, recipient: Recipient) -> bool:
        """Whether screening mail to ``recipient`` may ask Redmine: only where the plan
        applies a ``reject`` policy (the route's site is the address's, route_mail)."""
        from handlers.planning import screen_asks

        return self.facts is not None and screen_asks(recipient.site, self.config)

    def _screen(self, address: str, recipient: Recipient, mail: ParsedMail,
                envelope: Envelope) -> str | None:
        """Refuse now what the plan would refuse and can be known now; return the
        mail's order key (replies to one ticket are applied in arrival order)."""
        route = route_mail(recipient, mail)
        # Where no reject policy applies, the plan's screen refuses nothing.
        if self._asks(recipient):
            from handlers.planning import screen

            refusal = screen(mail, address, self.facts, self.config,
                             envelope_sender=envelope.mail_from,
                             via_our_mta=self.config.trust.through_our_mta(envelope.via))
            if refusal is not None:
                raise refusal.error(refusal.reason)
        return f"ticket:{route.ticket}" if route.kind == "reply" else None


@dataclass(frozen=True)
class HeaderHints:
    """How a source without an envelope finds the recipient in the header fields."""

    #: Header field names, most trustworthy first.
    order: tuple[str, ...] = RECIPIENT_HEADERS
    #: A mailbox bound to one site: its mail opens tickets there (a ticket<ID>@
    #: address in the headers still makes it a reply to that ticket).
    site_address: str | None = None


def recipient_from_headers(mail: ParsedMail, config: Config,
                           hints: HeaderHints | None = None) -> str:
    """For mail without an envelope (pipe, replay, a mailbox): the first header
    address we serve, in the order the source trusts the fields."""
    addresses = mail.original_to if hints is None or hints.order == RECIPIENT_HEADERS \
        else recipient_hints(mail, hints.order)
    for address in addresses:
        try:
            recipient = resolve_recipient(address, config)
        except UnknownAddress:
            continue
        if hints is None or hints.site_address is None or recipient.kind == "ticket":
            return address
    if hints is not None and hints.site_address is not None:
        return hints.site_address
    raise UnknownAddress("no recipient given and no address in the headers that is served here")


def envelope_sender_from_headers(mail: ParsedMail) -> str:
    """For mail without an envelope: the Return-Path our MTA wrote, else From:."""
    value = mail.headers.get("return-path", "").strip().strip("<>")
    return value or mail.from_address
