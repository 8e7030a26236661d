"""Keys and markers that make one mail one note, however often it arrives.

A mail is known by its Message-ID (or, without one, the SHA-256 of its bytes)
*per route*: the same mail sent to a ticket and to a site is two deliveries,
but the same mail reaching ticket 5 by two addresses (reply-all) is one.

The state store remembers every (key, route) it has applied.  That record is
written after Redmine answers, so a crash in between would forget it; for
that window every note carries a short marker on its last line, and the
ticket's journals are searched for it before posting.
"""

from __future__ import annotations

import hashlib
import re

_MARKER = re.compile(r"\(mailgate:([0-9a-f]{16})\)")


def normalise_key(mail_key: str) -> str:
    """Message-IDs compare without angle brackets and surrounding space, domain in lower case."""
    key = mail_key.strip().strip("<>").strip()
    local, at, domain = key.rpartition("@")
    return f"{local}@{domain.lower()}" if at else key


def route_key(kind: str, ticket: int | None, site: str | None) -> str:
    """``ticket:5`` for a reply, ``site:site-a`` for a new ticket."""
    return f"ticket:{ticket}" if kind == "reply" else f"site:{site}"


def marker(mail_key: str, route: str) -> str:
    """The marker a note or a new ticket carries, e.g. ``(mailgate:3f2a9c1e0b4d5a6f)``.

    >>> marker("<A@Example.org>", "ticket:5") == marker("a@example.org".join("<>"), "ticket:5")
    False
    >>> marker("<a@EXAMPLE.org>", "ticket:5") == marker(" <a@example.org>", "ticket:5")
    True
    """
    digest = hashlib.sha256(f"{normalise_key(mail_key)}\n{route}".encode()).hexdigest()
    return f"(mailgate:{digest[:16]})"


def with_marker(text: str, mark: str) -> str:
    return f"{text}\n\n{mark}" if text.strip() else mark


def without_marker(text: str) -> str:
    """The text a person wrote, without the marker line (for Discord excerpts)."""
    return _MARKER.sub("", text or "").rstrip()


def markers_in(text: str) -> set[str]:
    return {f"(mailgate:{m})" for m in _MARKER.findall(text or "")}
