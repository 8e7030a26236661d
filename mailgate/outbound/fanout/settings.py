"""The ``discord:`` section of the config, checked: where each site's posts go, how to retry,
and whether (and as whom) the threads are read back into Redmine.

Each site's posts go to one ``Destination``: a webhook (on a forum channel,
where each ticket gets its own thread, or on a plain channel) or, in bot mode,
a text channel.  Posts that name no site (or the site ``triage``) go to the
triage channel.  The schema (mailgate.settings.schema) refuses unknown keys and
bad values, ``discord_settings`` what needs more than one key, each with a
``ConfigError`` that names the key and never shows a webhook's token.

With ``read: true`` the bot reads each tracked thread back
(mailgate.intake.discord_threads): ``users`` maps Discord user ids to Redmine
logins, and ``unmapped`` says what becomes of anyone else's message.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from mailgate.clients.discord import Webhook
from mailgate.errors import ConfigError
from mailgate.settings.read import read_section
from mailgate.settings.schema import ChannelSpec, Discord
from mailgate.settings.walk import variable

TRIAGE = "triage"
#: The issue custom fields of a ticket's thread: the switch, and the thread's id.
THREAD_FIELD = "discord-thread"
THREAD_ID_FIELD = "discord-thread-id"


@dataclass(frozen=True)
class Destination:
    """Where one site's posts go: a webhook, or (bot mode) a text channel."""

    name: str
    webhook: Webhook | None = None
    channel_id: str | None = None
    #: Webhook only: the channel is a forum, so each ticket gets its own thread.
    forum: bool = True

    @property
    def key(self) -> str:
        """The channel's identity in the queue: stable while the config names the same target."""
        return f"webhook:{self.webhook.id}" if self.webhook else f"channel:{self.channel_id}"

    @property
    def threads(self) -> bool:
        return self.webhook is None or self.forum


@dataclass(frozen=True)
class DiscordSettings:
    """The ``discord:`` section as the fan-out and the reader use it (its keys, their
    defaults and meaning: mailgate.settings.schema)."""

    mode: str                                   # "webhook" or "bot"
    channels: Mapping[str, Destination]         # site name -> destination
    triage: Destination | None
    bot_token: str | None = field(repr=False)
    show_addresses: bool
    #: Set the ticket's discord-thread / discord-thread-id fields in Redmine.
    redmine_fields: bool
    excerpt_length: int
    api_base: str
    timeout: float
    first_delay: float
    max_delay: float
    max_age: float
    max_attempts: int                           # 0: no limit but max_age
    #: Read the tracked threads back into Redmine (needs the bot token).
    read: bool
    #: Seconds between two reads of one thread.
    poll_interval: float
    #: Discord user id -> the Redmine login that writes their messages.
    users: Mapping[str, str]
    #: A message by anyone else: "comment" (the gateway's user, naming them) or "ignore".
    unmapped: str

    def destination_for(self, site: str | None) -> Destination | None:
        if site is None or site == TRIAGE:
            return self.triage
        return self.channels.get(site)

    def by_key(self, key: str) -> Destination | None:
        every = [*self.channels.values(), *([self.triage] if self.triage else [])]
        return next((d for d in every if d.key == key), None)

    def backoff(self, failures: int) -> float:
        base = min(self.max_delay, self.first_delay * 2 ** max(0, failures - 1))
        # Jitter, so that posts that failed together do not all come back together.
        return base * random.uniform(0.5, 1.0)


def load_discord_settings(section: Mapping | None, *,
                          sites: Iterable[str] | None = None) -> DiscordSettings | None:
    """The ``discord:`` section, checked; None when it is absent, empty or
    ``enabled: false``.

    With ``sites`` (the configured site names), a channel for a site that does
    not exist is an error rather than a channel that never gets a post.
    """
    if not section:
        return None
    return discord_settings(read_section(section, Discord, "discord"), sites=sites)


