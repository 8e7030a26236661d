"""What a handler decides, as plain data.  ``mailgate.executor`` carries it out.

Handlers never write: they look at the mail and the facts gathered for them
and return one of these.  That keeps every decision testable without a
Redmine, and lets ``mailgate explain`` show exactly what would be done.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Union

from mailgate.config import Site
from mailgate.mail.message import Attachment
from workflow import Decision


@dataclass(frozen=True)
class Sender:
    address: str
    name: str
    role: str
    #: The Redmine login that writes for this sender (None: Redmine does not know them).
    login: str | None
    #: The sender's identity is proven (aligned DKIM, or our MTA's result: mailgate.trust).
    verified: bool = False
    #: How that was found out, for people ("dkim d=example.org", "no signature").
    how: str = ""


@dataclass(frozen=True)
class TicketView:
    """The facts about a ticket that handlers decide on."""

    id: int
    #: The workflow state, or None when its Redmine status is not part of the workflow.
    state: str | None
    status_name: str
    owner_address: str | None
    has_answer: bool
    subject: str = ""
    #: The Redmine project the ticket is in (its site, for Discord).
    project: str | None = None
    #: Idempotency markers found in the ticket's notes (mailgate.mail.idempotency),
    #: each with the login of the journal's author.
    markers: Mapping[str, str | None] = field(default_factory=dict)
    #: The address that opened the ticket when the gateway's user wrote it for them
    #: (``redmine.reporter_field``): its owner, as far as mail is concerned.
    reporter_address: str | None = None
    #: The first mail's Cc: addresses (``redmine.participants_field``).
    participants: tuple[str, ...] = ()
    #: ``has_answer`` is known: False when the facts were read without the ticket's
    #: history and found no answer (there may have been one: the planner asks again
    #: when a decision depends on it).
    answer_known: bool = True

    @property
    def owners(self) -> tuple[str, ...]:
        """Every address whose mail has the owner role on this ticket (lower case)."""
        return tuple(a.lower() for a in (self.owner_address, self.reporter_address) if a)


@dataclass(frozen=True)
class Account:
    """A Redmine account to make for a sender (``unknown_senders: create``)."""

    login: str
    #: The login to use when Redmine says ``login`` is taken (by someone else's address).
    fallback_login: str
    address: str
    firstname: str
    lastname: str
    #: Redmine mails them their new login (``redmine.account_notice``).
    tell_them: bool = False


@dataclass(frozen=True)
class PostNote:
    ticket: int
    sender: Sender
    decision: Decision
    #: The note as Redmine is given it (``handlers.posted``): escaped for its text
    #: formatting, the idempotency marker last.
    text: str
    attachments: tuple[Attachment, ...]
    #: Who writes in Redmine: the sender's login, or the gateway's own user.
    as_user: str | None
    #: The ticket's subject and project, for telling Discord.
    subject: str = ""
    project: str | None = None
    #: Made first when the sender has no account yet (``unknown_senders: create``).
    new_account: Account | None = None
    #: The note as the mail has it (no escapes, no marker), for Discord.
    excerpt: str = ""
    #: The text formatting ``text`` is escaped for: a line added later is escaped alike.
    formatting: str = "textile"


@dataclass(frozen=True)
class OpenTicket:
    site: Site
    sender: Sender
    #: At most Redmine's 255 characters (the whole subject is then in the description).
    subject: str
    #: As ``PostNote.text``: escaped for Redmine's text formatting, the marker last.
    description: str
    attachments: tuple[Attachment, ...]
    as_user: str | None
    #: The idempotency marker the description carries, to find it after a crash.
    marker: str = ""
    #: An earlier attempt at this mail may have made the ticket: look for the marker.
    may_exist: bool = True
    #: Made first when the sender has no account yet (``unknown_senders: create``).
    new_account: Account | None = None
    #: Issue custom fields that record who the ticket is for (field name -> value):
    #: the reporter's address and the participants, when the gateway's user writes.
    recorded: Mapping[str, str] = field(default_factory=dict)
    #: As ``PostNote``: the description as the mail has it, and its text formatting.
    excerpt: str = ""
    formatting: str = "textile"


@dataclass(frozen=True)
class Refuse:
    """Refuse the mail: ``error`` is the PermanentError class the edges report, and
    ``notice`` the kind of notice the sender gets (``mailgate.outbound.notify.TEXTS``)."""

    reason: str
    error: type
    notice: str = "rejected"


@dataclass(frozen=True)
class Defer:
    """Not now: a fact needed for the decision is not to be had yet (a DKIM key
    lookup failed).  The mail is tried again later, like any temporary failure."""

    reason: str


@dataclass(frozen=True)
class Ignore:
    reason: str


@dataclass(frozen=True)
class Duplicate:
    """This mail is already on the ticket: an outcome, never a second note."""

    reason: str


Plan = Union[PostNote, OpenTicket, Refuse, Defer, Ignore, Duplicate]
