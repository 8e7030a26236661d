"""A message in a ticket's Discord thread, planned as the mail it stands for (issue 14).

The Discord reader (``mailgate.intake.discord_threads``) reads each new message
of a tracked thread once and gathers its facts: the ticket (``TicketView``, as
for mail), the Redmine user its author is mapped to (``Writer``), the files it
could fetch.  ``plan_message`` decides once, and decides it as a mail replying
to the ticket is decided: the message is presented as that mail (``as_mail``)
and goes through ``handlers.reply.handle``.  So the same identity rule, the
same role (owner / other / admin, from the Redmine user's address), the same
commands at the top (``Status: …``, ``Action: …``) checked by the same
workflow, the same note (trimmed, the files left out named) and the same
idempotency marker, keyed by the message's id.  One decision path for both
channels, not a copy.

What only Discord knows is who wrote:

* an author mapped to a Redmine login (``discord.users``) is verified by
  construction: Discord authenticated them.  The note is theirs, written as
  that login, with that user's role on the ticket;
* anyone else (``discord.unmapped``): ``comment``, the gateway's user writes
  it as a comment naming them by their display name (never a mention), as it
  does for a stranger's mail; or ``ignore``.

Our own posts, other bots' and Discord's own notices (a pin, a member joined)
are nobody's words: ``not_a_person`` says so before anything is planned.

Nothing here does I/O: the facts come in, the plan goes out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Mapping

import msgspec

from mailgate.config import Config, Site
from mailgate.mail.idempotency import marker, route_key
from mailgate.mail.message import Attachment, ParsedMail
from mailgate.trust import Verdict

from . import reply
from .attachments import why_not
from .plans import Ignore, Plan, PostNote, Sender, TicketView

name = "discord"
description = "A message in a ticket's Discord thread: a note, as a mail would be."

#: https://discord.com/developers/docs/resources/message#message-object-message-types:
#: what a person writes (DEFAULT, and REPLY to another message).  The rest are
#: Discord's own notices: a pin, a member added, the thread's starter message.
PERSON_TYPES = (0, 19)
#: <@id> and <@!id>: a user mention in Discord's markup.
_MENTION = re.compile(r"<@!?(\d+)>")


@dataclass(frozen=True)
class DiscordFile:
    """An attachment as the message lists it (not fetched yet)."""

    filename: str
    content_type: str
    #: The size Discord declares; the file itself may be fetched or not.
    size: int
    url: str


@dataclass(frozen=True)
class DiscordMessage:
    """The parts of a message a plan is made of."""

    id: str
    thread_id: str
    author_id: str
    #: The author's display name (``global_name``), else their username.
    author_name: str
    content: str
    files: tuple[DiscordFile, ...] = ()
    author_is_bot: bool = False
    webhook_id: str | None = None
    type: int = 0
    #: Anything else a person's message can hold (stickers, a poll, a forward).
    other_parts: bool = False


@dataclass(frozen=True)
class Writer:
    """The Redmine user a Discord author is mapped to."""

    login: str
    address: str
    name: str


@dataclass(frozen=True)
class MessagePlan:
    """Every decision about one Discord message.  Plain data, recorded with it."""

    message_id: str
    ticket: int
    sender: Sender
    #: What the executor does: PostNote, or Ignore, Duplicate, Refuse, Defer.
    step: Plan
    discord_user: str = ""

    def record(self) -> dict:
        step, decision = self.step, getattr(self.step, "decision", None)
        record = {"step": type(step).__name__, "role": self.sender.role,
                  "login": self.sender.login, "verified": self.sender.verified,
                  "discord_user": self.discord_user, "reason": getattr(step, "reason", None),
                  "as_user": getattr(step, "as_user", None)}
        if decision is not None:
            record.update(action=decision.action, from_state=decision.from_state,
                          to_state=decision.to_state, refused=decision.refused)
        return {k: v for k, v in record.items() if v is not None}


def message_of(raw: Mapping, thread_id: str) -> DiscordMessage:
    """A message as Discord answers it (GET /channels/{thread}/messages)."""
    author = raw.get("author") or {}
    files = tuple(DiscordFile(str(f.get("filename") or "attachment"),
                              str(f.get("content_type") or "application/octet-stream"),
                              int(f.get("size") or 0), str(f.get("url") or ""))
                  for f in raw.get("attachments") or ())
    return DiscordMessage(
        id=str(raw["id"]), thread_id=thread_id, author_id=str(author.get("id") or ""),
        author_name=str(author.get("global_name") or author.get("username") or ""),
        content=_named_mentions(str(raw.get("content") or ""), raw.get("mentions") or ()),
        files=files, author_is_bot=bool(author.get("bot") or author.get("system")),
        webhook_id=raw.get("webhook_id"), type=int(raw.get("type") or 0),
        other_parts=bool(raw.get("sticker_items") or raw.get("poll") or raw.get("embeds")
                         or raw.get("message_snapshots")))


def _named_mentions(content: str, mentions) -> str:
    """``<@id>`` as the person's display name: a Discord mention means nothing in a note."""
    names = {str(u.get("id")): u.get("global_name") or u.get("username") or "someone"
             for u in mentions if isinstance(u, Mapping)}
    return _MENTION.sub(lambda m: safe_name(names.get(m.group(1), "someone")), content)


