"""The one dispatch path: SMTP, LMTP, the pipe transport and replay all come here.

``Gateway.receive`` is what every edge calls with a raw mail and its
envelope.  It checks what can be checked before we answer (size, parse,
route, sender policy) and commits the mail to the spool: only then may an
edge say 250 or exit 0.  ``Gateway.process`` is what the worker runs on a
spooled mail: route, gather facts, let a handler decide, execute the plan.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace

from typing import TYPE_CHECKING

from .config import Config
from .errors import (MailgateError, MessageTooBig, NoSuchTicket, RedmineUnavailable,
                     SenderNotPermitted, UnknownAddress)
from .idempotency import marker, normalise_key, route_key, without_marker
from .message import ParsedMail, parse_mail
from .outcome import Outcome
from .ratelimit import sender_key
from .routing import Recipient, Route, resolve_recipient, route_mail
from .spool import Spool, SpooledMail, open_spool

# The worker's side (handlers, Redmine, Discord, metrics) is imported where it is
# used: the pipe transport's spool-and-exit path runs once per mail and must not
# pay ~300 ms of imports it never needs.
if TYPE_CHECKING:
    from handlers.plans import Plan

    from .facts import Facts

log = logging.getLogger("mailgate")

#: How long a ticket's existence, once confirmed, is trusted without asking Redmine.
KNOWN_TICKET_SECONDS = 300.0


@dataclass(frozen=True)
class Envelope:
    mail_from: str
    recipients: tuple[str, ...]
    raw: bytes


@dataclass(frozen=True)
class Delivery:
    """The answer for one recipient: spooled (``spool_id``) or refused (``error``)."""

    recipient: str
    spool_id: int | None = None
    error: MailgateError | None = None


class Gateway:
    def __init__(self, config: Config, client, spool: Spool, facts: Facts | None = None,
                 fanout=None, notifier=None):
        self.config = config
        self.client = client
        self.spool = spool
        #: mailgate.fanout.Fanout, when Discord is configured.
        self.fanout = fanout
        #: mailgate.notify.Notifier, when notices to senders are configured.
        self.notifier = notifier
        #: A per-sender rate limit checked on receive (the pipe's; serve checks at MAIL).
        self.sender_limit = None
        self._metrics = None
        self._facts = facts
        #: ticket id -> when Redmine last confirmed it exists (time.monotonic()).
        self._known_tickets: dict[int, float] = {}

    @property
    def facts(self) -> Facts:
        if self._facts is None:
            from .facts import RedmineFacts

            self._facts = RedmineFacts(self.client, self.config)
        return self._facts

    @property
    def metrics(self):
        """Prometheus metrics (mailgate.metrics), made on first use."""
        if self._metrics is None:
            from .metrics import Metrics

            self._metrics = Metrics()
            if hasattr(self.client, "session"):
                self._metrics.watch_redmine(self.client)
            self._metrics.watch_queues(self.spool, self.fanout)
            if self.fanout is not None:
                self._metrics.watch_discord(self.fanout.client)
        return self._metrics

    # -- before we answer -------------------------------------------------------

    def check_recipient(self, address: str) -> Recipient:
        """RCPT-time check: an address we serve, and for ticket<N>@ a ticket that exists."""
        recipient = resolve_recipient(address, self.config)
        # Without a Redmine client (the pipe's --queue-only), the worker finds out.
        if recipient.kind == "ticket" and self.client is not None:
            self._check_ticket(recipient.ticket)
        return recipient

    def _check_ticket(self, ticket: int) -> None:
        # A ticket confirmed recently is not asked about again; one confirmed
        # at any time is still accepted while Redmine is down, so the spool
        # takes replies during an outage instead of deferring them all.
        confirmed = self._known_tickets.get(ticket)
        now = time.monotonic()
        if confirmed is not None and now - confirmed < KNOWN_TICKET_SECONDS:
            return
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

    def check_size(self, raw: bytes) -> None:
        if len(raw) > self.config.max_message_size:
            raise MessageTooBig(f"message exceeds {self.config.max_message_size} bytes")

    def receive(self, envelope: Envelope, *, all_or_nothing: bool = False) -> list[Delivery]:
        """Check the mail for each recipient and spool it durably for those it passes.

        SMTP gives one answer for all recipients after DATA, so it asks for
        ``all_or_nothing``: the first refusal is raised and nothing is spooled
        (spooling some would be answered with a 5xx and then sent again).
        """
        if self.sender_limit is not None:
            self.sender_limit.check(sender_key(envelope.mail_from))
        self.check_size(envelope.raw)
        # Routing and screening need the header fields only: the body is parsed
        # by the worker, after the 250, so the listener stays fast on big mail.
        mail = parse_mail(envelope.raw, headers_only=True)
        results: dict[str, Delivery] = {}
        order_keys: dict[str, str | None] = {}
        for address in envelope.recipients:
            try:
                order_keys[address] = self._screen(address, mail)
            except MailgateError as exc:
                results[address] = Delivery(address, error=exc)
        if all_or_nothing and results:
            raise next(iter(results.values())).error
        accepted = [a for a in envelope.recipients if a not in results]
        ids = self.spool.add(envelope.mail_from, [(a, order_keys[a]) for a in accepted],
                             envelope.raw) if accepted else []
        results.update({a: Delivery(a, spool_id=i) for a, i in zip(accepted, ids)})
        for address in envelope.recipients:
            log.info("received %s for <%s>: %s", mail.key, address,
                     results[address].error or f"spooled as {results[address].spool_id}")
        return [results[a] for a in envelope.recipients]

    def _screen(self, address: str, mail: ParsedMail) -> str | None:
        """Refuse now what can be refused now; return the mail's order key."""
        route = route_mail(resolve_recipient(address, self.config), mail)
        site = route.site
        policy = site.unknown_senders if site else self.config.unknown_senders
        # Only a "reject" policy needs Redmine now; "accept" decides later.
        if policy == "reject" and self.client is not None and \
                self.facts.login_for(mail.from_address) is None:
            raise SenderNotPermitted(f"<{mail.from_address}> is not a Redmine user")
        # Replies to one ticket are applied in the order they arrived.
        return f"ticket:{route.ticket}" if route.kind == "reply" else None

    # -- the worker's side --------------------------------------------------------

    def process(self, spooled: SpooledMail) -> Outcome:
        """Apply one spooled mail, once: a (mail, route) already applied is a duplicate."""
        started = time.monotonic()
        try:
            outcome, mail, route, plan = self._apply(spooled)
        except RedmineUnavailable as exc:
            self.metrics.redmine_failed(exc)
            raise
        self.metrics.redmine_ok()
        seconds = time.monotonic() - started
        self.metrics.mails.labels(outcome.kind).inc()
        self.metrics.processing.observe(seconds)
        # One line per mail, key=value, for people and for log search.
        sender = getattr(plan, "sender", None)
        log.info("mail key=%s route=%s role=%s action=%s outcome=%s duration_ms=%d%s",
                 normalise_key(mail.key), _route_key(route), sender.role if sender else "-",
                 outcome.action or "-", outcome.kind, seconds * 1000,
                 f" reason={outcome.reason!r}" if outcome.reason else "")
        return outcome

    def _apply(self, spooled: SpooledMail):
        mail = parse_mail(spooled.raw)
        route = route_mail(resolve_recipient(spooled.rcpt, self.config), mail)
        route, plan = plan_mail(route, mail, self.facts, self.config, self._seen,
                                envelope_sender=spooled.mail_from)
        from .executor import execute

        outcome = execute(plan, self.client, self.facts.status_ids)
        key = normalise_key(mail.key)
        if outcome.kind != "duplicate":
            self._tell_discord(outcome, mail, route, plan)
            self.spool.remember(key, _route_key(route), outcome.as_dict())
        return outcome, mail, route, plan

    def _tell_discord(self, outcome: Outcome, mail: ParsedMail, route: Route, plan) -> None:
        if self.fanout is None:
            return
        from handlers.plans import OpenTicket

        from .fanout import event_for

        if isinstance(plan, OpenTicket):
            site, subject, text = plan.site.name, plan.subject, plan.description
        else:
            found = self.config.site_for_project(getattr(plan, "project", None))
            site, subject, text = (found.name if found else None), plan.subject, plan.text
        event = event_for(outcome, mail, site=site, subject=subject,
                          url=f"{self.config.redmine.url}/issues/{outcome.ticket}",
                          excerpt=without_marker(text))
        if event is not None:
            # One post per (mail, route): the same mail on two tickets is two posts.
            self.fanout.enqueue(replace(event, mail_key=f"{normalise_key(mail.key)}|"
                                                        f"{_route_key(route)}"))

    def _seen(self, mail: ParsedMail, route: Route) -> dict | None:
        return self.spool.seen(normalise_key(mail.key), _route_key(route))


