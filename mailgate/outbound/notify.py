"""Telling a person when the mail we accepted could not do what they meant.

SMTP refusals need nothing from us: the sending MTA bounces them.  This is
for mail that was answered 250 and then, at processing time, fell short: a
command the workflow refused, a status change Redmine's workflow dropped, an
unknown or unverified sender under ``reject``, a ticket that has gone, a mail
Redmine refused.  The sender gets ONE short reply saying what happened and
what to do.

Which notice, and whether anyone may be told, is decided once, with the rest
of the mail's plan (``handlers.notices``, ``handlers.planning``); this module
writes the notice's text and delivers it.

Never a reply to a machine, and never a loop (RFC 3834):

* never to automatic mail, a null sender or a mailer-daemon / postmaster
  address (the plan's ``reply_to`` is None for those);
* at most one per (recipient, kind of problem, UTC day), recorded durably in
  the ``notices`` table, so a sender whose client retries or who repeats the
  same mistake all day hears about it once;
* sent from the null reverse path (``MAIL FROM:<>``: nobody answers it, and
  its own bounces are dropped), with ``Auto-Submitted: auto-replied`` and our
  ``X-Loop``, which our own ``automatic_reason`` recognises if it comes back;
* it never quotes the mail's text, so a forged sender cannot use it to
  deliver content to someone else.

``Notifier.tell`` only writes a row (durable, fast, never raises): the
mail is already applied or dead-lettered, and a notice must not change that.
The outbox is a queue of ``mailgate.runner``: its runner hands due rows to
the configured SMTP relay, retrying with backoff while it is down.  Both tables
(``mailgate.store.notices``) live in the spool's store, SQLite or PostgreSQL,
through a connection of their own, like the Discord fan-out.
"""

from __future__ import annotations

import logging
import random
import re
import smtplib
import textwrap
import threading
import time
import traceback
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import formatdate, make_msgid, parseaddr
from pathlib import Path
from typing import Any, Callable, Mapping

from mailgate.errors import ConfigError
from mailgate.mail.addresses import unread_mailbox
from mailgate.store.database import Location
from mailgate.settings.read import read_section
from mailgate.settings.schema import Notify
from mailgate.settings.walk import variable
from mailgate.store.notices import NoticeStore, Outgoing, utc_day

log = logging.getLogger("mailgate.outbound.notify")

# ------------------------------------------------------------------ what we say

#: kind -> (what happened, what to do).  Fields: {ticket} ("ticket #12" or "our
#: ticket system"), {detail}, {command}, {address}, {contact}.  Kept short: a
#: notice is read on a phone, and says nothing the sender did not write to us.
TEXTS: Mapping[str, tuple[str, str]] = {
    "command-refused": (
        "Your command {command} was not carried out: {detail}. Your message was added to"
        " {ticket} as a comment; the ticket's status is unchanged.",
        "If the status should change, say so in a reply to the ticket, or send a command"
        " you may use."),
    "status-refused": (
        "Your message was added to {ticket} as a comment, but Redmine did not allow the"
        " status change that came with it ({detail}); the ticket's status is unchanged.",
        "If the status should change, say so in a reply to the ticket and the team will"
        " change it."),
    "unknown-ticket": (
        "Your message could not be added to {ticket}: there is no such ticket (it may have"
        " been deleted or moved). It was not recorded.",
        "Please check the ticket number, or {contact}."),
    "unknown-sender": (
        "Your message was not added to {ticket}: the address <{address}> is not known to our"
        " ticket system.",
        "Please send it again from the address of your account, or ask us to add this"
        " address to it."),
    "unverified-sender": (
        "Your message was not added to {ticket}: we could not verify that it came from"
        " <{address}> ({detail}).",
        "Please send it again directly from your own mail account; mail passed on by a"
        " forwarding service often cannot be verified."),
    "forbidden": (
        "Your message was not added to {ticket}: the ticket system does not allow your"
        " account to write there ({detail}).",
        "If you should have access, {contact}."),
    "too-large": (
        "Your message was not added to {ticket}: it is too large ({detail}).",
        "Please send it again with fewer or smaller attachments, or send a link to large"
        " files instead."),
    "rejected": (
        "Your message could not be added to {ticket}: the ticket system refused it"
        " ({detail}). It was not recorded.",
        "Please check your message and send it again, or {contact}."),
}

