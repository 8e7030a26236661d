"""``mailgate pipe``: the MTA pipe transport (Postfix pipe(8), Exim's pipe transport).

The MTA reads our exit status (sysexits.h): 0 once the mail is processed or
durably spooled, 75 to keep it and retry, and a permanent code (65, 67, 77,
78) to bounce it.  One line on stderr says why; Postfix puts it in the
bounce.  The mail is processed right away; if that meets a temporary
failure the mail stays spooled for ``mailgate worker`` (or ``serve``).
"""

from __future__ import annotations

from mailgate.mail.addresses import check_sender
from mailgate.errors import EX_OK
from mailgate.gateway import Gateway
from mailgate.outcome import Outcome


def run_pipe(gateway: Gateway, raw: bytes, recipient: str | None = None,
             sender: str | None = None, process: bool = True) -> tuple[int, str]:
    """Deliver one mail; returns (exit status, the line to say). Errors propagate.

    ``process=False`` (``--queue-only``) spools and exits: the fast path for busy
    hosts, where ``mailgate worker`` applies the mail and tells the sender if it
    cannot (a missing ticket then becomes a notice, not a bounce).
    """
    if sender is not None:
        # What SMTP refuses at MAIL FROM (mailgate.mail.addresses); the recipient
        # meets the same grammar as RCPT TO in routing.resolve_recipient.
        check_sender(sender)
    delivery = gateway.intake.take(raw, recipient, sender)
    if not process:
        return EX_OK, f"spooled as {delivery.spool_id}"
    result = gateway.worker.run_once([delivery.spool_id])
    if result is None or not isinstance(result[1], Outcome):
        # Deferred (or dead-lettered) in the spool: the MTA's job is done.
        return EX_OK, f"spooled as {delivery.spool_id}: {result[1] if result else 'queued'}"
    return EX_OK, str(result[1])