def discord_settings(spec: Discord, *, sites: Iterable[str] | None = None
                     ) -> DiscordSettings | None:
    """What the fan-out uses, from the section as the schema read it."""
    if not spec.enabled:
        return None
    token = spec.bot_token or None
    if spec.mode == "bot" and not token:
        raise ConfigError(f"discord.bot_token: missing (or set {_TOKEN})")
    channels = _channels(spec.channels, spec.mode, sites)
    triage = _destination("discord.triage", TRIAGE, spec.triage, spec.mode) \
        if spec.triage else None
    if not channels and triage is None:
        raise ConfigError("discord.channels: no channel configured (nor discord.triage)")
    api_base = spec.api_base.rstrip("/")
    if not re.match(r"https?://", api_base):
        raise ConfigError(f"discord.api_base: expected an http(s) URL, got {api_base!r}")
    _check_reading(spec, token)
    retry = spec.retry
    return DiscordSettings(
        mode=spec.mode, channels=channels, triage=triage, bot_token=token,
        show_addresses=spec.show_addresses, redmine_fields=spec.redmine_fields,
        excerpt_length=spec.excerpt_length, api_base=api_base, timeout=spec.timeout,
        first_delay=retry.first_delay, max_delay=retry.max_delay, max_age=retry.max_age,
        max_attempts=retry.max_attempts, read=spec.read, poll_interval=spec.poll_interval,
        users=_users(spec.users), unmapped=spec.unmapped,
    )


_TOKEN = variable(("discord", "bot_token"))


def _check_reading(spec: Discord, token: str | None) -> None:
    if spec.read and not token:
        # Webhooks only post: reading a thread takes a bot with access to it.
        raise ConfigError(f"discord.read: needs discord.bot_token (or {_TOKEN}), a bot that"
                          " may read the threads")
    if spec.read and not spec.redmine_fields:
        raise ConfigError("discord.read: needs discord.redmine_fields: true (the ticket's"
                          " discord-thread field is what turns a thread's reading on and off)")


def _users(spec: Mapping[Any, str]) -> dict[str, str]:
    """``{discord user id: redmine login}``; ids are digits (Developer Mode → Copy User ID)."""
    found = {}
    for user_id, login in spec.items():
        if not re.fullmatch(r"\d{5,25}", str(user_id)):
            raise ConfigError(f"discord.users.{user_id}: not a Discord user id (digits)")
        if not login.strip():
            raise ConfigError(f"discord.users.{user_id}: expected a Redmine login,"
                              f" got {login!r}")
        found[str(user_id)] = login.strip()
    return found


def _channels(spec: Mapping[str, Any], mode: str,
              sites: Iterable[str] | None) -> dict[str, Destination]:
    known = set(sites) if sites is not None else None
    found = {}
    for name, value in spec.items():
        where = f"discord.channels.{name}"
        if known is not None and name not in known:
            raise ConfigError(f"{where}: no such site (sites: {', '.join(sorted(known))})")
        found[name] = _destination(where, name, value, mode)
    return found


def _destination(where: str, name: str, spec: Any, mode: str) -> Destination:
    """A webhook URL or channel id, or a mapping ``{webhook, forum}`` / ``{channel}``."""
    wanted = "webhook" if mode == "webhook" else "channel"
    forum, value = True, spec
    if isinstance(spec, ChannelSpec):
        other = "channel" if mode == "webhook" else "webhook"
        if getattr(spec, other) is not None:
            raise ConfigError(f"{where}.{other}: not a key in {mode} mode (use {wanted})")
        forum, value, where = spec.forum, getattr(spec, wanted), f"{where}.{wanted}"
    if value is None or value == "":
        raise ConfigError(f"{where}: missing the {wanted}")
    if mode == "bot":
        if not re.fullmatch(r"\d{5,25}", str(value)):
            raise ConfigError(f"{where}: not a Discord channel id (digits): {value!r}")
        return Destination(name, channel_id=str(value))
    try:
        return Destination(name, webhook=Webhook.from_url(str(value)), forum=forum)
    except ValueError as exc:
        # Never echo the value: a webhook URL holds its token.
        raise ConfigError(f"{where}: {exc}") from None