FOOTER = ("This is an automatic reply. You get at most one like it a day for the same"
          " problem.")

_SUBJECT_ECHO = 120
_DETAIL_ECHO = 300
_MSGID = re.compile(r"<[^<>\s]+>")


@dataclass(frozen=True)
class Notice:
    to: str
    reason_kind: str
    subject: str
    text: str
    in_reply_to: str | None
    #: The References of the notice: the sender's thread, then their mail.
    references: tuple[str, ...] = ()


def notice_from_plan(plan, decision) -> Notice:
    """The notice for a mail's plan (``handlers.planning.MailPlan``) and the notice
    decided for it (``handlers.notices.NoticeDecision``): what happened and what to do.

    It goes to ``plan.reply_to``, the envelope sender (RFC 3834 §4: responses go
    to the return path, not to From:, which lists and forwarders leave naming
    someone else).
    """
    happened, todo = TEXTS[decision.kind]
    ticket = decision.ticket
    fields = {
        "ticket": f"ticket #{ticket}" if ticket is not None else "our ticket system",
        "detail": _one_line(decision.detail, _DETAIL_ECHO).rstrip("."),
        "command": ", ".join(f"'{_one_line(c, 80)}'" for c in plan.commands) or "(none)",
        "address": plan.sender.address,
        "contact": (f"write to {plan.site_address} to start a new request"
                    if plan.site_address else
                    "reply to the latest notification about your ticket"),
    }
    text = "\n\n".join([happened.format(**fields), todo.format(**fields), FOOTER])
    subject = _one_line(plan.subject, _SUBJECT_ECHO) or "your message"
    if not subject.lower().startswith("re:"):
        subject = f"Re: {subject}"
    own = _msgid(plan.message_id)
    # RFC 5322 §3.6.4: the parent's references, then the mail's own Message-ID.
    thread = list(dict.fromkeys([*plan.references, *([own] if own else [])]))
    return Notice(to=plan.reply_to or "", reason_kind=decision.kind, subject=subject,
                  text=_wrap(text), in_reply_to=own, references=tuple(thread[-10:]))


def _msgid(value: str | None) -> str | None:
    found = _MSGID.search(value or "")
    return found.group(0) if found else None


def _one_line(text: str, limit: int) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"


def _wrap(text: str, width: int = 76) -> str:
    return "\n\n".join(textwrap.fill(p, width, break_long_words=False, break_on_hyphens=False)
                       for p in text.split("\n\n"))


# ------------------------------------------------------------------ settings

@dataclass(frozen=True)
class NotifySettings:
    """The ``notify:`` section as the outbox uses it (its keys, their defaults and
    meaning: mailgate.settings.schema)."""

    enabled: bool
    relay_host: str
    relay_port: int
    from_address: str
    timeout: float
    #: Our X-Loop value: the configured ``server.hostname``.
    loop_id: str
    #: A notice not delivered within this long is dead-lettered.
    max_age: float
    #: At most this many notices an hour, from all hosts together: whatever gets
    #: past the other rules, mailgate is never a mail cannon.
    max_per_hour: int
    first_delay: float = 60.0
    max_delay: float = 3600.0

    def backoff(self, failures: int) -> float:
        base = min(self.max_delay, self.first_delay * 2 ** max(0, failures - 1))
        # Jitter, so notices that failed together (relay down) do not return together.
        return base * random.uniform(0.5, 1.0)


def load_notify_settings(section: Mapping[str, Any] | None, *,
                         hostname: str) -> NotifySettings | None:
    """The ``notify:`` section, checked; None when absent or ``enabled: false``."""
    if section is None:
        return None
    return notify_settings(read_section(section, Notify, "notify"), hostname=hostname)


