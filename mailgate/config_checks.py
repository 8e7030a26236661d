"""What the configuration must hold across keys, checked once it is read.

Each key's own type and constraints are the schema's (mailgate.settings.schema);
these are the rules that need two keys or more: a site's address must be
reachable and only by it, a policy that accepts strangers needs someone to write
for them, notices must not come from an address that is routed back here.
"""

from __future__ import annotations

from email.utils import parseaddr
from typing import Any

from mailgate.errors import ConfigError
from mailgate.mail.addresses import TICKET_LOCAL
from mailgate.settings.walk import variable

#: mailgate.config's Config and Site, which import this module.
Config = Site = Any


def check_config(config: Config, need_redmine: bool) -> None:
    if need_redmine:
        _check_redmine(config)
    for key in ("smtp", "lmtp", "metrics"):
        if getattr(config, f"{key}_listen"):
            parse_listen(getattr(config, f"{key}_listen"), f"listen.{key}")
    _check_gateway_user(config)
    _check_addresses(config.every_site, config.domains)
    _check_notice_sender(config)
    _check_answers(config)
    _check_discord_reading(config)


def parse_listen(value: Any, where: str) -> tuple[str, int]:
    """``HOST:PORT`` (or ``:PORT``, meaning 127.0.0.1) as the listeners take it; anything
    else is a ConfigError naming ``where`` (a config key, or a command-line option)."""
    host, colon, port = str(value).strip().rpartition(":")
    host = host.strip("[]")     # [::1]:25
    if not colon or not port.isdigit() or not 0 <= int(port) < 65536 or any(
            c.isspace() for c in host):
        raise ConfigError(f"{where}: {value!r} is not HOST:PORT (a port from 0 to 65535)")
    return host or "127.0.0.1", int(port)


def _or_set(*path: str) -> str:
    return f"(or set {variable(path)})"


def _check_redmine(config: Config) -> None:
    for key in ("url", "api_key"):
        if not getattr(config.redmine, key):
            raise ConfigError(f"redmine.{key}: missing {_or_set('redmine', key)}")


def _check_addresses(sites: list[Site], domains: tuple[str, ...]) -> None:
    """Every site's address reachable, and only by it."""
    seen: dict[str, str] = {}
    for site in sites:
        where = "triage.address" if site.name == "triage" else f"sites.{site.name}.address"
        local, _, domain = site.address.rpartition("@")
        if not local or domain not in domains:
            raise ConfigError(f"{where}: {site.address!r} is not in a served domain"
                              f" ({', '.join(domains)}): no mail would reach it")
        if TICKET_LOCAL.fullmatch(local):
            raise ConfigError(f"{where}: {site.address!r} is a ticket's address"
                              " (ticket<N>@): mail to it goes to that ticket")
        if site.address in seen:
            raise ConfigError(f"{where}: {site.address!r} is also {seen[site.address]}'s"
                              " address")
        seen[site.address] = where.rsplit(".", 1)[0]


def _check_notice_sender(config: Config) -> None:
    """Notices come from an address nobody routes back to us: a reply or a bounce to a
    routed address would come back as mail on a ticket or a new one."""
    if config.notify is None:
        return
    address = parseaddr(config.notify.from_address)[1].lower()
    local, _, domain = address.rpartition("@")
    routed = (domain in config.domains and TICKET_LOCAL.fullmatch(local)) or address in {
        s.address for s in config.every_site} or address == config.redmine.notification_address
    if routed:
        raise ConfigError(f"notify.from: {address!r} is routed by this gateway (a ticket,"
                          " a site, or Redmine's notification address): use an address"
                          " nothing routes back here")


def _check_gateway_user(config: Config) -> None:
    # Accepting strangers' mail means someone must write it: without a gateway
    # user every such mail would be answered 250 and then refused by the worker.
    if config.redmine.gateway_user:
        return
    # "create" needs it too: a stranger whose address nothing proves gets no account
    # (anyone could claim any address), so the gateway's user writes their comment.
    where, policy = ("unknown_senders", config.unknown_senders) \
        if config.unknown_senders != "reject" else next(
            ((f"sites.{s.name}.unknown_senders" if s.name != "triage" else
              "triage.unknown_senders", s.unknown_senders)
             for s in config.every_site if s.unknown_senders != "reject"), (None, None))
    if where:
        raise ConfigError(f"{where}: {policy!r} needs redmine.gateway_user, the login that"
                          f" writes for senders Redmine does not know"
                          f" {_or_set('redmine', 'gateway_user')}")


def _check_answers(config: Config) -> None:
    if config.answers is None:
        return
    # Answers are found by the watcher and sent through the notices' relay.
    if config.watch is None or config.notify is None:
        raise ConfigError("answers: needs a watch: section and an enabled notify: section"
                          " (answers are found by the Redmine watcher and sent through the"
                          " notices' relay)")
    if not config.redmine.reporter_field:
        raise ConfigError("answers: needs redmine.reporter_field, the issue field that"
                          f" records whom to answer {_or_set('redmine', 'reporter_field')}")


def _check_discord_reading(config: Config) -> None:
    """What reading Discord threads back (``discord.read``) needs of other sections."""
    discord = config.discord
    if discord is None or not discord.read:
        return
    if config.watch is None:
        # Clearing a ticket's discord-thread field is seen by the Redmine watcher.
        raise ConfigError("discord.read: needs a watch: section (the Redmine watcher sees"
                          " a ticket's discord-thread field set or cleared)")
    if discord.unmapped == "comment" and not config.redmine.gateway_user:
        raise ConfigError("discord.unmapped: 'comment' needs redmine.gateway_user, the login"
                          " that writes for Discord users no login is mapped to"
                          f" {_or_set('redmine', 'gateway_user')}")
