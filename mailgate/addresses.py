"""What an envelope address may contain, checked the same way at every edge."""

from __future__ import annotations


def shown(address: str) -> str:
    """The address as it may be printed: controls and non-ASCII as \\x.., \\u.. escapes.

    Our SMTP replies are ASCII (no SMTPUTF8), and a log line must stay one line.
    """
    return ascii(address)[1:-1]
