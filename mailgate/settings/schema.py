"""Every key of the configuration file, declared once: its type, default, constraints
and meaning.  A section's environment variables, its error messages and the README's
table are all read from here (``mailgate.settings``).

Some sections are used as they are (``RedmineSettings``, ``TrustSettings``,
``Limits``, ``WatchSettings``, ``AnswerSettings``); the others are turned into what
their code uses by their loaders (mailgate.config, mailgate.outbound.notify,
mailgate.outbound.fanout.settings, mailgate.intake.imap_settings), which add only
what needs more than one key: cross-checks, file names, the derived defaults.
A ``__post_init__`` here only normalises (case, a single value for a list).
"""

import hashlib
from typing import Annotated, Any, Literal, Optional, Union

import msgspec
from msgspec import Meta, field

from mailgate.settings.kinds import (Section, described, flag, maybe_text, seconds, text,
                                     whole)

UnknownSenders = Literal["reject", "accept", "create"]
UnverifiedSenders = Literal["comment", "reject"]
#: Redmine's default attachment_max_size (5120 kB).
REDMINE_MAX_ATTACHMENT_SIZE = 5120 * 1024
DISCORD_API = "https://discord.com/api/v10"
BLOCKED_EXTENSIONS = (".exe", ".com", ".bat", ".cmd", ".scr", ".pif", ".vbs", ".vbe", ".js",
                      ".jse", ".wsf", ".wsh", ".msi", ".msp", ".hta", ".cpl", ".jar", ".ps1",
                      ".lnk", ".reg")
#: The order a mailbox trusts its header fields for the recipient: the delivering
#: MTA's Delivered-To first (a hosted mailbox's X-Original-To may be the provider's).
RECIPIENT_HEADERS = ("delivered-to", "x-original-to", "to", "cc")
DAY = 24 * 3600.0
#: A mail domain: a dot, no @ (a plain string for the list would be read letter by letter).
Domain = Annotated[str, Meta(pattern=r"^[^@\s]+\.[^@\s]+$")]
#: A name in a list (an authserv-id, an address): not blank.
Name = Annotated[str, Meta(pattern=r"\S")]
NAMES = "a name or a list of names, none blank"


def _set(struct: Any, name: str, value: Any) -> None:
    # The documented way to normalise a frozen Struct in __post_init__.
    msgspec.structs.force_setattr(struct, name, value)


def _names(value: Any) -> frozenset[str]:
    """One name or a list of them, stripped."""
    return frozenset(name.strip() for name in ([value] if isinstance(value, str) else value))


# -- Redmine ----------------------------------------------------------------------------

class RedmineSettings(Section):
    url: text("Redmine's address", default="required") = ""
    api_key: text("an admin's API key: the gateway writes as the sender", secret=True,
                  default="required") = ""
    timeout: seconds("for one request to Redmine") = 10.0
    gateway_user: maybe_text("the Redmine login that writes for senders Redmine does not"
                             " know (unknown_senders: accept/create) and for unmapped"
                             " Discord users") = None
    notification_address: maybe_text("Redmine's own From: address: replies to its"
                                      " notifications are routed") = None
    statuses: described(dict[str, str], "workflow state -> Redmine status name, where"
                        " they differ (default: the states' names)") = {}
    reporter_field: maybe_text("the issue custom field that records the address a ticket"
                               " opened by the gateway user is for; that address's later"
                               " mail has the owner's role (docs/reporters.md)") = None
    participants_field: maybe_text("the issue custom field for the first mail's Cc:"
                                   " addresses, one per line") = None
    account_notice: flag("`unknown_senders: create`: Redmine mails the new account its"
                         " login") = False
    text_formatting: described(
        Optional[Literal["textile", "markdown", "common_mark", "none", ""]],
        "Redmine's text formatting, which its API does not tell: mail text is escaped"
        " for it, so that it shows as written (docs/trust.md)") = "textile"
    max_attachment_size: whole("Redmine's largest upload (its Maximum attachment size):"
                               " a file over it is left out and named in the note",
                               unit="bytes") = REDMINE_MAX_ATTACHMENT_SIZE

    def __post_init__(self) -> None:
        _set(self, "url", self.url.rstrip("/"))
        _set(self, "notification_address", (self.notification_address or "").lower() or None)
        for name in ("reporter_field", "participants_field", "gateway_user"):
            _set(self, name, getattr(self, name) or None)
        # Redmine's own name for "none" is "" (an empty YAML value is None).
        _set(self, "text_formatting", "" if self.text_formatting in (None, "none")
             else self.text_formatting)

    @property
    def marker_secret(self) -> bytes:
        """The key of the idempotency markers' MAC (mailgate.mail.idempotency.marker).

        Derived from the API key: a secret every gateway host of one Redmine already
        shares, and whoever has it can write anything in Redmine anyway.  A new API
        key makes new markers: only a mail in flight while it changes could be
        posted twice."""
        return hashlib.sha256(b"mailgate idempotency marker\0" + self.api_key.encode()).digest()


