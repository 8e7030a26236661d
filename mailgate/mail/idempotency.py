"""Keys and markers that make one mail one note, however often it arrives.

A mail is known by its Message-ID (or, without one, the SHA-256 of its bytes)
*per route*: the same mail sent to a ticket and to a site is two deliveries,
but the same mail reaching ticket 5 by two addresses (reply-all) is one.

The state store remembers every (key, route) it has applied.  That record is
written after Redmine answers, so a crash in between would forget it; for
that window every note carries a short marker on its last line.  Before the
write the store records the attempt (``ATTEMPTED``); a (key, route) with an
attempt and no outcome may have been written, and only then is the ticket
searched for its marker before posting again.
"""

from __future__ import annotations

import hashlib
import hmac
import re

_MARKER = re.compile(r"\(mailgate:([0-9a-f]{16})\)")

#: The kind of the state store's record of a (key, route) whose write was begun
#: and whose outcome was not recorded yet.
ATTEMPTED = "attempted"


def normalise_key(mail_key: str) -> str:
    """Message-IDs compare without angle brackets and surrounding space, domain in lower case."""
    key = mail_key.strip().strip("<>").strip()
    local, at, domain = key.rpartition("@")
    return f"{local}@{domain.lower()}" if at else key


def route_key(kind: str, ticket: int | None, site: str | None) -> str:
    """``ticket:5`` for a reply, ``site:site-a`` for a new ticket."""
    return f"ticket:{ticket}" if kind == "reply" else f"site:{site}"


def marker(mail_key: str, route: str, secret: bytes) -> str:
    """The marker a note or a new ticket carries, e.g. ``(mailgate:3f2a9c1e0b4d5a6f)``.

    A keyed MAC, not a plain hash: a marker found on a ticket makes the mail it
    stands for a duplicate, so nobody without ``secret`` may be able to write
    the marker of a mail before it arrives (issue 18: a forged marker silently
    swallowed the mail).

    >>> k = b"secret"
    >>> marker("<A@Example.org>", "ticket:5", k) == marker("a@example.org".join("<>"), "ticket:5", k)
    False
    >>> marker("<a@EXAMPLE.org>", "ticket:5", k) == marker(" <a@example.org>", "ticket:5", k)
    True
    >>> marker("<a@example.org>", "ticket:5", k) == marker("<a@example.org>", "ticket:5", b"other")
    False
    """
    message = f"{normalise_key(mail_key)}\n{route}".encode()
    return f"(mailgate:{hmac.new(secret, message, hashlib.sha256).hexdigest()[:16]})"


def with_marker(text: str, mark: str) -> str:
    return f"{text}\n\n{mark}" if text.strip() else mark


def without_marker(text: str) -> str:
    """The text a person wrote, without the marker line (for Discord excerpts)."""
    return _MARKER.sub("", text or "").rstrip()


def defused(text: str) -> str:
    """A person's text with anything shaped like our marker made inert: the only
    markers in a ticket are the ones the gateway wrote.

    >>> defused("see (mailgate:0123456789abcdef) above")
    'see (mailgate 0123456789abcdef) above'
    """
    return _MARKER.sub(lambda m: f"(mailgate {m.group(1)})", text or "")


def markers_in(text: str) -> set[str]:
    return {f"(mailgate:{m})" for m in _MARKER.findall(text or "")}
