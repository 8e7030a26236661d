"""mailgate's configuration: one YAML file, read once, passed explicitly.

Every scalar setting can be overridden by an environment variable named
``MAILGATE_<SECTION>_<KEY>`` (``MAILGATE_REDMINE_API_KEY``,
``MAILGATE_SPOOL_PATH``, ...), so secrets stay out of the file.  A wrong
value is a ``ConfigError`` that names the key holding it.
"""

from __future__ import annotations

import hashlib

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from workflow import Workflow, WorkflowError, load_default_table

from mailgate.errors import ConfigError, unknown_key
from mailgate.mail.addresses import TICKET_LOCAL
from mailgate.intake.ratelimit import Limits, load_limits
from mailgate.store.database import Location
from mailgate.trust import TrustSettings, load_trust_settings

DEFAULT_MAX_SIZE = 25 * 1024 * 1024
#: Redmine's default attachment_max_size (5120 kB).
REDMINE_MAX_ATTACHMENT_SIZE = 5120 * 1024
#: The keys of the ``redmine`` section.
REDMINE_KEYS = ("url", "api_key", "timeout", "gateway_user", "notification_address",
                "statuses", "reporter_field", "participants_field", "account_notice",
                "text_formatting", "max_attachment_size")
#: ``redmine.text_formatting``: Redmine's own names for its settings ("none" is "").
TEXT_FORMATTINGS = {"textile": "textile", "markdown": "markdown",
                    "common_mark": "common_mark", "none": "", "": ""}


@dataclass(frozen=True)
class RedmineSettings:
    url: str
    api_key: str
    timeout: float = 10.0
    #: The gateway's own Redmine login, which writes for unknown senders.
    gateway_user: str | None = None
    #: The From: of Redmine's notification mails (replies to them are routed).
    notification_address: str | None = None
    #: workflow state id -> Redmine status name (defaults: the states' display names).
    statuses: Mapping[str, str] = field(default_factory=dict)
    #: The issue custom field that records the address which opened a ticket when
    #: the gateway's user wrote it (docs/reporters.md); None: not recorded.
    reporter_field: str | None = None
    #: The issue custom field for the first mail's Cc: addresses, one per line; None: not kept.
    participants_field: str | None = None
    #: ``unknown_senders: create``: Redmine mails the new account its login (off by default).
    account_notice: bool = False
    #: Redmine's text formatting (Administration > Settings > General): what mail text is
    #: escaped for, so that it shows as written (mailgate.mail.markup): "textile" (Redmine's
    #: default), "markdown", "common_mark", or "" (none).  Redmine's API does not say it.
    text_formatting: str = "textile"
    #: Redmine's largest upload, its Setting.attachment_max_size (default 5120 kB): a file
    #: over it is left out and named in the note, not sent for Redmine to refuse.
    max_attachment_size: int = REDMINE_MAX_ATTACHMENT_SIZE

    @property
    def marker_secret(self) -> bytes:
        """The key of the idempotency markers' MAC (mailgate.mail.idempotency.marker).

        Derived from the API key: a secret every gateway host of one Redmine already
        shares, and whoever has it can write anything in Redmine anyway.  A new API
        key makes new markers: only a mail in flight while it changes could be
        posted twice."""
        return hashlib.sha256(b"mailgate idempotency marker\0" +
                              (self.api_key or "").encode()).digest()


@dataclass(frozen=True)
class Site:
    name: str
    address: str
    project: str
    tracker: str | None = None
    #: Extra issue fields for new tickets (priority_id, custom_fields, ...).
    fields: Mapping[str, Any] = field(default_factory=dict)
    workflow: Workflow | None = None
    #: Mail from an address Redmine does not know: "reject" (default), "accept" (the
    #: gateway's user writes it) or "create" (a Redmine account is made for the sender).
    unknown_senders: str = "reject"
    #: Mail whose sender is not verified (DKIM): "comment" (default) or "reject".
    unverified_senders: str = "comment"


