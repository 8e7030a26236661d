"""Mails for a load: replies to tickets as our MTA hands them over."""

from __future__ import annotations

from email.message import EmailMessage

from support.configs import VERIFIED


def verified_reply(ticket: int, sender: str, name: str, subject: str, message_id: str,
                   body: str, date: str | None = None) -> bytes:
    """A reply by ``sender`` to ``ticket<N>@example.org`` carrying our MTA's word that
    its DKIM signature verified (the Authentication-Results write_config trusts)."""
    msg = EmailMessage()
    msg["Authentication-Results"] = VERIFIED.partition(": ")[2]
    msg["From"] = f"{name} <{sender}>"
    msg["To"] = f"ticket{ticket}@example.org"
    msg["Subject"] = subject
    msg["Message-ID"] = message_id
    if date is not None:
        msg["Date"] = date
    msg.set_content(body)
    return bytes(msg)