# -- sites ------------------------------------------------------------------------------

class WorkflowSpec(Section):
    defaults: described(dict[str, Any], "cells of the default-action table to override:"
                        " role -> state -> action (`mailgate workflow show`)") = {}


class SiteSpec(Section):
    address: maybe_text("the site's address", default="`<name>@` the first domain") = None
    project: maybe_text("the Redmine project its new tickets go to",
                        default="the site's name") = None
    tracker: maybe_text("the tracker of its new tickets (default: the project's first)") = None
    fields: described(dict[str, Any], "extra issue fields of new tickets (priority_id,"
                      " custom_fields, ...)") = {}
    workflow: described(Optional[WorkflowSpec], "this site's workflow overrides",
                        default="the top-level workflow") = None
    unknown_senders: described(Optional[UnknownSenders], "this site's own policy",
                               default="the top-level one") = None
    unverified_senders: described(Optional[UnverifiedSenders], "this site's own policy",
                                  default="the top-level one") = None


# -- the SMTP/LMTP server, the spool, the sweep ------------------------------------------

class Server(Section):
    hostname: text("our name: in Received:, the SMTP greeting and notices' X-Loop") = \
        "mailgate.localhost"
    max_message_size: whole("the largest mail taken (SMTP SIZE; 552 above it)",
                            unit="bytes") = 25 * 1024 * 1024
    max_recipients: whole("RCPTs in one SMTP transaction") = 50
    max_failed_recipients: whole("refused RCPTs one SMTP/LMTP session may have before it"
                                 " is closed (421)") = 10
    redmine_down_alarm: seconds("/healthz fails when Redmine has been unreachable this"
                                " long") = 600.0
    spool_stuck_alarm: seconds("/healthz fails when the oldest waiting mail is this old") \
        = 3600.0


class Listen(Section):
    smtp: maybe_text("where `serve` takes SMTP, HOST:PORT (or `--smtp`)") = None
    lmtp: maybe_text("where `serve` takes LMTP, HOST:PORT (or `--lmtp`)") = None
    metrics: maybe_text("where `serve` offers /metrics and /healthz (or `--metrics`)") = None


class Spool(Section):
    path: text("the durable spool and state store (SQLite), relative to the config"
               " file") = "var/spool.db"
    url: maybe_text("a PostgreSQL URL instead, for several gateway hosts sharing one spool",
                    secret=True) = None
    lease_seconds: seconds("a claim's lease, renewed while the mail is worked on: how soon"
                           " another host takes up the mail of a host that died") = 60.0
    keep_done_days: seconds("done mail, sent posts and notices are deleted after this"
                            " long; dead letters are kept", unit="days") = 30.0
    workers: whole("threads applying spooled mail in `serve`; each ticket's mail stays in"
                   " arrival order") = 2
    retry_first_delay: seconds("the first wait after a temporary failure, doubled at each"
                               " one") = 30.0
    retry_max_delay: seconds("the longest wait between two tries") = 3600.0
    max_age: seconds("give a mail up (dead-letter it) after a temporary failure this"
                     " long") = 5 * DAY