@dataclass(frozen=True)
class WatchSettings:
    """The Redmine watcher (mailgate.watcher): what changed in Redmine, told onwards."""

    #: Seconds between two polls of Redmine (one request each when nothing changed).
    poll_interval: float = 60.0


@dataclass(frozen=True)
class AnswerSettings:
    """Answers mailed back to reporters who are not Redmine users (service-desk mode)."""

    #: At most this many answers an hour to one address; more are recorded, not sent.
    max_per_hour: int = 10


@dataclass(frozen=True)
class Config:
    redmine: RedmineSettings
    domains: tuple[str, ...]
    sites: Mapping[str, Site]
    triage: Site | None
    admins: frozenset[str]
    workflow: Workflow
    spool_path: Path
    #: PostgreSQL URL for a spool shared by several gateway hosts (else SQLite at spool_path).
    spool_url: str | None = None
    lease_seconds: float = 60.0
    #: Done mails, sent Discord posts and finished notices are deleted after this many
    #: days (mailgate.store.retention, run by the sweep); dead mail is kept.
    keep_done_days: float = 30.0
    #: Threads applying spooled mail in `serve` (each ticket's mail stays in order).
    spool_workers: int = 2
    retry_first_delay: float = 30.0
    retry_max_delay: float = 3600.0
    #: Give up on a temporary failure after this long (MTAs: five days).
    max_age: float = 5 * 24 * 3600.0
    #: Launchpad's expiry: open / needs-info with no activity for this many days.
    expire_after_days: float = 15.0
    #: How often `serve` runs the sweep (seconds).
    sweep_interval: float = 3600.0
    #: Remind Discord of an open ticket with no update for this many hours (None: never).
    remind_after_hours: float | None = None
    hostname: str = "mailgate.localhost"
    max_message_size: int = DEFAULT_MAX_SIZE
    max_recipients: int = 50
    #: Refused RCPTs one SMTP/LMTP session may have before it is closed (421).
    max_failed_recipients: int = 10
    unknown_senders: str = "reject"
    #: Attach the original .eml to the note: "when-trimmed" (default), "always", "never".
    attach_original: str = "when-trimmed"
    attachment_limits: Any = None
    #: Notices to senders (mailgate.outbound.notify), or None.
    notify: Any = None
    #: Per-sender (and per-client) rate limits (mailgate.intake.ratelimit).
    limits: Limits = Limits()
    #: Whose word on a sender's identity we take (mailgate.trust).
    trust: TrustSettings = TrustSettings()
    unverified_senders: str = "comment"
    smtp_listen: str | None = None
    lmtp_listen: str | None = None
    #: Discord fan-out (mailgate.outbound.fanout), or None.
    discord: Any = None
    #: Where `serve` offers /metrics and /healthz, or None.
    metrics_listen: str | None = None
    #: /healthz fails when Redmine has been unreachable this long (seconds).
    redmine_down_alarm: float = 600.0
    #: /healthz fails when the oldest waiting mail is older than this (seconds).
    spool_stuck_alarm: float = 3600.0
    #: IMAP mailboxes to take mail from (mailgate.intake.imap_settings), or None.
    imap: Any = None
    #: The Redmine watcher, or None (not run).
    watch: WatchSettings | None = None
    #: Answers mailed to reporters (needs ``watch`` and ``notify``), or None.
    answers: AnswerSettings | None = None

    @property
    def store(self) -> Location:
        """Where every part of the store is: ``spool.url`` when set, else ``spool.path``."""
        return Location.configured(self.spool_path, self.spool_url)

    def site_for_address(self, address: str) -> Site | None:
        wanted = address.lower()
        for site in self.sites.values():
            if site.address.lower() == wanted:
                return site
        if self.triage and self.triage.address.lower() == wanted:
            return self.triage
        return None

    def site_for_project(self, project: str | None) -> Site | None:
        for site in [*self.sites.values(), *([self.triage] if self.triage else [])]:
            if site.project == project:
                return site
        return None

    def workflow_for(self, site: Site | None) -> Workflow:
        return site.workflow if site and site.workflow else self.workflow