def notify_settings(spec: Notify, *, hostname: str) -> NotifySettings | None:
    """The settings the outbox uses; None when ``enabled: false``."""
    if not spec.enabled:
        return None
    sender = spec.from_ or ""
    _, address = parseaddr(sender)
    if "@" not in address or any(c in sender for c in "\r\n"):
        raise ConfigError(f"notify.from: expected a mail address, got {sender!r}"
                          f" (or set {variable(('notify', 'from'))})")
    host, port = _relay(spec.relay)
    return NotifySettings(enabled=True, relay_host=host, relay_port=port, from_address=sender,
                          timeout=spec.timeout, max_age=spec.max_age,
                          max_per_hour=spec.max_per_hour, loop_id=hostname)


def _relay(value: str) -> tuple[str, int]:
    host, _, port = value.strip().rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"notify.relay: expected host:port, got {value!r}")
    return host.strip("[]"), int(port)


# ------------------------------------------------------------------ the message

def render(notice: Notice, settings: NotifySettings, now: float) -> bytes:
    """The notice as a mail, rendered once: every attempt sends the same bytes."""
    message = EmailMessage(policy=SMTP_POLICY)
    message["From"] = settings.from_address
    message["To"] = mail_address(notice.to)
    message["Subject"] = notice.subject
    message["Date"] = formatdate(now, usegmt=True)
    message["Message-ID"] = make_msgid("notice", domain=settings.loop_id)
    if notice.in_reply_to:
        message["In-Reply-To"] = notice.in_reply_to
    if notice.references:
        message["References"] = " ".join(notice.references)
    # RFC 3834 §5: what marks a reply as automatic; the X-Loop lets us spot our own.
    message["Auto-Submitted"] = "auto-replied"
    message["X-Loop"] = settings.loop_id
    # Asks Exchange and Outlook not to send their out-of-office replies back.
    message["X-Auto-Response-Suppress"] = "All"
    message.set_content(notice.text)
    return message.as_bytes()


def mail_address(value: str) -> Address | str:
    """``value`` as a To: field takes it (the email package refuses some odd ones)."""
    try:
        return Address(addr_spec=value)
    except Exception:  # the email package raises several kinds on odd addresses
        return value


def suppressed(notice: Notice, own_address: str) -> str | None:
    """Why ``notice`` must not be sent, or None.  (Whether anyone may be told at all is
    the plan's ``reply_to``; once a day is checked by the store.)"""
    to = notice.to.strip()
    if to in ("", "<>"):
        return "null sender"
    if any(c in to for c in "\r\n<> ,;") or "@" not in to:
        return f"not a single mail address: {to!r}"
    if unread_mailbox(to):
        return f"<{to}> is read by nobody (the mail system, a no-reply address)"
    if to.lower() == parseaddr(own_address)[1].lower():
        return "our own address"
    return None


# ------------------------------------------------------------------ delivery

#: Rows of ``notices`` (mailgate.store.notices) are kept this many days (only
#: today's are needed).
KEEP_DAYS = 7