def safe_name(text: str) -> str:
    """A display name as a note may show it: one line, and never a Redmine mention
    (``@login`` notifies that user) nor markup that could pass for an address."""
    return " ".join(text.replace("@", "").replace("<", "").replace(">", "").split()) or \
        "someone"


def not_a_person(message: DiscordMessage, bot_id: str | None) -> str | None:
    """Why the message is not a person's words for the ticket, or None.

    Our own posts carry the webhook's id (webhook mode) or are the bot's (bot
    mode): importing them would echo every note back into Redmine."""
    if message.webhook_id:
        return "posted by a webhook (ours, or an integration's)"
    if bot_id and message.author_id == bot_id:
        return "posted by mailgate's bot"
    if message.author_is_bot:
        return "posted by a bot"
    if message.type not in PERSON_TYPES:
        return f"a notice of Discord's own (message type {message.type})"
    return None


def withheld(message: DiscordMessage) -> bool:
    """Discord sent a person's message with nothing in it: a message is never empty, so
    the bot lacks the MESSAGE_CONTENT intent (docs/discord.md: Reading)."""
    return not message.content and not message.files and not message.other_parts


def files_to_fetch(message: DiscordMessage, config: Config
                   ) -> tuple[tuple[DiscordFile, str | None], ...]:
    """Each file with why it is left out (None: fetch it), by the limits mail has
    (``attachments:``), from the size Discord declares: nothing too big is fetched."""
    kept, decided = 0, []
    for file in message.files:
        reason = why_not(file.filename, file.content_type, file.size,
                         config.attachment_limits, kept)
        kept += reason is None
        decided.append((file, reason))
    return tuple(decided)


def plan_message(message: DiscordMessage, ticket: TicketView, writer: Writer | None,
                 files: tuple[Attachment, ...], site: Site | None, config: Config) -> MessagePlan:
    """The plan for ``message`` on ``ticket``.  ``writer``: the Redmine user its author is
    mapped to (None: unmapped, or the mapped login is not an active user); ``files``:
    its attachments as fetched (one left out has its ``problem`` set)."""
    settings = config.discord
    stranger = Sender(f"discord:{message.author_id}", safe_name(message.author_name),
                      "other", None)
    if writer is None and settings.unmapped == "ignore":
        return MessagePlan(message.id, ticket.id, stranger,
                           Ignore("a Discord user no Redmine login is mapped to"
                                  " (discord.unmapped: ignore)"), message.author_id)
    mark = marker(f"discord:{message.id}", route_key("reply", ticket.id, None),
                  config.redmine.marker_secret)
    mail = as_mail(message, ticket, writer, files)
    if writer is None:
        # Discord vouches for the person, Redmine knows nobody by them: the mail
        # rules' stranger whose word is taken as a comment (unknown_senders: accept).
        step = reply.handle(mail, ticket, None, _accepting(site, ticket), config, mark,
                            NOT_A_USER)
    else:
        verdict = Verdict(True, f"Discord user {message.author_id}, mapped to"
                                f" {writer.login}")
        step = reply.handle(mail, ticket, writer.login, site, config, mark, verdict)
    return MessagePlan(message.id, ticket.id, _sender(step, stranger, writer), step,
                       message.author_id)


#: An unmapped author: nothing to verify them as.
NOT_A_USER = Verdict(False, "a Discord user no Redmine login is mapped to")


def as_mail(message: DiscordMessage, ticket: TicketView, writer: Writer | None,
            files: tuple[Attachment, ...]) -> ParsedMail:
    """The message as the mail it stands for: from the mapped user's address (which
    gives their role on the ticket), about the ticket, keyed by the message's id."""
    address = writer.address if writer else f"discord:{message.author_id}"
    name = writer.name if writer else safe_name(message.author_name)
    return ParsedMail(message_id=None, from_address=address, from_name=name,
                      subject=ticket.subject, body=message.content, attachments=files,
                      references=(), key=f"discord:{message.id}")


def _accepting(site: Site | None, ticket: TicketView) -> Site:
    """The ticket's site, as far as the identity rule asks: strangers accepted."""
    if site is None:
        # A ticket of a project no site has: it is verified or a stranger's comment.
        return Site(name="discord", address="", project=ticket.project or "",
                    unknown_senders="accept", unverified_senders="comment")
    return msgspec.structs.replace(site, unknown_senders="accept")


def _sender(step: Plan, stranger: Sender, writer: Writer | None) -> Sender:
    found = getattr(step, "sender", None)
    if found is not None:
        return found
    return stranger if writer is None else replace(stranger, address=writer.address,
                                                   name=writer.name, login=writer.login)