# Settings that may come from the environment: (section, key) -> variable.
# Every scalar setting: (section, key), or (None, key) for a top-level one.
ENV_KEYS = [
    ("redmine", "url"), ("redmine", "api_key"), ("redmine", "timeout"),
    ("redmine", "gateway_user"), ("redmine", "notification_address"),
    ("redmine", "reporter_field"), ("redmine", "participants_field"),
    ("redmine", "account_notice"), ("redmine", "text_formatting"),
    ("redmine", "max_attachment_size"),
    ("spool", "path"), ("spool", "url"), ("spool", "lease_seconds"), ("spool", "workers"),
    ("spool", "retry_first_delay"), ("spool", "retry_max_delay"), ("spool", "max_age"),
    ("spool", "keep_done_days"),
    ("listen", "smtp"), ("listen", "lmtp"), ("listen", "metrics"),
    ("server", "hostname"), ("server", "max_message_size"), ("server", "max_recipients"),
    ("server", "max_failed_recipients"),
    ("server", "redmine_down_alarm"), ("server", "spool_stuck_alarm"),
    ("sweep", "expire_after_days"), ("sweep", "interval"), ("sweep", "remind_after_hours"),
    ("attachments", "max_size"), ("attachments", "max_count"), ("attachments", "max_note_chars"),
    ("discord", "bot_token"), ("discord", "enabled"), ("discord", "mode"),
    ("discord", "show_addresses"), ("discord", "redmine_fields"),
    ("discord", "excerpt_length"), ("discord", "api_base"), ("discord", "timeout"),
    ("discord", "triage"), ("discord", "read"), ("discord", "unmapped"),
    ("discord", "poll_interval"),
    ("notify", "relay"), ("notify", "from"), ("notify", "enabled"), ("notify", "timeout"),
    ("notify", "max_age"), ("notify", "max_per_hour"),
    ("trust", "dns_timeout"), ("trust", "verify_dkim"),
    # Every mailbox's defaults (a mailbox's own setting wins).
    ("imap", "login_alarm"), ("imap", "poll_interval"), ("imap", "idle"),
    ("imap", "batch_size"), ("imap", "timeout"),
    ("watch", "poll_interval"), ("answers", "max_per_hour"),
    (None, "unknown_senders"), (None, "unverified_senders"), (None, "attach_original"),
]


def parse_listen(value: Any, where: str) -> tuple[str, int]:
    """``HOST:PORT`` (or ``:PORT``, meaning 127.0.0.1) as the listeners take it; anything
    else is a ConfigError naming ``where`` (a config key, or a command-line option)."""
    host, colon, port = str(value).strip().rpartition(":")
    host = host.strip("[]")     # [::1]:25
    if not colon or not port.isdigit() or not 0 <= int(port) < 65536 or any(
            c.isspace() for c in host):
        raise ConfigError(f"{where}: {value!r} is not HOST:PORT (a port from 0 to 65535)")
    return host or "127.0.0.1", int(port)


def env_name(section: str | None, key: str) -> str:
    return f"MAILGATE_{section + '_' if section else ''}{key}".upper().replace("-", "_")


def load_config(path: str | os.PathLike | None, environ: Mapping[str, str] | None = None,
                *, need_redmine: bool = True) -> Config:
    """Read ``path`` (or nothing: environment only) and build a checked Config.

    ``need_redmine=False`` is for commands that never contact Redmine
    (``workflow show``, ``explain`` with the ticket given), so they run without secrets.
    """
    environ = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = yaml.safe_load(Path(path).read_text("utf-8")) or {}
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
    _apply_environment(data, environ)
    base = Path(path).resolve().parent if path else Path.cwd()
    config = _build(data, base, need_redmine)
    _check_discord_reading(config)
    return config


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
                          f" (or set {env_name('redmine', 'gateway_user')})")


