"""The SMTP and LMTP listener (aiosmtpd): the network edge of the intake.

Everything the protocol can refuse is refused here, before the mail is
accepted: an unknown address or a missing ticket at RCPT, a too-big mail at
MAIL (SIZE) or DATA.  250 is only ever answered after the mail is committed to
the spool; any unexpected error answers 451, so the sender's MTA keeps the mail
and tries again.

The intake's checks (mailgate.intake.receive) run on the event loop when they
need no Redmine and no store: RCPT to a site address or to a ticket confirmed
lately, DATA of a small mail where no ``reject`` policy must ask about the
sender.  The spool writer's thread commits the mails (mailgate.intake.spool_writer).
Whatever needs Redmine is asked in a thread, as before, and never blocks the loop.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import weakref

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP

from mailgate.mail.addresses import check_recipient, check_sender, shown
from mailgate.gateway import Delivery, Envelope, Gateway
from mailgate.errors import MailgateError
from mailgate.intake.ratelimit import refusal, sender_key
from mailgate.intake.spool_writer import SpoolWriter

log = logging.getLogger("mailgate.intake.smtp")

S250_ACCEPTED = "250 2.0.0 Message accepted for delivery"
S250_RCPT_OK = "250 2.1.5 Recipient ok"
S451_INTERNAL = "451 4.3.0 Internal error, please try again later"
S452_TOO_MANY = "452 4.5.3 Too many recipients"
S421_TOO_MANY_FAILED = "421 4.7.0 Too many refused recipients, closing connection"
S552_TOO_BIG = "552 5.3.4 Message too big for this system"

#: Mail smaller than this is screened on the event loop.  The screen reads the
#: header block, which may be the whole mail (no blank line), and 8-bit header
#: lines go through the stdlib's parser: ~6 ms of a stopped loop at 64 KB, ~2 s
#: at 25 MB.  A bigger mail takes a thread, whose hop is nothing beside its DATA.
LOOP_SCREEN_BELOW = 64 * 1024


class _EnhancedStatus:
    """aiosmtpd's own size refusals carry no enhanced status code (RFC 3463); add it."""

    _REWRITES = {
        "552 Error: message size exceeds fixed maximum message size": S552_TOO_BIG,
        "552 Error: Too much mail data": S552_TOO_BIG,
    }

    async def push(self, status: str) -> None:
        await super().push(self._REWRITES.get(status, status))


class _EnvelopeGrammar:
    """MAIL FROM and RCPT TO checked as sent, before aiosmtpd parses them.

    Its parser reads a TAB inside <...> as folding white space and hands on a
    cleaned address, so only the raw argument shows every control character;
    the checks are the pipe's (``mailgate.mail.addresses``).
    """

    @functools.wraps(SMTP.smtp_MAIL)       # wraps: keeps the HELP text
    async def smtp_MAIL(self, arg: str | None) -> None:
        if not await self._refused(check_sender, arg):
            await super().smtp_MAIL(arg)

    @functools.wraps(SMTP.smtp_RCPT)
    async def smtp_RCPT(self, arg: str | None) -> None:
        if not await self._refused(check_recipient, arg):
            await super().smtp_RCPT(arg)

    async def _refused(self, check, arg: str | None) -> bool:
        try:
            check(_address_part(arg or ""))
        except MailgateError as exc:
            log.info("%s", exc)             # the address is escaped in the message
            await self.push(exc.smtp_reply)
            return True
        return False

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """aiosmtpd's reading of ``<address> params``, without building the stdlib's
        parse tree (and a class) for the plain case: a dot-atom local part and
        domain, as nearly all mail has.  Anything else (quotes, comments, source
        routes, literals, obsolete dots, leading blanks) goes to aiosmtpd's own;
        tests/test_smtp.py checks that both read every input alike."""
        found = _PLAIN_PATH.fullmatch(arg) if arg else None
        if found is None:
            return super()._getaddr(arg)
        address, local, rest = found.group(1, 2, 3)
        if rest[:1] in (" ", "\t"):
            rest = rest.lstrip()    # the stdlib's folding white space: str.lstrip()
        if rest[:1] == "(" or (self.local_part_limit and len(local) > self.local_part_limit):
            return super()._getaddr(arg)
        return address, rest


#: RFC 5321 atext, and a dot-atom of it.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_ATOM = rf"{_ATEXT}(?:\.{_ATEXT})*"
#: "<local@domain>" then anything (the parameters), for _EnvelopeGrammar._getaddr.
_PLAIN_PATH = re.compile(rf"<(({_DOT_ATOM})@{_DOT_ATOM})>(.*)", re.DOTALL)


def _address_part(arg: str) -> str:
    """"FROM:<a@b> SIZE=9" -> "a@b": the address, for the reply to show."""
    rest = arg.partition(":")[2].strip()
    found = re.match(r"<([^>]*)>", rest)
    return found.group(1) if found else rest


class GatewaySMTP(_EnvelopeGrammar, _EnhancedStatus, SMTP):
    pass


class GatewayLMTP(_EnvelopeGrammar, _EnhancedStatus, LMTP):
    pass


