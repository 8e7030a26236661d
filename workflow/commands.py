"""Explicit commands at the top of a mail body: ``Status: <state>``, ``Action: <action>``.

Redmine's own mail handler reads ``Status:`` keyword lines; we take the same
style but only at the very top of the body, before the text, so a quoted
"Status: open" further down (or a sentence that happens to start with
"Action:") is never taken as a command.  Command lines are removed from the
note text.  Values are kept as written: the workflow resolves them against
state and action ids and titles, so it can say precisely what it did not know.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_KEYWORD_LINE = re.compile(r"^[ \t]*(status|action)[ \t]*:[ \t]*(\S.*?)[ \t]*$", re.IGNORECASE)


@dataclass(frozen=True)
class Commands:
    action: str | None = None
    status: str | None = None

    def __bool__(self) -> bool:
        return self.action is not None or self.status is not None


def parse_commands(body: str) -> tuple[Commands, str]:
    """Split ``body`` into its leading commands and the rest of the text.

    >>> parse_commands("Status: Solved\\n\\nThanks, that did it.")
    (Commands(action=None, status='Solved'), 'Thanks, that did it.')
    >>> parse_commands("Thanks.\\nStatus: Solved")
    (Commands(action=None, status=None), 'Thanks.\\nStatus: Solved')
    """
    lines = body.splitlines()
    found: dict[str, str] = {}
    index = _skip_blank(lines, 0)
    while index < len(lines):
        match = _KEYWORD_LINE.match(lines[index])
        if not match:
            break
        # The first of a repeated keyword wins: it is the one the sender saw first.
        found.setdefault(match.group(1).lower(), match.group(2))
        index += 1
    if not found:
        return Commands(), body
    rest = "\n".join(lines[_skip_blank(lines, index):])
    return Commands(action=found.get("action"), status=found.get("status")), rest


def _skip_blank(lines: list[str], index: int) -> int:
    while index < len(lines) and not lines[index].strip():
        index += 1
    return index
