"""Mail to a site's address (or triage): open a new ticket in that site's project."""

from __future__ import annotations

from email.utils import getaddresses

from mailgate.config import Config, Site
from mailgate.mail.idempotency import defused
from mailgate.mail.message import ParsedMail
from mailgate.mail.shorten import shortened
from mailgate.trust import Verdict

from .plans import Defer, OpenTicket, Plan, Refuse
from .posted import compose
from .senders import NOT_NEEDED, identity, sender_of

name = "new-ticket"
description = "Mail to a site address: a new ticket in the site's project, by the sender."

#: Redmine's longest subject (Issue: validates_length_of :subject, maximum: 255).
SUBJECT_LENGTH = 255
NO_SUBJECT = "(no subject)"


def handle(mail: ParsedMail, site: Site, login: str | None, config: Config,
           mark: str = "", verdict: Verdict = NOT_NEEDED) -> Plan:
    sender = sender_of(mail, login, "owner", verdict)
    who = identity(sender, verdict, site, config)
    if isinstance(who, (Refuse, Defer)):
        return who
    # Opened by the gateway's user for them: the ticket is not theirs to steer by
    # mail until they write from an address we can verify.
    for_them = not who.writes_as(sender)
    # A subject Redmine cannot keep whole is kept whole in the description.
    whole_subject = len(mail.subject) > SUBJECT_LENGTH
    body = "\n\n".join(filter(None, [f"Subject: {defused(mail.subject)}" if whole_subject
                                      else "", defused(mail.body)]))
    posted = compose(body, mail.attachments, config, mark=mark,
                     sender=sender if for_them else None)
    return OpenTicket(site=site, sender=sender, subject=ticket_subject(mail.subject),
                      description=posted.text, attachments=posted.attachments,
                      as_user=who.writer, marker=mark, new_account=who.account,
                      recorded=_who_it_is_for(mail, config) if for_them else {},
                      excerpt=posted.excerpt, formatting=config.redmine.text_formatting)


def ticket_subject(subject: str) -> str:
    """The subject as Redmine takes it: at most 255 characters, cut on a character
    with an ellipsis (Redmine refuses a longer one, and with it the ticket)."""
    return shortened(subject or NO_SUBJECT, SUBJECT_LENGTH)


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