def plan_mail(route: Route, mail: ParsedMail, facts: Facts, config: Config,
              seen=lambda mail, route: None,
              envelope_sender: str | None = None) -> tuple[Route, Plan]:
    """Gather the facts the route's handler needs, and let it decide (no writes).

    ``seen(mail, route)`` tells whether this mail was already applied on that
    route (the state store); then nothing else is asked of Redmine.
    """
    from handlers import new_ticket, reply
    from handlers.automatic import automatic_reason
    from handlers.plans import Duplicate, Ignore
    from handlers.senders import role_of

    machine = automatic_reason(mail.headers, envelope_sender, mail.from_address,
                               content_type=mail.headers.get("content-type", "text/plain"),
                               own_loop_id=config.hostname,
                               redmine_address=config.redmine.notification_address)
    if machine:
        # Never a note, never a rejection: answering robots makes mail loops.
        return route, Ignore(f"automatic mail: {machine}")
    if route.kind == "reply":
        earlier = seen(mail, route)
        if earlier is not None:
            return route, Duplicate(f"already applied: {earlier.get('kind')}")
        try:
            ticket = facts.ticket(route.ticket)
        except NoSuchTicket:
            if route.site is None:
                raise
            # "[#123]" in a subject to a site address that names no real
            # ticket: the sender meant to write to the site, so open one.
            route = Route("new", None, route.site, f"{route.how} names no ticket")
        else:
            login = facts.login_for(mail.from_address)
            # Proof of identity only matters for a role beyond "other" (saves DNS).
            claimed = role_of(mail.from_address, ticket.owner_address, config)
            verdict = facts.sender_verdict(mail) if claimed != "other" else reply.NOT_NEEDED
            return route, reply.handle(mail, ticket, login, route.site, config,
                                       marker(mail.key, _route_key(route)), verdict)
    earlier = seen(mail, route)
    if earlier is not None:
        return route, Duplicate(f"already applied: {earlier.get('kind')}")
    login = facts.login_for(mail.from_address)
    return route, new_ticket.handle(mail, route.site, login, config,
                                    marker(mail.key, _route_key(route)))


