"""Mail to a site's address (or triage): open a new ticket in that site's project."""

from __future__ import annotations

from email.utils import getaddresses

from mailgate.config import Config, Site
from mailgate.mail.message import ParsedMail

from mailgate.mail.idempotency import defused, with_marker

from .attachments import apply_limits, not_attached_line
from mailgate.trust import Verdict

from .plans import Defer, OpenTicket, Plan, Refuse
from .senders import NOT_NEEDED, attributed, identity, sender_of

name = "new-ticket"
description = "Mail to a site address: a new ticket in the site's project, by the sender."


def handle(mail: ParsedMail, site: Site, login: str | None, config: Config,
           mark: str = "", verdict: Verdict = NOT_NEEDED) -> Plan:
    sender = sender_of(mail, login, "owner", verdict)
    who = identity(sender, verdict, site, config)
    if isinstance(who, (Refuse, Defer)):
        return who
    attachments, dropped = apply_limits(mail.attachments, config.attachment_limits)
    text = "\n\n".join(filter(None, [defused(mail.body), not_attached_line(dropped)]))
    recorded = {}
    if not who.writes_as(sender):
        # Opened by the gateway's user for them: the ticket is not theirs to steer
        # by mail until they write from an address we can verify.
        text = attributed(text, sender)
        recorded = _who_it_is_for(mail, config)
    return OpenTicket(site=site, sender=sender, subject=mail.subject or "(no subject)",
                      description=with_marker(text, mark) if mark else text,
                      attachments=attachments, as_user=who.writer, marker=mark,
                      new_account=who.account, recorded=recorded)


def _who_it_is_for(mail: ParsedMail, config: Config) -> dict[str, str]:
    """The custom fields that keep the reporter (its owner by mail) and the Cc'd
    participants on a ticket the gateway's user opens for them."""
    settings = config.redmine
    recorded = {}
    if settings.reporter_field:
        recorded[settings.reporter_field] = mail.from_address.lower()
    if settings.participants_field:
        participants = _participants(mail, config)
        if participants:
            recorded[settings.participants_field] = "\n".join(participants)
    return recorded


def _participants(mail: ParsedMail, config: Config) -> list[str]:
    """The Cc: addresses, without the sender and our own addresses, each once."""
    ours = set(config.domains)
    found: list[str] = []
    for _, address in getaddresses([mail.headers.get("cc", "")]):
        address = address.lower()
        if ("@" in address and address != mail.from_address.lower()
                and address.rpartition("@")[2] not in ours and address not in found):
            found.append(address)
    return found
