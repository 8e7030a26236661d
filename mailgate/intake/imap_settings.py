"""The ``imap:`` section of the config, checked: which mailboxes to take mail from, how.

::

    imap:
      login_alarm: 900            # /healthz fails after this long without a login
      poll_interval: 300          # any mailbox key here is every mailbox's default
      mailboxes:
        - name: support
          host: imap.example.org
          tls: implicit           # implicit (993), starttls (143), none (loopback only)
          user: support@example.org
          password_file: /etc/mailgate/imap-password

``load_imap_settings`` refuses unknown keys and bad values with a ``ConfigError``
naming the key; it never shows a password.  The password (or the OAuth2 token)
is read when the mailbox is logged into, so a rotated one needs no restart.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from mailgate.errors import ConfigError, unknown_key

TLS_MODES = ("implicit", "starttls", "none")
AFTER = ("move", "seen")
DEFAULT_PORTS = {"implicit": 993, "starttls": 143, "none": 143}
#: The order a mailbox trusts its header fields for the recipient: the delivering
#: MTA's Delivered-To first (a hosted mailbox's X-Original-To may be the provider's).
DEFAULT_RECIPIENT_HEADERS = ("delivered-to", "x-original-to", "to", "cc")
LOOPBACK = ("127.0.0.1", "::1", "localhost")


@dataclass(frozen=True)
class MailboxSettings:
    name: str
    host: str
    user: str
    port: int = 993
    tls: str = "implicit"
    #: Certificates are verified (against the system's CAs, or this file's).
    ca_file: str | None = None
    verify: bool = True
    password_env: str | None = None
    password_file: Path | None = None
    #: XOAUTH2: a command printing an access token (run at each login, no shell).
    oauth2_token_command: tuple[str, ...] | None = None
    folder: str = "INBOX"
    processed_folder: str = "processed"
    rejected_folder: str = "rejected"
    #: After the spool has the mail: "move" it to processed_folder, or flag it "seen".
    after: str = "move"
    #: A site name: the mailbox's mail opens tickets there (a ticket<ID>@ address
    #: in its header fields still makes it a reply to that ticket).
    site: str | None = None
    recipient_headers: tuple[str, ...] = DEFAULT_RECIPIENT_HEADERS
    #: IMAP IDLE in ``serve`` when the server offers it; else a pass every poll_interval.
    idle: bool = True
    poll_interval: float = 300.0
    #: Mails per UID batch (one FETCH of sizes, one MOVE of the batch).
    batch_size: int = 50
    #: Seconds before a silent server counts as lost.
    timeout: float = 60.0
    #: The mail host that delivers into this mailbox is the operator's MTA: its
    #: Authentication-Results are believed as our MTA's are (trust.trusted_authserv_ids).
    trust_mail_host: bool = True

    @property
    def source(self) -> str:
        """The mailbox's identity in the receipts: the same account and folder is the
        same mailbox, whatever it is named or however it is reached."""
        return f"{self.user.lower()}@{self.host.lower()}/{self.folder}"

    @property
    def via(self) -> str:
        """How its mail reached us, as the spool keeps it (mailgate.trust reads it)."""
        return f"{'imap' if self.trust_mail_host else 'mailbox'} {self.name}"

    def password(self) -> str:
        if self.password_env:
            value = os.environ.get(self.password_env)
            if not value:
                raise ConfigError(f"imap mailbox {self.name}: ${self.password_env} is not set")
            return value
        try:
            return self.password_file.read_text("utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ConfigError(f"imap mailbox {self.name}: cannot read the password file"
                              f" {self.password_file}: {exc.strerror}") from None


@dataclass(frozen=True)
class ImapSettings:
    mailboxes: tuple[MailboxSettings, ...] = field(default_factory=tuple)
    #: /healthz fails when a mailbox has had no successful login for this long.
    login_alarm: float = 900.0


_SECTION_KEYS = {"mailboxes", "login_alarm"}
_MAILBOX_KEYS = {"name", "host", "port", "tls", "ca_file", "verify", "user", "password_env",
                 "password_file", "oauth2_token_command", "folder", "processed_folder",
                 "rejected_folder", "after", "site", "recipient_headers", "idle",
                 "poll_interval", "batch_size", "timeout", "trust_mail_host"}


def load_imap_settings(section: Any, *, sites: Mapping[str, Any], base: Path
                       ) -> ImapSettings | None:
    """The ``imap:`` section, checked; None when it is absent.  ``sites``: the
    configured sites by name (a mailbox's ``site`` must be one); ``base``: the
    config file's directory (relative file names are read from there)."""
    if section is None:
        return None
    if not isinstance(section, Mapping):
        raise ConfigError("imap: expected a mapping (with a list of mailboxes)")
    _only(section, _SECTION_KEYS | _MAILBOX_KEYS - {"name"}, "imap")
    boxes = section.get("mailboxes")
    if not isinstance(boxes, list) or not boxes:
        raise ConfigError("imap.mailboxes: expected a list of at least one mailbox")
    defaults = {k: v for k, v in section.items() if k in _MAILBOX_KEYS}
    mailboxes = tuple(_mailbox(n, {**defaults, **_mapping(spec, f"imap.mailboxes[{n}]")},
                               sites, base) for n, spec in enumerate(boxes))
    names = [box.name for box in mailboxes]
    if len(set(names)) != len(names):
        raise ConfigError(f"imap.mailboxes: two mailboxes are named the same: {names}")
    return ImapSettings(mailboxes, login_alarm=_positive(section, "login_alarm", 900.0, "imap"))


def _mailbox(index: int, spec: Mapping[str, Any], sites: Mapping[str, Any],
             base: Path) -> MailboxSettings:
    where = f"imap.mailboxes[{index}]"
    _only(spec, _MAILBOX_KEYS, where)
    host, user = _text(spec, "host", where), _text(spec, "user", where)
    name = str(spec.get("name") or f"{user}@{host}")
    where = f"imap.mailboxes.{name}"
    tls = spec.get("tls", "implicit")
    if tls not in TLS_MODES:
        raise ConfigError(f"{where}.tls: {tls!r} is not one of {', '.join(TLS_MODES)}")
    if tls == "none" and host.lower() not in LOOPBACK:
        # A password in clear text crosses the network only to this host itself.
        raise ConfigError(f"{where}.tls: 'none' is only allowed for {', '.join(LOOPBACK)}")
    after = spec.get("after", "move")
    if after not in AFTER:
        raise ConfigError(f"{where}.after: {after!r} is not one of {', '.join(AFTER)}")
    site = spec.get("site")
    if site is not None and str(site) not in sites:
        raise ConfigError(f"{where}.site: no such site {site!r}"
                          f" (sites: {', '.join(sorted(sites)) or 'none'})")
    return MailboxSettings(
        name=name, host=host, user=user,
        port=int(_positive(spec, "port", DEFAULT_PORTS[tls], where, whole=True)),
        tls=tls, ca_file=_file(spec, "ca_file", base, where), verify=_bool(spec, "verify",
                                                                          True, where),
        **_secret(spec, base, where),
        folder=str(spec.get("folder") or "INBOX"),
        processed_folder=str(spec.get("processed_folder") or "processed"),
        rejected_folder=str(spec.get("rejected_folder") or "rejected"),
        after=after, site=None if site is None else str(site),
        recipient_headers=_headers(spec, where),
        idle=_bool(spec, "idle", True, where),
        poll_interval=_positive(spec, "poll_interval", 300.0, where),
        batch_size=int(_positive(spec, "batch_size", 50, where, whole=True)),
        timeout=_positive(spec, "timeout", 60.0, where),
        trust_mail_host=_bool(spec, "trust_mail_host", True, where),
    )


def _secret(spec: Mapping[str, Any], base: Path, where: str) -> dict[str, Any]:
    """Exactly one of password_env, password_file, oauth2_token_command."""
    given = [k for k in ("password_env", "password_file", "oauth2_token_command")
             if spec.get(k)]
    if len(given) != 1:
        raise ConfigError(f"{where}: give exactly one of password_env, password_file,"
                          f" oauth2_token_command (got {', '.join(given) or 'none'})")
    if given == ["password_env"]:
        return {"password_env": str(spec["password_env"])}
    if given == ["password_file"]:
        return {"password_file": Path(_file(spec, "password_file", base, where))}
    command = spec["oauth2_token_command"]
    words = shlex.split(command) if isinstance(command, str) else command
    if not isinstance(words, list) or not words or not all(isinstance(w, str) for w in words):
        raise ConfigError(f"{where}.oauth2_token_command: expected a command line")
    return {"oauth2_token_command": tuple(words)}


def _headers(spec: Mapping[str, Any], where: str) -> tuple[str, ...]:
    value = spec.get("recipient_headers", list(DEFAULT_RECIPIENT_HEADERS))
    if not isinstance(value, list) or not value or not all(
            isinstance(v, str) and v.strip() for v in value):
        raise ConfigError(f"{where}.recipient_headers: expected a list of header field names")
    return tuple(v.strip().lower() for v in value)


def _file(spec: Mapping[str, Any], key: str, base: Path, where: str) -> str | None:
    value = spec.get(key)
    if not value:
        return None
    path = base / str(value)
    if not path.is_file():
        raise ConfigError(f"{where}.{key}: no such file: {path}")
    return str(path)


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected a mapping")
    return value


def _text(spec: Mapping[str, Any], key: str, where: str) -> str:
    value = spec.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}.{key}: missing")
    return value.strip()


def _only(spec: Mapping, allowed: set[str], where: str) -> None:
    unknown = sorted(str(k) for k in spec if k not in allowed)
    if unknown:
        raise unknown_key(where, unknown[0], allowed)


def _bool(spec: Mapping, key: str, default: bool, where: str) -> bool:
    value = spec.get(key, default)
    words = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
    if isinstance(value, str) and value.lower() in words:
        return words[value.lower()]
    if not isinstance(value, bool):
        raise ConfigError(f"{where}.{key}: expected true or false, got {value!r}")
    return value


def _positive(spec: Mapping, key: str, default: float, where: str, *,
              whole: bool = False) -> float:
    value = spec.get(key, default)
    try:
        number = float(value) if not isinstance(value, bool) else None
    except (TypeError, ValueError):
        number = None
    if number is None or number <= 0 or (whole and number != int(number)):
        raise ConfigError(f"{where}.{key}: expected a {'whole ' if whole else ''}number > 0,"
                          f" got {value!r}")
    return number
