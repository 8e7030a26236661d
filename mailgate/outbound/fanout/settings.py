"""The ``discord:`` section of the config, checked: where each site's posts go, how to retry,
and whether (and as whom) the threads are read back into Redmine.

Each site's posts go to one ``Destination``: a webhook (on a forum channel,
where each ticket gets its own thread, or on a plain channel) or, in bot mode,
a text channel.  Posts that name no site (or the site ``triage``) go to the
triage channel.  ``load_discord_settings`` refuses unknown keys and bad values
with a ``ConfigError`` that names the key and never shows a webhook's token.

With ``read: true`` the bot reads each tracked thread back
(mailgate.intake.discord_threads): ``users`` maps Discord user ids to Redmine
logins, and ``unmapped`` says what becomes of anyone else's message.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from mailgate.clients.discord import DEFAULT_API_BASE, Webhook
from mailgate.errors import ConfigError, unknown_key

TRIAGE = "triage"
#: The issue custom fields of a ticket's thread: the switch, and the thread's id.
THREAD_FIELD = "discord-thread"
THREAD_ID_FIELD = "discord-thread-id"
#: What becomes of a message by someone ``users`` does not map.
UNMAPPED = ("comment", "ignore")


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
    mode: str                                   # "webhook" or "bot"
    channels: Mapping[str, Destination]         # site name -> destination
    triage: Destination | None = None
    bot_token: str | None = field(default=None, repr=False)
    show_addresses: bool = False
    #: Set the ticket's discord-thread / discord-thread-id fields in Redmine.
    redmine_fields: bool = False
    excerpt_length: int = 600
    api_base: str = DEFAULT_API_BASE
    timeout: float = 10.0
    first_delay: float = 5.0
    max_delay: float = 300.0
    max_age: float = 2 * 24 * 3600.0
    max_attempts: int = 0                       # 0: no limit but max_age
    #: Read the tracked threads back into Redmine (needs the bot token).
    read: bool = False
    #: Seconds between two reads of one thread.
    poll_interval: float = 10.0
    #: Discord user id -> the Redmine login that writes their messages.
    users: Mapping[str, str] = field(default_factory=dict)
    #: A message by anyone else: "comment" (the gateway's user, naming them) or "ignore".
    unmapped: str = "comment"

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


_KEYS = {"enabled", "mode", "channels", "triage", "bot_token", "show_addresses",
         "redmine_fields", "excerpt_length", "api_base", "timeout", "retry", "read",
         "poll_interval", "users", "unmapped"}
_RETRY_KEYS = {"first_delay", "max_delay", "max_age", "max_attempts"}


def load_discord_settings(section: Mapping | None, *,
                          sites: Iterable[str] | None = None) -> DiscordSettings | None:
    """The ``discord:`` section, checked; None when it is absent or ``enabled: false``.

    With ``sites`` (the configured site names), a channel for a site that does
    not exist is an error rather than a channel that never gets a post.
    """
    if section is None:
        return None
    if not isinstance(section, Mapping):
        raise ConfigError("discord: expected a mapping")
    if not section or not _bool(section, "enabled", True, "discord"):
        return None
    _only(section, _KEYS, "discord")
    mode = section.get("mode", "webhook")
    if mode not in ("webhook", "bot"):
        raise ConfigError(f"discord.mode: {mode!r} is not one of webhook, bot")
    token = section.get("bot_token") or None
    if mode == "bot" and not token:
        raise ConfigError("discord.bot_token: missing (or set MAILGATE_DISCORD_BOT_TOKEN)")
    channels = _channels(section.get("channels"), mode, sites)
    triage = (_destination("discord.triage", TRIAGE, section["triage"], mode)
              if section.get("triage") else None)
    if not channels and triage is None:
        raise ConfigError("discord.channels: no channel configured (nor discord.triage)")
    api_base = str(section.get("api_base") or DEFAULT_API_BASE).rstrip("/")
    if not re.match(r"https?://", api_base):
        raise ConfigError(f"discord.api_base: expected an http(s) URL, got {api_base!r}")
    retry = section.get("retry") or {}
    if not isinstance(retry, Mapping):
        raise ConfigError("discord.retry: expected a mapping")
    _only(retry, _RETRY_KEYS, "discord.retry")
    read = _bool(section, "read", False, "discord")
    if read and not token:
        # Webhooks only post: reading a thread takes a bot with access to it.
        raise ConfigError("discord.read: needs discord.bot_token (or"
                          " MAILGATE_DISCORD_BOT_TOKEN), a bot that may read the threads")
    if read and not _bool(section, "redmine_fields", False, "discord"):
        raise ConfigError("discord.read: needs discord.redmine_fields: true (the ticket's"
                          " discord-thread field is what turns a thread's reading on and off)")
    unmapped = section.get("unmapped", "comment")
    if unmapped not in UNMAPPED:
        raise ConfigError(f"discord.unmapped: {unmapped!r} is not one of {', '.join(UNMAPPED)}")
    return DiscordSettings(
        mode=mode, channels=channels, triage=triage, bot_token=token,
        show_addresses=_bool(section, "show_addresses", False, "discord"),
        redmine_fields=_bool(section, "redmine_fields", False, "discord"),
        excerpt_length=int(_number(section, "excerpt_length", 600, "discord", whole=True)),
        api_base=api_base,
        timeout=_number(section, "timeout", 10.0, "discord"),
        first_delay=_number(retry, "first_delay", 5.0, "discord.retry"),
        max_delay=_number(retry, "max_delay", 300.0, "discord.retry"),
        max_age=_number(retry, "max_age", 2 * 24 * 3600.0, "discord.retry"),
        max_attempts=int(_number(retry, "max_attempts", 0, "discord.retry", whole=True,
                                 zero=True)),
        read=read, poll_interval=_number(section, "poll_interval", 10.0, "discord"),
        users=_users(section.get("users")), unmapped=unmapped,
    )


def _users(spec: Any) -> dict[str, str]:
    """``{discord user id: redmine login}``; ids are digits (Developer Mode → Copy User ID)."""
    spec = spec or {}
    if not isinstance(spec, Mapping):
        raise ConfigError("discord.users: expected a mapping of Discord user id to Redmine login")
    found = {}
    for user_id, login in spec.items():
        if not re.fullmatch(r"\d{5,25}", str(user_id)):
            raise ConfigError(f"discord.users.{user_id}: not a Discord user id (digits)")
        if not isinstance(login, str) or not login.strip():
            raise ConfigError(f"discord.users.{user_id}: expected a Redmine login,"
                              f" got {login!r}")
        found[str(user_id)] = login.strip()
    return found


def _channels(spec: Any, mode: str, sites: Iterable[str] | None) -> dict[str, Destination]:
    spec = spec or {}
    if not isinstance(spec, Mapping):
        raise ConfigError("discord.channels: expected a mapping of site name to channel")
    known = set(sites) if sites is not None else None
    found = {}
    for name, value in spec.items():
        where = f"discord.channels.{name}"
        if known is not None and str(name) not in known:
            raise ConfigError(f"{where}: no such site (sites: {', '.join(sorted(known))})")
        found[str(name)] = _destination(where, str(name), value, mode)
    return found


def _destination(where: str, name: str, spec: Any, mode: str) -> Destination:
    """A webhook URL or channel id, or a mapping ``{webhook|channel: ..., forum: ...}``."""
    wanted = "webhook" if mode == "webhook" else "channel"
    if isinstance(spec, Mapping):
        _only(spec, {"webhook", "forum"} if mode == "webhook" else {"channel"}, where)
        forum = _bool(spec, "forum", True, where)
        value, where = spec.get(wanted), f"{where}.{wanted}"
    else:
        forum, value = True, spec
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


def _only(spec: Mapping, allowed: set[str], where: str) -> None:
    unknown = sorted(str(k) for k in spec if k not in allowed)
    if unknown:
        raise unknown_key(where, unknown[0], allowed)


def _bool(spec: Mapping, key: str, default: bool, where: str) -> bool:
    value = spec.get(key, default)
    # Values from the environment are strings.
    words = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
    if isinstance(value, str) and value.lower() in words:
        return words[value.lower()]
    if not isinstance(value, bool):
        raise ConfigError(f"{where}.{key}: expected true or false, got {value!r}")
    return value


def _number(spec: Mapping, key: str, default: float, where: str, *, whole: bool = False,
            zero: bool = False) -> float:
    value = spec.get(key, default)
    try:
        number = float(value) if not isinstance(value, bool) else None
    except (TypeError, ValueError):
        number = None
    if number is None or number < 0 or (number == 0 and not zero) or (
            whole and number != int(number)):
        kind = "a whole number" if whole else "a number"
        raise ConfigError(f"{where}.{key}: expected {kind} > {'=' if zero else ''}0,"
                          f" got {value!r}")
    return number
