"""The one error hierarchy of mailgate, organised by what the caller can do.

::

    MailgateError
    ├── TemporaryError            try again later: SMTP 451, exit 75 (EX_TEMPFAIL)
    │   ├── RedmineUnavailable    connection refused, timeout, 5xx, 429, concurrent edit
    │   ├── SpoolBusy             the spool database is locked
    │   ├── MailboxUnavailable    an IMAP mailbox cannot be reached or read now
    │   └── MailTakenElsewhere    another process took this mail from its mailbox first
    │   └── ListenFailed          serve cannot listen where it was told (the port is in use)
    ├── PermanentError            do not retry this mail: SMTP 5xx, exit 65/67/77
    │   ├── BadMessage            empty or unparseable input (554 5.6.0, exit 65)
    │   ├── MessageTooBig         over the configured size (552 5.3.4, exit 65)
    │   ├── UnknownAddress        nobody is served at this address (550 5.1.1, exit 67)
    │   ├── NoSuchTicket          ticket<ID>@ for a ticket that is not there (550 5.1.1, exit 67)
    │   ├── SenderNotPermitted    the sender may not write here (550 5.7.1, exit 77)
    │   ├── UnknownUser           Redmine has no active user by that login (412)
    │   ├── Forbidden             Redmine refused this ticket to this user (403)
    │   └── RedmineRejected       Redmine refused the write with messages (422)
    ├── ConfigError               the operator must fix something: exit 78; SMTP 451 4.3.5
    │   └── MailboxLoginFailed    an IMAP server refused our login (password, token)
    └── NoInput                   a file or directory named on the command line: exit 66

Only the edges (the SMTP/LMTP handler, the pipe command, the CLI) turn these into reply
codes or exit codes, reading the class attributes below.  "Ignored" and "duplicate" are
outcomes of processing, not errors, and are never raised.
"""

from __future__ import annotations

# sysexits.h, as Postfix pipe(8) and Exim read them.
EX_OK = 0
EX_USAGE = 64
EX_DATAERR = 65
EX_NOINPUT = 66
EX_NOUSER = 67
EX_SOFTWARE = 70
EX_TEMPFAIL = 75
EX_NOPERM = 77
EX_CONFIG = 78


class MailgateError(Exception):
    """Base of every error mailgate raises on purpose."""

    smtp_code = 451
    smtp_status = "4.3.0"
    exit_code = EX_TEMPFAIL
    #: Whether the reply to the SMTP client may say what went wrong.  A failure of
    #: ours (Redmine, the database) is none of the sender's business, and its text
    #: names internal hosts: the client hears only "try again later"; the log has it.
    tells_client = True

    @property
    def smtp_reply(self) -> str:
        # One line only: a newline inside an SMTP reply would break the protocol.
        text = " ".join(str(self).split()) or type(self).__name__
        if not self.tells_client:
            text = "temporary failure, please try again later"
        return f"{self.smtp_code} {self.smtp_status} {text}"


class TemporaryError(MailgateError):
    """The same mail may succeed later; the sender's MTA should retry."""


class RedmineUnavailable(TemporaryError):
    smtp_status = "4.4.1"
    tells_client = False


class SpoolBusy(TemporaryError):
    smtp_status = "4.3.0"
    tells_client = False


class MailboxUnavailable(TemporaryError):
    """An IMAP mailbox cannot be reached, or the connection was lost (mailgate.intake.imap)."""

    tells_client = False


class MailTakenElsewhere(TemporaryError):
    """Another process recorded this mailbox mail's receipt first: it is spooled there,
    and must not be spooled again here (mailgate.store.receipts)."""


class PermanentError(MailgateError):
    """Retrying the same mail cannot help."""

    smtp_code = 554
    smtp_status = "5.6.0"
    exit_code = EX_DATAERR


class BadMessage(PermanentError):
    pass


class MessageTooBig(PermanentError):
    smtp_code = 552
    smtp_status = "5.3.4"


class UnknownAddress(PermanentError):
    smtp_code = 550
    smtp_status = "5.1.1"
    exit_code = EX_NOUSER


class NoSuchTicket(UnknownAddress):
    pass


class SenderNotPermitted(PermanentError):
    smtp_code = 550
    smtp_status = "5.7.1"
    exit_code = EX_NOPERM


class UnknownUser(PermanentError):
    smtp_code = 550
    smtp_status = "5.7.1"
    exit_code = EX_NOPERM


class Forbidden(PermanentError):
    """Redmine answered 403 for a ticket: the user the mail is written as may not write
    there (a private or closed project, an archived one).  Retrying cannot help, and
    must not hold up the ticket's other mail."""

    smtp_code = 550
    smtp_status = "5.7.1"
    exit_code = EX_NOPERM


class RedmineRejected(PermanentError):
    """Redmine answered 422 with validation messages; they are kept in ``messages``."""

    def __init__(self, message: str, messages: list[str] | None = None):
        super().__init__(message)
        self.messages = list(messages or [])


class ConfigError(MailgateError):
    """Something the operator must fix; mail is deferred, not refused, meanwhile."""

    smtp_code = 451
    smtp_status = "4.3.5"
    exit_code = EX_CONFIG
    tells_client = False


def unknown_key(where: str, key: object, known, elsewhere=()) -> ConfigError:
    """A misspelt setting, named by its full path with the nearest valid key, so that
    ``admin:`` for ``admins:`` is never silently a config with no admins.  With no
    near one, ``elsewhere`` (the paths where a key of that name belongs: ``url:`` at
    the top for ``spool.url``), else every key that is known here."""
    import difflib

    path = f"{where}.{key}" if where else str(key)
    near = difflib.get_close_matches(str(key), sorted(map(str, known)), n=1, cutoff=0.6)
    hint = f"; did you mean {near[0]!r}?" if near else \
        f"; did you mean {' or '.join(map(repr, elsewhere))}?" if elsewhere else \
        f" (known: {', '.join(sorted(map(str, known)))})"
    return ConfigError(f"{path}: unknown key{hint}")


class MailboxLoginFailed(ConfigError):
    """An IMAP server refused the login: a wrong password or token, or a locked account.
    ``fetch`` exits 78; ``serve`` tries again with backoff, and /healthz turns red."""


class ListenFailed(TemporaryError):
    """``serve`` cannot listen on an address: it is in use (another gateway not yet
    gone), or not this host's.  Exit 75: a restart a little later may well work."""

    tells_client = False


class NoInput(MailgateError):
    """A file or directory named on the command line (``replay``, ``explain``) is not
    there or cannot be read: exit 66 (EX_NOINPUT)."""

    exit_code = EX_NOINPUT
