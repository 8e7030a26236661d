"""Mail to a site's address (or triage): open a new ticket in that site's project."""

from __future__ import annotations

from mailgate.config import Config, Site
from mailgate.message import ParsedMail

from mailgate.idempotency import with_marker

from .plans import OpenTicket, Plan, Refuse
from .senders import attributed, sender_of, writer_for

name = "new-ticket"
description = "Mail to a site address: a new ticket in the site's project, by the sender."


def handle(mail: ParsedMail, site: Site, login: str | None, config: Config,
           mark: str = "") -> Plan:
    sender = sender_of(mail, login, "owner")
    writer = writer_for(sender, site, config)
    if isinstance(writer, Refuse):
        return writer
    text = mail.body if writer == sender.login else attributed(mail.body, sender)
    return OpenTicket(site=site, sender=sender, subject=mail.subject or "(no subject)",
                      description=with_marker(text, mark) if mark else text,
                      attachments=mail.attachments, as_user=writer, marker=mark)
