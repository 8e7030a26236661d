"""The text of a post: headline, sender, the mail's note quoted, and the ticket's link.

Everything taken from the mail is escaped for Discord's markdown, and the
whole fits Discord's 2000 characters: when it would not, the excerpt gives way
and the link is kept.  ``Rendered`` also carries the name of the ticket's
thread, ``#<ticket> <subject>``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mailgate.clients.discord import (MAX_CONTENT, MAX_THREAD_NAME, discord_length, escape_markdown, fit, link,
                       one_line)
from mailgate.outbound.fanout.events import FanoutEvent
from mailgate.outbound.fanout.settings import TRIAGE, DiscordSettings


@dataclass(frozen=True)
class Rendered:
    content: str
    thread_name: str


def render(event: FanoutEvent, settings: DiscordSettings) -> Rendered:
    """The message for an event: escaped, quiet, and within Discord's 2000 characters.

    The link is never cut: when the message would be too long, the excerpt gives way.
    """
    head = _headline(event)
    if event.kind != "reminder":       # a reminder is the gateway's, not a sender's
        head += "\n" + _sender_line(event, settings)
    tail = link(event.url)
    head = fit(head, MAX_CONTENT - discord_length(tail) - 1)
    room = min(settings.excerpt_length,
               MAX_CONTENT - discord_length(head) - discord_length(tail) - 2)
    excerpt = fit(_quoted(event.excerpt), room) if room > 3 else ""
    content = "\n".join(part for part in (head, excerpt, tail) if part)
    name = fit(one_line(f"#{event.ticket} {event.subject}"), MAX_THREAD_NAME)
    return Rendered(content, name)


def _headline(event: FanoutEvent) -> str:
    subject = fit(escape_markdown(one_line(event.subject)), 250)
    if event.kind == "reminder":
        return f"**Reminder: #{event.ticket}** is waiting for an answer: {subject}"
    if event.kind == "new":
        where = escape_markdown(event.site or TRIAGE)
        return f"**New ticket #{event.ticket}** in {where}: {subject}"
    change = escape_markdown(event.action or "reply")
    if event.to_state and event.from_state and event.to_state != event.from_state:
        change += f" ({escape_markdown(event.from_state)} → {escape_markdown(event.to_state)})"
    elif event.to_state:
        change += f" ({escape_markdown(event.to_state)})"
    return f"**#{event.ticket}** {change}: {subject}"


def _sender_line(event: FanoutEvent, settings: DiscordSettings) -> str:
    name = one_line(event.sender_name)
    who = fit(escape_markdown(name), 100) if name else "(no name)"
    if settings.show_addresses and event.sender_address:
        who += f" ({escape_markdown(one_line(event.sender_address))})"
    return f"from {who}"


def _quoted(text: str) -> str:
    """Mail text as a block quote, escaped; runs of blank lines kept to one."""
    lines = [line.rstrip() for line in text.strip().splitlines()]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines))
    return "\n".join(f"> {line}" for line in escape_markdown(text).split("\n")) if text else ""