class Sweep(Section):
    expire_after_days: seconds("open or needs-info tickets with no activity this long"
                               " expire (Launchpad's rule)", unit="days") = 15.0
    interval: seconds("how often `serve` runs the sweep") = 3600.0
    remind_after_hours: described(Optional[seconds("", unit="hours")],
                                  "remind Discord of an open ticket with no update this long",
                                  default="never") = None


class Attachments(Section):
    max_size: whole("the largest file attached (Redmine's own limit too)",
                    unit="bytes") = 10 * 1024 * 1024
    max_count: whole("files attached from one mail") = 20
    blocked_extensions: described(tuple[str, ...], "file names never attached") = \
        BLOCKED_EXTENSIONS
    blocked_types: described(tuple[str, ...], "content types never attached") = (
        "application/x-msdownload", "application/x-dosexec")
    max_note_chars: whole("the most of a mail's text a note takes; the whole text is then"
                          " attached as message.txt", unit="characters") = 60_000

    def __post_init__(self) -> None:
        _set(self, "blocked_extensions", tuple(
            e.lower() if e.startswith(".") else f".{e.lower()}" for e in self.blocked_extensions))
        _set(self, "blocked_types", tuple(t.lower() for t in self.blocked_types))


# -- notices, answers, rate limits, trust -------------------------------------------------

class Notify(Section):
    enabled: flag("false: no notices at all") = True
    relay: text("the SMTP relay notices are sent through, HOST:PORT") = "127.0.0.1:25"
    from_: described(Optional[str], "From: of every notice: an address nothing routes back"
                     " here (docs/notify.md)", default="required") = field(name="from",
                                                                             default=None)
    timeout: seconds("for one SMTP command") = 10.0
    max_age: seconds("give an undeliverable notice up after this long") = 2 * DAY
    max_per_hour: whole("notices an hour from all hosts together") = 60


class Limit(Section):
    """A rate limit: a burst of ``mails``, refilled over ``per_seconds``."""

    mails: whole("mails in a burst")
    per_seconds: seconds("over which the burst refills")

    def refilled(self, tokens: float, since: float, now: float) -> float:
        # A clock that went back (a wall clock reset) refills nothing.
        gained = max(0.0, now - since) * self.mails / self.per_seconds
        return min(float(self.mails), tokens + gained)


class Limits(Section):
    per_sender: described(Optional[Limit], "per envelope sender: a flood gets 450 4.7.1"
                          " (pipe: exit 75)", default="none") = None
    #: Only for a mailgate that faces the internet itself: behind an MTA every
    #: mail comes from that MTA's address, and one bucket would hold them all.
    per_client: described(Optional[Limit], "per client IP, only without an MTA in front",
                          default="none") = None


class TrustSettings(Section):
    trusted_authserv_ids: described(Union[frozenset[Name], Name], "authserv-ids of our own"
                                    " MTA, whose Authentication-Results we believe",
                                    expected=NAMES) = frozenset()
    dns_timeout: seconds("all of one mail's DKIM key lookups together", below=3600) = 5.0
    verify_dkim: flag("check DKIM signatures here too") = True
    #: Client addresses of our MTA when it hands mail to `serve` over SMTP (LMTP
    #: and the pipe come from our MTA by construction).
    trusted_relays: described(Union[frozenset[Name], Name], "client addresses of our MTA"
                              " handing mail to `serve` over SMTP", expected=NAMES) = frozenset()

    def __post_init__(self) -> None:
        _set(self, "trusted_authserv_ids",
             frozenset(i.lower() for i in _names(self.trusted_authserv_ids)))
        _set(self, "trusted_relays", _names(self.trusted_relays))

    def through_our_mta(self, via: str | None) -> bool:
        """Whether a mail that reached us ``via`` (``SpooledMail.via``) came through our
        own MTA, which removed forged Authentication-Results and added its own."""
        if via in ("lmtp", "pipe"):
            return True
        kind, _, client = (via or "").partition(" ")
        # "imap NAME": a mailbox whose mail host is the operator's MTA (the default;
        # a mailbox set ``trust_mail_host: false`` spools as "mailbox NAME").
        return kind == "imap" or (kind == "smtp" and client in self.trusted_relays)


