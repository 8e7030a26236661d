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

The schema (``Imap`` and ``Mailbox`` in mailgate.settings.schema) refuses unknown
keys and bad values; ``imap_settings`` checks what needs more than one key, with a
``ConfigError`` naming the key; it never shows a password.  The password (or the
OAuth2 token) is read when the mailbox is logged into, so a rotated one needs no
restart.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from mailgate.errors import ConfigError
from mailgate.settings.schema import Mailbox

DEFAULT_PORTS = {"implicit": 993, "starttls": 143, "none": 143}
LOOPBACK = ("127.0.0.1", "::1", "localhost")


@dataclass(frozen=True)
class MailboxSettings:
    """One mailbox as the intake uses it (its keys, their defaults and meaning:
    ``Mailbox`` in mailgate.settings.schema)."""

    name: str
    host: str
    user: str
    port: int
    tls: str
    #: Certificates are verified (against the system's CAs, or this file's).
    ca_file: str | None
    verify: bool
    password_env: str | None
    password_file: Path | None
    #: XOAUTH2: a command printing an access token (run at each login, no shell).
    oauth2_token_command: tuple[str, ...] | None
    folder: str
    processed_folder: str
    rejected_folder: str
    #: After the spool has the mail: "move" it to processed_folder, or flag it "seen".
    after: str
    #: A site name: the mailbox's mail opens tickets there (a ticket<ID>@ address
    #: in its header fields still makes it a reply to that ticket).
    site: str | None
    recipient_headers: tuple[str, ...]
    #: IMAP IDLE in ``serve`` when the server offers it; else a pass every poll_interval.
    idle: bool
    poll_interval: float
    #: Mails per UID batch (one FETCH of sizes, one MOVE of the batch).
    batch_size: int
    #: Seconds before a silent server counts as lost.
    timeout: float
    #: The mail host that delivers into this mailbox is the operator's MTA: its
    #: Authentication-Results are believed as our MTA's are (trust.trusted_authserv_ids).
    trust_mail_host: bool

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
    mailboxes: tuple[MailboxSettings, ...]
    #: /healthz fails when a mailbox has had no successful login for this long.
    login_alarm: float


def imap_settings(spec: Any, *, sites: Mapping[str, Any], base: Path) -> ImapSettings:
    """The ``imap:`` section (``Imap`` of the schema, whose mailboxes already have the
    section's defaults) as the intake uses it.  ``sites``: the configured sites by
    name (a mailbox's ``site`` must be one); ``base``: the config file's directory
    (relative file names are read from there)."""
    mailboxes = tuple(_mailbox(n, box, sites, base) for n, box in enumerate(spec.mailboxes))
    names = [box.name for box in mailboxes]
    if len(set(names)) != len(names):
        raise ConfigError(f"imap.mailboxes: two mailboxes are named the same: {names}")
    return ImapSettings(mailboxes, login_alarm=spec.login_alarm)


def _mailbox(index: int, box: Mailbox, sites: Mapping[str, Any],
             base: Path) -> MailboxSettings:
    name = box.name or f"{box.user}@{box.host}"
    where = f"imap.mailboxes.{name}"
    if box.tls == "none" and box.host.lower() not in LOOPBACK:
        # A password in clear text crosses the network only to this host itself.
        raise ConfigError(f"{where}.tls: 'none' is only allowed for {', '.join(LOOPBACK)}")
    if box.site is not None and box.site not in sites:
        raise ConfigError(f"{where}.site: no such site {box.site!r}"
                          f" (sites: {', '.join(sorted(sites)) or 'none'})")
    return MailboxSettings(
        name=name, host=box.host.strip(), user=box.user.strip(),
        port=box.port or DEFAULT_PORTS[box.tls], tls=box.tls,
        ca_file=_file(box.ca_file, base, f"{where}.ca_file"), verify=box.verify,
        **_secret(box, base, where),
        folder=box.folder, processed_folder=box.processed_folder,
        rejected_folder=box.rejected_folder, after=box.after, site=box.site,
        recipient_headers=box.recipient_headers, idle=box.idle,
        poll_interval=box.poll_interval, batch_size=box.batch_size, timeout=box.timeout,
        trust_mail_host=box.trust_mail_host,
    )


def _secret(box: Mailbox, base: Path, where: str) -> dict[str, Any]:
    """Exactly one of password_env, password_file, oauth2_token_command."""
    secrets = {"password_env": None, "password_file": None, "oauth2_token_command": None}
    given = [k for k in secrets if getattr(box, k)]
    if len(given) != 1:
        raise ConfigError(f"{where}: give exactly one of password_env, password_file,"
                          f" oauth2_token_command (got {', '.join(given) or 'none'})")
    if box.password_env:
        return {**secrets, "password_env": box.password_env}
    if box.password_file:
        return {**secrets, "password_file": Path(_file(box.password_file, base,
                                                       f"{where}.password_file"))}
    command = box.oauth2_token_command
    words = shlex.split(command) if isinstance(command, str) else command
    if not words:
        raise ConfigError(f"{where}.oauth2_token_command: expected a command line")
    return {**secrets, "oauth2_token_command": tuple(words)}


def _file(value: str | None, base: Path, where: str) -> str | None:
    if not value:
        return None
    path = base / value
    if not path.is_file():
        raise ConfigError(f"{where}: no such file: {path}")
    return str(path)
