"""What an envelope address may contain, checked the same way at every edge.

The SMTP listener and ``mailgate pipe`` both take envelope addresses from
outside: the sender's MTA (MAIL FROM, RCPT TO) or the local MTA's command
line (``--sender``, ``--recipient``).  Each edge calls the checks below, so
an address refused by one is refused by the other, and the reason is said
with the address made printable: an address is shown in replies, bounces
and logs, where a raw NUL, CR or LF could forge a line or cut one short.
"""

from __future__ import annotations

import re

from mailgate.errors import EX_DATAERR, PermanentError, UnknownAddress

# C0 controls (NUL, CR, LF, TAB, ...) and DEL: never part of a mailbox (RFC 5321 4.1.2).
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: The mail system's own mailboxes (RFC 5321 §4.5.1): mail from them is a bounce or a
#: report, and nothing is ever sent to them.
SYSTEM_MAILBOXES = frozenset({"mailer-daemon", "postmaster"})
# Besides those, the addresses robots send from and nobody reads (no-reply, bounces).
_ROBOT_MAILBOX = re.compile(r"no[-_.]?reply|do[-_.]?not[-_.]?reply|bounces?([-+].*)?",
                            re.IGNORECASE)


def system_mailbox(address: str) -> bool:
    """Whether ``address`` (or its local part) is the mail system's own."""
    return address.strip().strip("<>").rpartition("@")[0].lower() in SYSTEM_MAILBOXES \
        if "@" in address else address.strip().lower() in SYSTEM_MAILBOXES


def unread_mailbox(address: str) -> bool:
    """Whether nobody reads ``address``: the mail system's, or a robot's no-reply or
    bounce address.  Notices and answers never go there."""
    local = address.strip().strip("<>").rpartition("@")[0]
    return system_mailbox(address) or bool(_ROBOT_MAILBOX.fullmatch(local))


# The local part of a ticket's address, ticket<ID>.  ASCII digits only: \d would also
# take "١" or "１", which no MTA sends for a ticket ID and SMTP could not carry (we
# offer no SMTPUTF8); fullmatch, as "$" would let a final newline through.
TICKET_LOCAL = re.compile(r"ticket([0-9]{1,9})", re.IGNORECASE | re.ASCII)


class BadSenderAddress(PermanentError):
    """MAIL FROM or ``--sender`` is not a well-formed address (553 5.1.7, exit 65)."""

    smtp_code = 553
    smtp_status = "5.1.7"
    exit_code = EX_DATAERR


class BadRecipientAddress(UnknownAddress):
    """RCPT TO or ``--recipient`` is not a well-formed address (553 5.1.3, exit 65).

    An ``UnknownAddress``, because no mailbox here has such a name: a header
    hint like this is skipped as any other unknown one would be.
    """

    smtp_code = 553
    smtp_status = "5.1.3"
    exit_code = EX_DATAERR


def check_sender(address: str) -> str:
    """The envelope sender as given; refused if it holds a control character."""
    if _CONTROL.search(address):
        raise BadSenderAddress(f"sender <{shown(address)}>: control character in the address")
    return address


def check_recipient(address: str) -> str:
    """The envelope recipient as given; refused if it holds a control character."""
    if _CONTROL.search(address):
        raise BadRecipientAddress(
            f"recipient <{shown(address)}>: control character in the address")
    return address


def shown(address: str) -> str:
    """The address as it may be printed: controls and non-ASCII as \\x.., \\u.. escapes.

    Our SMTP replies are ASCII (no SMTPUTF8), and a log line must stay one line.
    """
    return ascii(address)[1:-1]