class WatchSettings(Section):
    """The Redmine watcher (mailgate.watcher): what changed in Redmine, told onwards."""

    poll_interval: seconds("with a `watch:` section, `serve` polls Redmine this often for"
                           " notes and status changes typed there (docs/reporters.md)") = 60.0


class AnswerSettings(Section):
    """Answers mailed back to reporters who are not Redmine users (service-desk mode)."""

    max_per_hour: whole("with an `answers:` section (needs `watch:`, `notify:` and"
                        " redmine.reporter_field), public notes are mailed to a ticket's"
                        " reporter who is not a Redmine user; at most this many an hour"
                        " to one address") = 10


# -- Discord ------------------------------------------------------------------------------

class ChannelSpec(Section):
    webhook: maybe_text("webhook mode: the channel's webhook URL", secret=True) = None
    forum: flag("webhook mode: the channel is a forum (a thread per ticket)") = True
    channel: described(Optional[Union[str, int]], "bot mode: the channel's id") = None


#: A webhook URL (webhook mode) or a channel id (bot mode), or the long form.
Channel = described(Union[str, int, ChannelSpec], "", secret=True,
                    expected="a webhook URL, a channel id, or a mapping")


class DiscordRetry(Section):
    first_delay: seconds("the first wait after a failed post, doubled at each one") = 5.0
    max_delay: seconds("the longest wait between two tries") = 300.0
    max_age: seconds("give a post up (dead-letter it) after this long") = 2 * DAY
    max_attempts: whole("give up after so many failures; 0: only max_age counts",
                        least=0) = 0


class Discord(Section):
    enabled: flag("false: no Discord at all") = True
    mode: described(Literal["webhook", "bot"], "post through webhooks, or as a bot") = \
        "webhook"
    channels: described(dict[str, Channel], "site name -> its channel (docs/discord.md)") = {}
    triage: described(Optional[Channel], "the channel of posts no site claims") = None
    bot_token: maybe_text("bot mode, and reading threads: the bot's token", secret=True) = None
    show_addresses: flag("show senders' addresses beside their names") = False
    redmine_fields: flag("set the ticket's discord-thread / discord-thread-id fields") = False
    excerpt_length: whole("characters of a note shown in a post") = 600
    api_base: text("Discord's API") = DISCORD_API
    timeout: seconds("for one request to Discord") = 10.0
    retry: DiscordRetry = DiscordRetry()
    read: flag("read each ticket's thread back: a new message is a note, planned as a mail"
               " would be (needs bot_token, redmine_fields and watch:)") = False
    poll_interval: seconds("between two reads of one thread") = 10.0
    users: described(dict[Union[str, int], str], "Discord user id -> the Redmine login"
                     " their messages are written as") = {}
    unmapped: described(Literal["comment", "ignore"], "a message by anyone else: a comment"
                        " by the gateway user naming them, or nothing") = "comment"


# -- IMAP ---------------------------------------------------------------------------------