class Notifier:
    """Queues notices (the mail side) and hands them to the relay (a ``Runner``)."""

    name = "notices"

    def __init__(self, settings: NotifySettings, store: Location | str | Path, *,
                 clock: Callable[[], float] = time.time):
        from mailgate.runner import Backoff, Runner

        self.settings = settings
        # The spool's store (its SQLite file or PostgreSQL URL): every host and
        # process on it shares the outbox and the once-a-day record.
        self.store = NoticeStore(store)
        self.clock = clock
        self._forgot_on: str | None = None
        # The lease is longer than one delivery can take (connect, then each
        # command), so a second process does not send a notice this one is sending.
        self.runner = Runner(self, self._send, lease=4 * settings.timeout + 30.0,
                             backoff=Backoff(settings.first_delay, settings.max_delay,
                                             settings.max_age),
                             classify=_classify, clock=clock)

    @property
    def wake(self) -> threading.Event:
        return self.runner.wake

    def close(self) -> None:
        self.store.close()

    # -- the mail side ---------------------------------------------------------

    def tell(self, plan, decision) -> bool:
        """Queue the notice ``decision`` for ``plan`` (handlers.notices); never raises."""
        try:
            notice = notice_from_plan(plan, decision)
        except Exception:
            log.error("no notice for %s:\n%s", plan.mail_key, traceback.format_exc())
            return False
        return self.notify(notice)

    def notify(self, notice: Notice) -> bool:
        """Queue ``notice`` durably; False when suppressed or already sent today.  Never raises."""
        try:
            why = suppressed(notice, self.settings.from_address)
            now = self.clock()
            if why is None and self.store.queued_since(now - 3600) >= self.settings.max_per_hour:
                why = f"{self.settings.max_per_hour} notices in the last hour already"
            if why is None and not self.store.add(notice, render(notice, self.settings, now),
                                                  now):
                why = "already told today"
        except Exception:
            # The mail is applied or dead-lettered already: a notice must not change that.
            log.error("notice %s to <%s> not queued:\n%s", notice.reason_kind, notice.to,
                      traceback.format_exc())
            return False
        if why:
            log.info("notice %s to <%s> not sent: %s", notice.reason_kind, notice.to, why)
            return False
        log.info("notice %s to <%s> queued", notice.reason_kind, notice.to)
        self.wake.set()
        return True

    # -- the queue, as the runner uses it (mailgate.runner.Queue) ---------------

    def claim(self, now: float, lease: float) -> Outgoing | None:
        self._forget_old(now)
        return self.store.claim(now, lease)

    def done(self, item: Outgoing, result, now: float) -> None:
        log.info("notice %d (%s) sent to <%s>", item.id, item.reason_kind, item.recipient)
        self.store.sent(item, now)

    def defer(self, item: Outgoing, error: str, until: float, failed: bool) -> None:
        self.store.defer(item, error, until)

    def bury(self, item: Outgoing, error: str, now: float) -> None:
        self.store.bury(item, error, now)

    def next_due(self) -> float | None:
        return self.store.next_due()

    def counts(self) -> dict[str, int]:
        return self.store.counts()

    # -- the relay side --------------------------------------------------------

    def run_once(self) -> bool:
        """Try to deliver one due notice; False when none is due."""
        return self.runner.run_once() is not None

    def run_until_idle(self) -> int:
        return len(self.runner.drain(max_wait=0.0))

    def run_forever(self, stop: threading.Event, poll: float = 1.0) -> None:
        self.runner.run_forever(stop, poll)

    def _send(self, item: Outgoing) -> None:
        s = self.settings
        with smtplib.SMTP(s.relay_host, s.relay_port, local_hostname=s.loop_id,
                          timeout=s.timeout) as smtp:
            options = [] if item.recipient.isascii() else ["SMTPUTF8"]
            # A notice: the null reverse path (RFC 3834 §3.3), nothing answers it.  An
            # answer (mailgate.outbound.answers): the ticket's address, for its bounces.
            smtp.sendmail(item.mail_from, [item.recipient], item.message, mail_options=options)

    def _forget_old(self, now: float) -> None:
        today = utc_day(now)
        if self._forgot_on != today:
            self.store.forget_before(utc_day(now - KEEP_DAYS * 86400))
            self._forgot_on = today

    def stats(self) -> dict[str, int]:
        return self.runner.stats()


def _classify(exc: BaseException):
    from mailgate.runner import Disposition

    reason = f"{type(exc).__name__}: {exc}"
    return Disposition("bury" if _permanent(exc) else "retry", reason)


def _permanent(exc: Exception) -> bool:
    """A 5xx for this notice itself; connection trouble and 4xx are retried."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return all(500 <= code < 600 for code, _ in exc.recipients.values())
    if isinstance(exc, smtplib.SMTPConnectError):
        return False        # the relay's greeting refused us: it may be back later
    if isinstance(exc, smtplib.SMTPResponseException):
        return 500 <= exc.smtp_code < 600
    return isinstance(exc, smtplib.SMTPNotSupportedError)


# ------------------------------------------------------------------ wiring

def build_notifier(config, store: Location | None = None) -> Notifier | None:
    """The notifier for ``config.notify`` (NotifySettings or None), on the spool's store."""
    settings = getattr(config, "notify", None)
    if not settings:
        return None
    return Notifier(settings, store or Location.configured(config.spool_path, config.spool_url))