def _route_key(route: Route) -> str:
    return route_key(route.kind, route.ticket, route.site.name if route.site else None)


def recipient_from_headers(mail: ParsedMail, config: Config) -> str:
    """For mail without an envelope (pipe, replay): the first header address we serve."""
    for address in mail.original_to:
        try:
            resolve_recipient(address, config)
        except UnknownAddress:
            continue
        return address
    raise UnknownAddress("no recipient given and no address in the headers that is served here")


def build_gateway(config: Config) -> Gateway:
    from .redmine import RedmineClient

    spool = open_spool(config.spool_path, url=config.spool_url,
                       lease_seconds=config.lease_seconds)
    from .notify import build_notifier

    gateway = Gateway(config, RedmineClient.from_settings(config.redmine), spool,
                      fanout=build_fanout(config), notifier=build_notifier(config))
    gateway.metrics     # time every Redmine request from the first one
    return gateway


def build_queue_only_gateway(config: Config) -> Gateway:
    """A gateway that only takes mail in (no Redmine at the edge): the pipe's fast path."""
    spool = open_spool(config.spool_path, url=config.spool_url,
                       lease_seconds=config.lease_seconds)
    return Gateway(config, None, spool)


def build_fanout(config: Config):
    """The Discord fan-out, with its own Redmine client for the thread fields."""
    if config.discord is None:
        return None
    from .fanout import Fanout
    from .redmine import RedmineClient

    # requests.Session is not thread-safe: the fan-out thread gets its own client.
    redmine = RedmineClient.from_settings(config.redmine)

    def thread_created(ticket: int, thread_id: str) -> None:
        redmine.set_custom_field(ticket, "discord-thread", True)
        redmine.set_custom_field(ticket, "discord-thread-id", thread_id)

    return Fanout(config.discord, config.spool_path, on_thread_created=thread_created)