class Mailbox(Section, kw_only=True):
    name: maybe_text("its name in logs and metrics", default="USER@HOST") = None
    host: described(Name, "the IMAP server", expected="a host name")
    port: described(Optional[whole("", most=65535)], "the server's port",
                    default="993 (implicit TLS), else 143") = None
    tls: described(Literal["implicit", "starttls", "none"], "`none` on loopback only") = \
        "implicit"
    ca_file: maybe_text("certificates are verified against this file's CAs",
                        default="the system's") = None
    verify: flag("verify the server's certificate") = True
    user: described(Name, "the login", expected="a login")
    password_env: maybe_text("the variable holding the password") = None
    password_file: maybe_text("the file holding the password") = None
    oauth2_token_command: described(Optional[Union[str, list[str]]], "XOAUTH2: a command"
                                    " printing an access token (no shell)") = None
    folder: text("where the mail waits") = "INBOX"
    processed_folder: text("where it goes once spooled (after: move)") = "processed"
    rejected_folder: text("where a refused mail goes") = "rejected"
    after: described(Literal["move", "seen"], "once the spool has a mail: move it to"
                     " processed_folder, or flag it seen") = "move"
    site: maybe_text("a site: its mail opens tickets there (a ticket<ID>@ address in its"
                     " header fields still makes it a reply)") = None
    recipient_headers: described(tuple[str, ...], "the fields read for the recipient, in"
                                 " this order") = RECIPIENT_HEADERS
    idle: flag("IMAP IDLE in `serve` when the server offers it") = True
    poll_interval: seconds("between two passes without IDLE") = 300.0
    batch_size: whole("mails per UID batch") = 50
    timeout: seconds("before a silent server counts as lost") = 60.0
    trust_mail_host: flag("its mail host is our MTA: its Authentication-Results are"
                          " believed") = True

    def __post_init__(self) -> None:
        _set(self, "recipient_headers", tuple(h.strip().lower() for h in self.recipient_headers))


def _every_mailbox() -> list[tuple[str, Any, Any]]:
    """A mailbox's keys as keys of the imap: section itself: every mailbox's default
    (nothing when absent, so that a mailbox's own default applies)."""
    every = Meta(extra={"every": "mailboxes"})
    return [(name, Optional[Annotated[kind, every]], None)
            for name, kind in Mailbox.__annotations__.items() if name != "name"]


Imap = msgspec.defstruct(
    "Imap", [("mailboxes", described(list[Mailbox], "the mailboxes to take mail from"
                                     " (`fetch`, `serve`; docs/imap.md)", Meta(min_length=1),
                                     expected="a list of at least one mailbox")),
             ("login_alarm", seconds("/healthz fails when a mailbox has had no successful"
                                     " login this long"), 900.0),
             *_every_mailbox()],
    bases=(Section,), kw_only=True, module=__name__)


# -- the whole file -----------------------------------------------------------------------

class ConfigFile(Section, kw_only=True):
    domains: described(list[Domain], "the mail domains served; `ticket<ID>@<domain>`"
                       " reaches ticket ID", Meta(min_length=1),
                       expected="a list of mail domains, like [example.org]")
    redmine: RedmineSettings = RedmineSettings()
    admins: described(Union[list[str], str], "addresses with the admin role",
                      expected="an address or a list of addresses") = []
    unknown_senders: described(UnknownSenders, "mail from an address Redmine does not know:"
                               " 550 (exit 77), a comment by the gateway user, or a Redmine"
                               " account for a verified sender (docs/reporters.md)") = "reject"
    unverified_senders: described(UnverifiedSenders, "a Redmine user whose identity nothing"
                                  " proves: a comment by the gateway user naming them, or"
                                  " refused") = "comment"
    sites: described(dict[str, SiteSpec], "site name -> its address and project") = {}
    triage: described(Optional[SiteSpec], "the project for mail no site claims") = None
    workflow: WorkflowSpec = WorkflowSpec()
    server: Server = Server()
    listen: Listen = Listen()
    spool: Spool = Spool()
    sweep: Sweep = Sweep()
    attach_original: described(Literal["when-trimmed", "always", "never"], "attach the mail"
                               " as received to its note") = "when-trimmed"
    attachments: Attachments = Attachments()
    notify: described(Optional[Notify], "one short reply to a person whose mail could not do"
                      " what they meant (docs/notify.md)", default="off") = None
    limits: Limits = Limits()
    trust: TrustSettings = TrustSettings()
    discord: described(Optional[Discord], "the Discord fan-out (docs/discord.md)",
                       default="off") = None
    imap: described(Optional[Imap], "IMAP mailboxes to take mail from", default="off") = None
    watch: described(Optional[WatchSettings], "the Redmine watcher", default="off") = None
    answers: described(Optional[AnswerSettings], "answers mailed to reporters",
                       default="off") = None

