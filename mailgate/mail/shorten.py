"""Text cut to a length without cutting a character in two (issue 18, finding 9).

Redmine counts a subject's length in code points, as Python does, but what a
reader sees as one character may be several: a letter and its accents, an
emoji joined to others (👩‍💻), with a skin tone or a variation selector, a flag
(two regional indicators).  Cutting between them leaves a stray accent or half
a flag, so a cut moves back to where one such character begins.  This is
Unicode's grapheme cluster rule for the cases mail meets, not all of it.
"""

from __future__ import annotations

import unicodedata

ELLIPSIS = "…"
_ZWJ = "\u200d"


def cut_point(text: str, limit: int) -> int:
    """The largest ``at <= limit`` where ``text[:at]`` ends on a whole character.

    >>> cut_point("cafe\\u0301s", 4)
    3
    >>> cut_point("ab", 5)
    2
    """
    at = min(limit, len(text))
    while 0 < at < len(text) and _joins(text, at):
        at -= 1
    return at


def shortened(text: str, limit: int) -> str:
    """``text`` if it fits in ``limit`` characters, else cut with an ellipsis that fits too.

    >>> shortened("Printer jams", 8)
    'Printer…'
    """
    if len(text) <= limit:
        return text
    return text[:cut_point(text, limit - len(ELLIPSIS))] + ELLIPSIS


def _joins(text: str, at: int) -> bool:
    """Whether ``text[at]`` belongs to the same character as ``text[at - 1]``."""
    char, before = text[at], text[at - 1]
    if unicodedata.category(char) in ("Mn", "Mc", "Me") or _ZWJ in (char, before):
        return True
    code = ord(char)
    if 0xFE00 <= code <= 0xFE0F or 0x1F3FB <= code <= 0x1F3FF or 0xE0020 <= code <= 0xE007F:
        # Variation selectors, skin tones, the tags of a subdivision flag.
        return True
    if before == "\r" and char == "\n":
        return True
    # Regional indicators pair up from the start of their run: a flag is two.
    return _regional(char) and _regional(before) and _run_before(text, at) % 2 == 1


def _regional(char: str) -> bool:
    return 0x1F1E6 <= ord(char) <= 0x1F1FF


def _run_before(text: str, at: int) -> int:
    count = 0
    while at - count > 0 and _regional(text[at - count - 1]):
        count += 1
    return count