def _apply_environment(data: dict[str, Any], environ: Mapping[str, str]) -> None:
    for section, key in ENV_KEYS:
        text = environ.get(env_name(section, key))
        if text is None:
            continue
        # Read as YAML reads the file: "25" is a number, "true" a boolean; a
        # secret such as an API key stays the string it is.
        value = text if key in _ALWAYS_TEXT else _scalar(text)
        if section is None:
            data[key] = value
            continue
        data.setdefault(section, {})
        if not isinstance(data[section], dict):
            raise ConfigError(f"{section}: expected a mapping")
        data[section][key] = value


_ALWAYS_TEXT = {"api_key", "bot_token", "url", "path", "from", "relay", "hostname"}


def _scalar(text: str) -> Any:
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, (str, int, float, bool)) else text


def _section(data: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = data.get(name) or {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{name}: expected a mapping")
    return value


#: The keys each part of the file may have.  A key not here is refused with the
#: nearest one named: a misspelling must never silently become a default (``admin:``
#: for ``admins:`` would leave the gateway with no admins).  The sections below
#: that have their own loader (trust, notify, limits, discord, imap) check their keys
#: there, with the same helper.
TOP_KEYS = {"domains", "redmine", "admins", "workflow", "sites", "triage", "server",
            "listen", "spool", "sweep", "unknown_senders", "unverified_senders",
            "attach_original", "attachments", "notify", "limits", "trust", "discord",
            "imap", "watch", "answers"}
SECTION_KEYS = {
    "server": {"hostname", "max_message_size", "max_recipients", "max_failed_recipients",
               "redmine_down_alarm", "spool_stuck_alarm"},
    "listen": {"smtp", "lmtp", "metrics"},
    "spool": {"path", "url", "lease_seconds", "keep_done_days", "workers",
              "retry_first_delay", "retry_max_delay", "max_age"},
    "sweep": {"expire_after_days", "interval", "remind_after_hours"},
}
SITE_KEYS = {"address", "project", "tracker", "fields", "workflow", "unknown_senders",
             "unverified_senders"}


def _check_keys(data: Mapping[str, Any]) -> None:
    _known("", data, TOP_KEYS)
    for section, keys in SECTION_KEYS.items():
        _known(section, _section(data, section), keys)
    for name, spec in _section(data, "sites").items():
        if isinstance(spec, Mapping):
            _known(f"sites.{name}", spec, SITE_KEYS)
    if isinstance(data.get("triage"), Mapping):
        _known("triage", data["triage"], SITE_KEYS)


def _build(data: Mapping[str, Any], base: Path, need_redmine: bool) -> Config:
    _check_keys(data)
    domains = _domains(data)
    workflow = _workflow("workflow", _section(data, "workflow"), None)
    unknown = _choice(data, "unknown_senders", UNKNOWN_SENDER_POLICIES, "reject")
    unverified = _choice(data, "unverified_senders", ("comment", "reject"), "comment")
    sites = {name: _site(name, spec, domains[0], workflow, unknown, unverified)
             for name, spec in _section(data, "sites").items()}
    triage_spec = data.get("triage")
    triage = (_site("triage", triage_spec, domains[0], workflow, unknown, unverified)
              if triage_spec else None)
    server = _section(data, "server")
    notify = _notify(data, str(server.get("hostname", "mailgate.localhost")))
    listen = _section(data, "listen")
    for key in ("smtp", "lmtp", "metrics"):
        if listen.get(key):
            parse_listen(listen[key], f"listen.{key}")
    spool = _section(data, "spool")
    redmine = _redmine(_section(data, "redmine"), need_redmine)
    _check_gateway_user(redmine, unknown, [*sites.values(), *([triage] if triage else [])])
    _check_addresses([*sites.values(), *([triage] if triage else [])], domains)
    _check_notice_sender(notify, [*sites.values(), *([triage] if triage else [])], redmine,
                         domains)
    return Config(
        redmine=redmine,
        domains=domains,
        sites=sites,
        triage=triage,
        admins=frozenset(a.lower() for a in _list(data, "admins")),
        workflow=workflow,
        spool_path=base / str(spool.get("path", "var/spool.db")),
        spool_url=spool.get("url") or None,
        lease_seconds=_number(spool, "lease_seconds", 60.0, "spool"),
        keep_done_days=_number(spool, "keep_done_days", 30.0, "spool"),
        spool_workers=_int(spool, "workers", 2, "spool"),
        retry_first_delay=_number(spool, "retry_first_delay", 30.0, "spool"),
        retry_max_delay=_number(spool, "retry_max_delay", 3600.0, "spool"),
        max_age=_number(spool, "max_age", 5 * 24 * 3600.0, "spool"),
        expire_after_days=_number(_section(data, "sweep"), "expire_after_days", 15.0, "sweep"),
        sweep_interval=_number(_section(data, "sweep"), "interval", 3600.0, "sweep"),
        remind_after_hours=(_number(_section(data, "sweep"), "remind_after_hours", 24.0, "sweep")
                            if "remind_after_hours" in _section(data, "sweep") else None),
        hostname=str(server.get("hostname", "mailgate.localhost")),
        max_message_size=_int(server, "max_message_size", DEFAULT_MAX_SIZE, "server"),
        max_recipients=_int(server, "max_recipients", 50, "server"),
        max_failed_recipients=_int(server, "max_failed_recipients", 10, "server"),
        unknown_senders=unknown,
        attach_original=_choice(data, "attach_original", ("when-trimmed", "always", "never"),
                                "when-trimmed"),
        attachment_limits=_attachment_limits(_section(data, "attachments"),
                                             redmine.max_attachment_size),
        notify=notify,
        limits=load_limits(_section(data, "limits")),
        trust=load_trust_settings(data.get("trust")),
        unverified_senders=unverified,
        smtp_listen=listen.get("smtp"),
        lmtp_listen=listen.get("lmtp"),
        discord=_discord(data.get("discord"), [*sites, "triage"]),
        metrics_listen=listen.get("metrics"),
        redmine_down_alarm=_number(server, "redmine_down_alarm", 600.0, "server"),
        spool_stuck_alarm=_number(server, "spool_stuck_alarm", 3600.0, "server"),
        imap=_imap(data.get("imap"), {**sites, **({"triage": triage} if triage else {})},
                   base),
        watch=_watch(data),
        answers=_answers(data, notify, redmine),
    )


UNKNOWN_SENDER_POLICIES = ("reject", "accept", "create")


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


def _check_notice_sender(notify, config_sites: list[Site], redmine: RedmineSettings,
                         domains: tuple[str, ...]) -> None:
    """Notices come from an address nobody routes back to us: a reply or a bounce to a
    routed address would come back as mail on a ticket or a new one."""
    if notify is None:
        return
    from email.utils import parseaddr

    address = parseaddr(notify.from_address)[1].lower()
    local, _, domain = address.rpartition("@")
    routed = (domain in domains and TICKET_LOCAL.fullmatch(local)) or address in {
        s.address for s in config_sites} or address == redmine.notification_address
    if routed:
        raise ConfigError(f"notify.from: {address!r} is routed by this gateway (a ticket,"
                          " a site, or Redmine's notification address): use an address"
                          " nothing routes back here")


def _check_gateway_user(redmine: RedmineSettings, unknown: str, sites: list[Site]) -> None:
    # Accepting strangers' mail means someone must write it: without a gateway
    # user every such mail would be answered 250 and then refused by the worker.
    if redmine.gateway_user:
        return
    # "create" needs it too: a stranger whose address nothing proves gets no account
    # (anyone could claim any address), so the gateway's user writes their comment.
    where, policy = ("unknown_senders", unknown) if unknown != "reject" else next(
        ((f"sites.{s.name}.unknown_senders" if s.name != "triage" else "triage.unknown_senders",
          s.unknown_senders) for s in sites if s.unknown_senders != "reject"), (None, None))
    if where:
        raise ConfigError(f"{where}: {policy!r} needs redmine.gateway_user, the login that"
                          " writes for senders Redmine does not know"
                          f" (or set {env_name('redmine', 'gateway_user')})")


def _redmine(spec: Mapping[str, Any], required: bool) -> RedmineSettings:
    _known("redmine", spec, set(REDMINE_KEYS))
    for key in ("url", "api_key"):
        if required and not spec.get(key):
            raise ConfigError(f"redmine.{key}: missing (or set {env_name('redmine', key)})")
    statuses = spec.get("statuses") or {}
    if not isinstance(statuses, Mapping):
        raise ConfigError("redmine.statuses: expected a mapping of state to status name")
    timeout = _number(spec, "timeout", 10.0, "redmine")
    return RedmineSettings(
        url=str(spec.get("url", "")).rstrip("/"), api_key=str(spec.get("api_key", "")),
        timeout=timeout,
        gateway_user=spec.get("gateway_user"),
        notification_address=(spec.get("notification_address") or "").lower() or None,
        statuses=dict(statuses),
        reporter_field=spec.get("reporter_field") or None,
        participants_field=spec.get("participants_field") or None,
        account_notice=_flag(spec, "account_notice", False, "redmine"),
        text_formatting=_text_formatting(spec.get("text_formatting", "textile")),
        max_attachment_size=_int(spec, "max_attachment_size", REDMINE_MAX_ATTACHMENT_SIZE,
                                 "redmine"),
    )


def _text_formatting(value: Any) -> str:
    # An empty value in YAML is None: Redmine's "none" too.
    found = TEXT_FORMATTINGS.get("" if value is None else value)
    if found is None:
        raise ConfigError(f"redmine.text_formatting: {value!r} is not one of textile, markdown,"
                          " common_mark, none")
    return found


def _flag(data: Mapping[str, Any], key: str, default: bool, where: str) -> bool:
    value = data.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{where}.{key}: expected true or false, got {value!r}")
    return value


def _site(name: str, spec: Any, domain: str, workflow: Workflow, unknown: str,
          unverified: str) -> Site:
    where = "triage" if name == "triage" else f"sites.{name}"
    spec = spec or {}
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{where}: expected a mapping")
    fields = spec.get("fields") or {}
    if not isinstance(fields, Mapping):
        raise ConfigError(f"{where}.fields: expected a mapping")
    return Site(
        name=name,
        address=str(spec.get("address") or f"{name}@{domain}").lower(),
        project=str(spec.get("project") or name),
        tracker=spec.get("tracker"),
        fields=dict(fields),
        workflow=_workflow(f"{where}.workflow", spec.get("workflow"), workflow),
        unknown_senders=_choice(spec, "unknown_senders", UNKNOWN_SENDER_POLICIES, unknown, where),
        unverified_senders=_choice(spec, "unverified_senders", ("comment", "reject"),
                                   unverified, where),
    )


def _workflow(where: str, spec: Any, inherited: Workflow | None) -> Workflow:
    """The default workflow, with the ``defaults`` cells this config overrides."""
    if not spec:
        return inherited or Workflow(load_default_table())
    if not isinstance(spec, Mapping) or set(spec) - {"defaults"}:
        raise ConfigError(f"{where}: only 'defaults' may be overridden")
    base = inherited.table if inherited else load_default_table()
    try:
        return Workflow(base.with_defaults(spec.get("defaults") or {}))
    except WorkflowError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _list(data: Mapping[str, Any], key: str) -> list[str]:
    value = data.get(key) or []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{key}: expected a list of strings")
    return value


def _choice(data: Mapping[str, Any], key: str, allowed: tuple[str, ...], default: str,
            where: str = "") -> str:
    value = data.get(key, default)
    if value not in allowed:
        prefix = f"{where}." if where else ""
        raise ConfigError(f"{prefix}{key}: {value!r} is not one of {', '.join(allowed)}")
    return value


def _int(data: Mapping[str, Any], key: str, default: int, where: str) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{where}.{key}: expected a positive integer, got {value!r}")
    return value


# Discord and notices are loaded only when configured: their modules pull in
# requests and smtplib, which the pipe transport's fast path does without.

def _discord(section: Any, sites: list[str]):
    if section is None:
        return None
    from mailgate.outbound.fanout import load_discord_settings

    return load_discord_settings(section, sites=sites)


def _notify(data: Mapping[str, Any], hostname: str):
    if "notify" not in data:
        return None
    from mailgate.outbound.notify import load_notify_settings

    return load_notify_settings(_section(data, "notify"), hostname=hostname)


def _imap(section: Any, sites: Mapping[str, Site], base: Path):
    if section is None:
        return None
    from mailgate.intake.imap_settings import load_imap_settings

    return load_imap_settings(section, sites=sites, base=base)


def _watch(data: Mapping[str, Any]) -> WatchSettings | None:
    if "watch" not in data:
        return None
    spec = _section(data, "watch")
    _known("watch", spec, {"poll_interval"})
    return WatchSettings(poll_interval=_number(spec, "poll_interval", 60.0, "watch"))


def _answers(data: Mapping[str, Any], notify: Any,
             redmine: RedmineSettings) -> AnswerSettings | None:
    if "answers" not in data:
        return None
    spec = _section(data, "answers")
    _known("answers", spec, {"max_per_hour"})
    # Answers are found by the watcher and sent through the notices' relay.
    if "watch" not in data or notify is None:
        raise ConfigError("answers: needs a watch: section and an enabled notify: section"
                          " (answers are found by the Redmine watcher and sent through the"
                          " notices' relay)")
    if not redmine.reporter_field:
        raise ConfigError("answers: needs redmine.reporter_field, the issue field that"
                          " records whom to answer (or set"
                          f" {env_name('redmine', 'reporter_field')})")
    return AnswerSettings(max_per_hour=_int(spec, "max_per_hour", 10, "answers"))


def _known(where: str, spec: Mapping[str, Any], keys: set[str]) -> None:
    unknown = sorted(str(k) for k in spec if k not in keys)
    if unknown:
        raise unknown_key(where, unknown[0], keys)


def _domains(data: Mapping[str, Any]) -> tuple[str, ...]:
    value = data.get("domains")
    # A plain string would be accepted letter by letter by anything that iterates it.
    if not isinstance(value, list) or not value or not all(
            isinstance(d, str) and "." in d and "@" not in d for d in value):
        raise ConfigError("domains: expected a list of mail domains, like [example.org]")
    return tuple(d.strip().lower() for d in value)


def _attachment_limits(spec: Mapping[str, Any], redmine_max_size: int):
    from handlers.attachments import AttachmentLimits

    defaults = AttachmentLimits()
    _known("attachments", spec, {"max_size", "max_count", "blocked_extensions", "blocked_types",
                                 "max_note_chars"})
    extensions = spec.get("blocked_extensions", defaults.blocked_extensions)
    types = spec.get("blocked_types", defaults.blocked_types)
    for key, value in (("blocked_extensions", extensions), ("blocked_types", types)):
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"attachments.{key}: expected a list of strings")
    return AttachmentLimits(
        max_size=_int(spec, "max_size", defaults.max_size, "attachments"),
        max_count=_int(spec, "max_count", defaults.max_count, "attachments"),
        blocked_extensions=tuple(e.lower() if e.startswith(".") else f".{e.lower()}"
                                 for e in extensions),
        blocked_types=tuple(t.lower() for t in types),
        max_note_chars=_int(spec, "max_note_chars", defaults.max_note_chars, "attachments"),
        redmine_max_size=redmine_max_size)


def _number(data: Mapping[str, Any], key: str, default: float, where: str) -> float:
    value = data.get(key, default)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}.{key}: expected a number of seconds, got {value!r}") from None
    if not 0 < number < float("inf"):     # NaN and infinity too: nobody waits forever
        raise ConfigError(f"{where}.{key}: must be positive, got {value!r}")
    return number
