"""mailgate's configuration: one YAML file, read once, passed explicitly.

Every key is declared once, in ``mailgate.settings.schema``: its type, default,
constraints, meaning and environment variable (``MAILGATE_<SECTION>_<KEY>``, so
secrets stay out of the file).  A key the schema does not know, or a wrong value,
is a ``ConfigError`` naming it by its full path.  Here the file is read and made
into the ``Config`` the rest of the code uses; what needs more than one key is
checked in ``mailgate.config_checks``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import msgspec
import yaml

from workflow import Workflow, WorkflowError, load_default_table

from mailgate.config_checks import check_config, parse_listen
from mailgate.errors import ConfigError
from mailgate.intake.ratelimit import Limits
from mailgate.settings.kinds import maybe_text, without_secrets
from mailgate.settings.read import read_file
from mailgate.settings.schema import (AnswerSettings, ConfigFile, RedmineSettings, SiteSpec,
                                      TrustSettings, WatchSettings, WorkflowSpec)
from mailgate.settings.walk import variable
from mailgate.store.database import Location

__all__ = ["AnswerSettings", "Config", "RedmineSettings", "Site", "WatchSettings",
           "load_config", "parse_listen"]

#: libyaml's parser where PyYAML has it: the same YAML, about 8x faster to read
#: (the pipe reads the config and the workflow table once per mail).
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class Site(msgspec.Struct, frozen=True):
    name: str
    address: str
    project: str
    #: Mail from an address Redmine does not know: "reject", "accept" (the gateway's
    #: user writes it) or "create" (a Redmine account is made for the sender).
    unknown_senders: str
    #: Mail whose sender is not verified (DKIM): "comment" or "reject".
    unverified_senders: str
    tracker: str | None = None
    #: Extra issue fields for new tickets (priority_id, custom_fields, ...).
    fields: Mapping[str, Any] = {}
    workflow: Workflow | None = None


#: ``spool.url``: its password makes it a secret, as the schema says (kept out of repr).
_StoreURL = maybe_text("the store's PostgreSQL URL", secret=True)


class Config(msgspec.Struct, frozen=True):
    """What the code reads, built from the file by ``load_config`` (the defaults and
    the meaning of each key: mailgate.settings.schema, or README's table).  A Struct,
    not a dataclass: a dataclass of 40 fields took 1.6 ms to define, once per mail
    in the pipe."""

    redmine: RedmineSettings
    domains: tuple[str, ...]
    sites: Mapping[str, Site]
    triage: Site | None
    admins: frozenset[str]
    workflow: Workflow
    spool_path: Path
    spool_url: _StoreURL
    lease_seconds: float
    keep_done_days: float
    spool_workers: int
    retry_first_delay: float
    retry_max_delay: float
    max_age: float
    expire_after_days: float
    sweep_interval: float
    remind_after_hours: float | None
    hostname: str
    max_message_size: int
    max_recipients: int
    max_failed_recipients: int
    unknown_senders: str
    unverified_senders: str
    attach_original: str
    attachment_limits: Any
    limits: Limits
    trust: TrustSettings
    smtp_listen: str | None
    lmtp_listen: str | None
    metrics_listen: str | None
    redmine_down_alarm: float
    spool_stuck_alarm: float
    #: Notices to senders (mailgate.outbound.notify), or None.
    notify: Any
    #: Discord fan-out (mailgate.outbound.fanout), or None.
    discord: Any
    #: IMAP mailboxes to take mail from (mailgate.intake.imap_settings), or None.
    imap: Any
    #: The Redmine watcher, or None (not run).
    watch: WatchSettings | None
    #: Answers mailed to reporters (needs ``watch`` and ``notify``), or None.
    answers: AnswerSettings | None

    def __repr__(self) -> str:
        return without_secrets(self)

    @property
    def store(self) -> Location:
        """Where every part of the store is: ``spool.url`` when set, else ``spool.path``."""
        return Location.configured(self.spool_path, self.spool_url)

    @property
    def every_site(self) -> list[Site]:
        return [*self.sites.values(), *([self.triage] if self.triage else [])]

    def site_for_address(self, address: str) -> Site | None:
        wanted = address.lower()
        return next((s for s in self.every_site if s.address.lower() == wanted), None)

    def site_for_project(self, project: str | None) -> Site | None:
        return next((s for s in self.every_site if s.project == project), None)

    def workflow_for(self, site: Site | None) -> Workflow:
        return site.workflow if site and site.workflow else self.workflow


def env_name(section: str | None, key: str) -> str:
    """The variable of ``section.key`` (``None``: a top-level key)."""
    return variable((section, key) if section else (key,))


def load_config(path: str | os.PathLike | None, environ: Mapping[str, str] | None = None,
                *, need_redmine: bool = True) -> Config:
    """Read ``path`` (or nothing: environment only) and build a checked Config.

    ``need_redmine=False`` is for commands that never contact Redmine
    (``workflow show``, ``explain`` with the ticket given), so they run without secrets.
    """
    environ = os.environ if environ is None else environ
    data = _read_yaml(path) if path is not None else {}
    file = read_file(data, environ, ConfigFile)
    base = Path(path).resolve().parent if path else Path.cwd()
    config = _build(file, base)
    check_config(config, need_redmine)
    return config


def _read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    try:
        data = yaml.load(Path(path).read_text("utf-8"), Loader=YAML_LOADER) or {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def _build(file: ConfigFile, base: Path) -> Config:
    domains = tuple(d.strip().lower() for d in file.domains)
    workflow = _workflow("workflow", file.workflow, None)
    sites = {name: _site(name, spec, file, domains[0], workflow)
             for name, spec in file.sites.items()}
    triage = _site("triage", file.triage, file, domains[0], workflow) if file.triage else None
    server, spool, sweep, listen = file.server, file.spool, file.sweep, file.listen
    admins = [file.admins] if isinstance(file.admins, str) else file.admins
    return Config(
        redmine=file.redmine, domains=domains, sites=sites, triage=triage,
        admins=frozenset(a.lower() for a in admins), workflow=workflow,
        spool_path=base / spool.path, spool_url=spool.url or None,
        lease_seconds=spool.lease_seconds, keep_done_days=spool.keep_done_days,
        spool_workers=spool.workers, retry_first_delay=spool.retry_first_delay,
        retry_max_delay=spool.retry_max_delay, max_age=spool.max_age,
        expire_after_days=sweep.expire_after_days, sweep_interval=sweep.interval,
        remind_after_hours=sweep.remind_after_hours,
        hostname=server.hostname, max_message_size=server.max_message_size,
        max_recipients=server.max_recipients,
        max_failed_recipients=server.max_failed_recipients,
        unknown_senders=file.unknown_senders, unverified_senders=file.unverified_senders,
        attach_original=file.attach_original,
        attachment_limits=_attachment_limits(file),
        limits=file.limits, trust=file.trust,
        smtp_listen=listen.smtp, lmtp_listen=listen.lmtp, metrics_listen=listen.metrics,
        redmine_down_alarm=server.redmine_down_alarm,
        spool_stuck_alarm=server.spool_stuck_alarm,
        notify=_notify(file), discord=_discord(file, [*sites, "triage"]),
        imap=_imap(file, {**sites, **({"triage": triage} if triage else {})}, base),
        watch=file.watch, answers=file.answers,
    )


def _site(name: str, spec: SiteSpec, file: ConfigFile, domain: str,
          workflow: Workflow) -> Site:
    where = "triage" if name == "triage" else f"sites.{name}"
    return Site(
        name=name,
        address=(spec.address or f"{name}@{domain}").lower(),
        project=spec.project or name,
        tracker=spec.tracker,
        fields=dict(spec.fields),
        workflow=_workflow(f"{where}.workflow", spec.workflow, workflow),
        unknown_senders=spec.unknown_senders or file.unknown_senders,
        unverified_senders=spec.unverified_senders or file.unverified_senders,
    )


def _workflow(where: str, spec: WorkflowSpec | None, inherited: Workflow | None) -> Workflow:
    """The default workflow, with the ``defaults`` cells this config overrides."""
    if spec is None or not spec.defaults:
        return inherited or Workflow(load_default_table())
    base = inherited.table if inherited else load_default_table()
    try:
        return Workflow(base.with_defaults(spec.defaults))
    except WorkflowError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _attachment_limits(file: ConfigFile):
    from handlers.attachments import AttachmentLimits

    return AttachmentLimits(**{name: getattr(file.attachments, name)
                               for name in file.attachments.__struct_fields__},
                            redmine_max_size=file.redmine.max_attachment_size)


# Discord, notices and IMAP are loaded only when configured: their modules pull in
# requests and smtplib, which the pipe transport's fast path does without.

def _discord(file: ConfigFile, sites: list[str]):
    if file.discord is None:
        return None
    from mailgate.outbound.fanout.settings import discord_settings

    return discord_settings(file.discord, sites=sites)


def _notify(file: ConfigFile):
    if file.notify is None:
        return None
    from mailgate.outbound.notify import notify_settings

    return notify_settings(file.notify, hostname=file.server.hostname)


def _imap(file: ConfigFile, sites: Mapping[str, Site], base: Path):
    if file.imap is None:
        return None
    from mailgate.intake.imap_settings import imap_settings

    return imap_settings(file.imap, sites=sites, base=base)