class GatewayHandler:
    """aiosmtpd hooks; what blocks runs in a thread: the spool writer's, or one each."""

    def __init__(self, gateway: Gateway, writer: SpoolWriter, *, lmtp: bool = False,
                 sender_limit=None):
        self.gateway = gateway
        self.intake = gateway.intake
        #: Commits the mails screened on the loop (and wakes the worker).
        self.writer = writer
        self.sender_limit = sender_limit
        self.lmtp = lmtp
        #: The live sessions, so shutdown can wait for their transactions.
        self.sessions: weakref.WeakSet = weakref.WeakSet()

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if self.sender_limit is not None:
            key = sender_key(address)
            # The buckets are in the store: a transaction, never in the event loop.
            if not await asyncio.to_thread(self.sender_limit.allow, key):
                # 4xx: a flood is slowed down, and nothing in it is lost.
                log.info("MAIL <%s> deferred: rate limit", key)
                self._count("mail", "RateLimited")
                return refusal(key).smtp_reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if len(envelope.rcpt_tos) >= self.gateway.config.max_recipients:
            self._count("rcpt", "TooManyRecipients")
            return S452_TOO_MANY
        try:
            # On the loop if no Redmine request is needed; else asked in a thread.
            if self.intake.check_recipient(address, ask=False) is None:
                await asyncio.to_thread(self.intake.check_recipient, address)
        except MailgateError as exc:
            log.info("RCPT <%s> refused: %s", shown(address), exc)
            self._count("rcpt", type(exc).__name__)
            return self._refused_recipient(server, session, exc)
        envelope.rcpt_tos.append(address)
        return S250_RCPT_OK

    def _refused_recipient(self, server, session, exc: MailgateError) -> str:
        """Answer a refused RCPT; past the session's allowance, end the session: one
        connection must not walk every ticket number (each a Redmine request)."""
        failed = getattr(session, "mailgate_failed_rcpts", 0) + 1
        session.mailgate_failed_rcpts = failed
        if failed <= self.gateway.config.max_failed_recipients:
            return exc.smtp_reply
        log.warning("session from %s closed: %d refused recipients", session.peer, failed)
        # The 421 is written first: close() flushes what the transport holds.
        asyncio.get_running_loop().call_soon(server.transport.close)
        return S421_TOO_MANY_FAILED

    @property
    def in_flight(self) -> int:
        """Sessions inside a transaction (after MAIL FROM, before our answer to DATA)."""
        return sum(1 for s in self.sessions
                   if s.transport is not None and s.envelope is not None
                   and s.envelope.mail_from is not None)

    async def handle_DATA(self, server, session, envelope) -> str:
        mail = Envelope(envelope.mail_from or "", tuple(envelope.rcpt_tos),
                        envelope.original_content or b"", _via(session, self.lmtp))
        try:
            deliveries = await self._receive(mail)
        except MailgateError as exc:
            log.info("DATA refused: %s", exc)
            self._count("data", type(exc).__name__)
            count = len(mail.recipients) if self.lmtp else 1
            return "\r\n".join([exc.smtp_reply] * count)
        if self.lmtp:
            # LMTP answers once per recipient, in RCPT order (RFC 2033).
            return "\r\n".join(_reply(d) for d in deliveries)
        return S250_ACCEPTED

    async def _receive(self, mail: Envelope) -> list[Delivery]:
        """The intake's receive: screened on the loop and committed by the writer, or,
        when a check must ask Redmine or the store, or the mail is big, the whole of
        it in a thread."""
        screened = self.intake.screen(mail, all_or_nothing=not self.lmtp, ask=False) \
            if len(mail.raw) < LOOP_SCREEN_BELOW else None
        if screened is None:
            deliveries = await asyncio.to_thread(
                self.intake.receive, mail, all_or_nothing=not self.lmtp)
            self.writer.on_spooled()
            return deliveries
        return await self.writer.commit(screened)

    async def handle_exception(self, error):
        # Never aiosmtpd's default "500 Error: (Exc)": a crash must not bounce mail.
        log.error("internal error in the SMTP session", exc_info=error)
        self._count("session", "crash")
        return S451_INTERNAL

    def _count(self, stage: str, error: str) -> None:
        self.gateway.metrics.refusals.labels(stage, error).inc()


def _via(session, lmtp: bool) -> str:
    """How the mail reached us, as the spool keeps it (mailgate.trust decides on it)."""
    if lmtp:
        return "lmtp"
    peer = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer)
    return f"smtp {peer}"


def _reply(delivery: Delivery) -> str:
    return delivery.error.smtp_reply if delivery.error else S250_ACCEPTED


def smtp_factory(handler: GatewayHandler, hostname: str, size_limit: int, loop):
    cls = GatewayLMTP if handler.lmtp else GatewaySMTP

    def make_session():
        # hostname is set so aiosmtpd does not call getfqdn() on every connection.
        session = cls(handler, hostname=hostname, data_size_limit=size_limit,
                      loop=loop, decode_data=False)
        handler.sessions.add(session)
        return session

    return make_session
