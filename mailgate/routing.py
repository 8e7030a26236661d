"""Which handler a mail goes to, decided from its address and, after DATA, its headers.

Routing happens twice, for a reason.  At RCPT time only the address is
known, and that is when a mail must be refused (never accepted and then
dropped); so ``resolve_recipient`` decides what the address *is*.  After
DATA, ``route_mail`` may refine a site address into a reply: people answer
Redmine's notifications, which come from Redmine's own address and carry the
ticket in the subject and the Message-ID.

Precedence, most specific first: ``ticket<ID>@domain``; a site address; the
triage address; Redmine's notification address; anything else is unknown.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailgate.mail.addresses import check_recipient, shown
from mailgate.config import Config, Site
from mailgate.errors import UnknownAddress
from mailgate.mail.addresses import TICKET_LOCAL
from mailgate.mail.message import ParsedMail

# "[#12]", "[site-a - Support #12]", "[Bug #12] ..." (Redmine's subject tag).
_SUBJECT_TAG = re.compile(r"\[(?:[^\[\]]*?\s)?#(\d{1,9})\]")
# Redmine's notification Message-IDs: <redmine.issue-12.20240101123456.1@host>,
# and for replies to a note, <redmine.journal-34.…> (the issue is in References).
_REDMINE_MSGID = re.compile(r"^<redmine\.issue-(\d{1,9})\.", re.IGNORECASE)


@dataclass(frozen=True)
class Recipient:
    """What an envelope recipient is, known at RCPT time."""

    address: str
    kind: str               # "ticket", "site", "notification"
    ticket: int | None = None
    site: Site | None = None


@dataclass(frozen=True)
class Route:
    """Where a received mail goes: a reply to a ticket, or a new ticket in a site."""

    kind: str               # "reply" or "new"
    ticket: int | None
    site: Site | None
    how: str                # why this route, for logs and `explain`


def resolve_recipient(address: str, config: Config) -> Recipient:
    """What ``address`` is; the one grammar of recipients, for SMTP, LMTP, pipe and replay."""
    # Before strip(), which would quietly drop a trailing CR, LF or TAB.
    address = check_recipient(address).strip().strip("<>")
    if not address.isascii():
        # SMTP refuses non-ASCII addresses (no SMTPUTF8), so every source does:
        # Unicode case folding ("K", KELVIN SIGN, lowers to "k") or digits ("١")
        # must not make a foreign address look like one of ours.
        raise UnknownAddress(f"<{shown(address)}>: no such mailbox here")
    address = address.lower()
    local, _, domain = address.rpartition("@")
    if not local:
        raise UnknownAddress(f"<{address}>: not a mail address")
    ticket = TICKET_LOCAL.fullmatch(local)
    if ticket and domain in config.domains:
        return Recipient(address, "ticket", ticket=int(ticket.group(1)))
    site = config.site_for_address(address)
    if site is not None:
        return Recipient(address, "site", site=site)
    if config.redmine.notification_address == address:
        return Recipient(address, "notification", site=config.triage)
    raise UnknownAddress(f"<{address}>: no such mailbox here")


def route_mail(recipient: Recipient, mail: ParsedMail) -> Route:
    if recipient.kind == "ticket":
        return Route("reply", recipient.ticket, None, f"address {recipient.address}")
    ticket, how = ticket_reference(mail)
    if ticket is not None:
        return Route("reply", ticket, recipient.site, how)
    if recipient.site is None:
        # Mail to Redmine's address that names no ticket, with no triage to take it.
        raise UnknownAddress(f"<{recipient.address}>: names no ticket and there is no triage")
    return Route("new", None, recipient.site, f"site address {recipient.address}")


def ticket_reference(mail: ParsedMail) -> tuple[int | None, str]:
    """The ticket a mail answers, from Redmine's Message-IDs or its subject tag."""
    for msgid in mail.references:
        found = _REDMINE_MSGID.match(msgid)
        if found:
            return int(found.group(1)), f"references {msgid}"
    tag = _SUBJECT_TAG.search(mail.subject)
    if tag:
        return int(tag.group(1)), f"subject tag {tag.group(0)}"
    return None, ""
