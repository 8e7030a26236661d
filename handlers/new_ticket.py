"""Mail to a site's address (or triage): open a new ticket in that site's project."""

from __future__ import annotations

from mailgate.config import Config, Site
from mailgate.mail.message import ParsedMail

from mailgate.mail.idempotency import with_marker

from .attachments import apply_limits, not_attached_line
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
    attachments, dropped = apply_limits(mail.attachments, config.attachment_limits)
    text = "\n\n".join(filter(None, [mail.body, not_attached_line(dropped)]))
    if writer != sender.login:
        text = attributed(text, sender)
    return OpenTicket(site=site, sender=sender, subject=mail.subject or "(no subject)",
                      description=with_marker(text, mark) if mark else text,
                      attachments=attachments, as_user=writer, marker=mark)
