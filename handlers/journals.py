"""A journal written in Redmine (web UI, REST, mail, Discord): who hears of it.

The Redmine watcher (``mailgate.watcher``) finds each new journal once and
gathers its facts (``JournalFacts``); ``plan_journal`` decides, once, and
records the result as a ``JournalPlan``:

* **Discord**: a note or a status change is posted in the ticket's thread,
  unless mailgate wrote the journal itself.  Those carry mailgate's marker
  (``mailgate.mail.idempotency``) and were told already: a mail's note by the
  fan-out of the mail, the sweep's expiry by the sweep.  A private note's text
  is never posted (its status change is).
* **Answers** (service-desk mode): when the ticket's reporter (the address in
  ``redmine.reporter_field``) is not a Redmine user, Redmine will never mail
  them; every public note by someone else is mailed to them, and to the
  addresses in ``redmine.participants_field``.  Never a private note, never to
  the note's own writer, never to a machine's or the gateway's own address.

**The thread switch** (issue 14): the ticket's ``discord-thread`` field is
what the people using Discord set and clear.  A journal that clears it turns
the ticket's thread off (mailgate neither posts there nor reads it); one that
sets it turns it on again, or, when the ticket has no thread yet, opens one.

Whose note is it?  A note the gateway's user wrote for someone names them on
its first line (``handlers.senders.attributed``: ``From: name <address>``): a
journal by the gateway's user that starts so was written by that address.
This is how the reporter's own mail, applied as a comment by the gateway, is
not mailed back to them.  A journal by any other Redmine user is that user's
(their address is their account's).  The line is believed only from the
gateway's user: anyone else typing ``From: ...`` is still the writer.

Nothing here does I/O: the facts come in, the plan goes out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from email.utils import getaddresses, parseaddr

from mailgate.config import Config
from mailgate.errors import UnknownAddress
from mailgate.mail.addresses import unread_mailbox
from mailgate.mail.idempotency import markers_in, without_marker
from mailgate.routing import resolve_recipient

name = "journals"
description = "A journal written in Redmine: a post in Discord, answers mailed to reporters."

# handlers.senders.attributed: "From: Name <address>", then a blank line.
_ATTRIBUTION = re.compile(r"\AFrom: (?P<name>.*?) ?<(?P<address>[^<>\s]+@[^<>\s]+)>[ \t]*(\n|\Z)")


@dataclass(frozen=True)
class JournalFacts:
    """What the watcher found out about one journal and its ticket."""

    ticket: int
    journal_id: int
    subject: str
    #: The project's name (the site's project, for Discord and the answer's From:).
    project: str | None
    #: The Redmine user who wrote the journal: name, login and address (None: unknown).
    author_name: str
    author_login: str | None
    author_email: str | None
    notes: str
    private: bool
    #: Status names before and after, when the journal changed the status.
    old_status: str | None
    new_status: str | None
    #: The ticket's reporter (``redmine.reporter_field``) and participants.
    reporter: str | None
    participants: tuple[str, ...] = ()
    #: The reporter's address belongs to a Redmine user (who gets Redmine's own mail).
    reporter_is_user: bool = False
    #: The journal set (True) or cleared (False) the ticket's discord-thread field.
    thread_switch: bool | None = None
    #: The ticket has a Discord thread already.
    has_thread: bool = False


@dataclass(frozen=True)
class Announcement:
    """The Discord post of a journal."""

    action: str                 # "note" or "status change"
    from_state: str | None
    to_state: str | None
    excerpt: str
    sender_name: str


@dataclass(frozen=True)
class JournalPlan:
    """Every decision about one journal.  Plain data, recorded with it."""

    ticket: int
    journal_id: int
    announce: Announcement | None
    #: Who is mailed the note (the reporter first), and why nobody is when nobody is.
    answer_to: tuple[str, ...] = ()
    not_mailed: str | None = None
    #: What the answer says: who wrote, the note, the new status.
    writer_name: str = ""
    text: str = ""
    new_status: str | None = None
    #: Addresses left out, each with the reason.
    left_out: tuple[tuple[str, str], ...] = field(default=())
    #: The thread switched "on", "off", or "open" (on, and a thread to open); None: as it was.
    thread: str | None = None

    def record(self) -> dict:
        record = {"discord": self.announce is not None, "mailed": list(self.answer_to) or None,
                  "not_mailed": self.not_mailed, "thread": self.thread,
                  "left_out": [f"{a}: {why}" for a, why in self.left_out] or None}
        return {k: v for k, v in record.items() if v is not None}


def plan_journal(facts: JournalFacts, config: Config) -> JournalPlan:
    written_for = _written_for(facts, config)
    text = _text(facts.notes, written_for is not None)
    recipients, not_mailed, left_out = _answer_to(facts, text, written_for, config)
    return JournalPlan(
        ticket=facts.ticket, journal_id=facts.journal_id,
        announce=_announcement(facts, text), answer_to=recipients, not_mailed=not_mailed,
        writer_name=written_for[0] if written_for else facts.author_name,
        text=text, new_status=facts.new_status if facts.old_status != facts.new_status
        else None, left_out=left_out, thread=_thread(facts))


def _thread(facts: JournalFacts) -> str | None:
    if facts.thread_switch is None:
        return None
    if not facts.thread_switch:
        return "off"
    return "on" if facts.has_thread else "open"


# -- Discord --------------------------------------------------------------------------------

def _announcement(facts: JournalFacts, text: str) -> Announcement | None:
    if markers_in(facts.notes):
        # mailgate wrote it: the mail's own post (or the sweep) told Discord already.
        return None
    excerpt = "" if facts.private else text
    changed = facts.new_status is not None and facts.new_status != facts.old_status
    if not excerpt.strip() and not changed:
        # A custom field (the thread's own id, say), or a private note alone: no news.
        return None
    return Announcement(action="note" if excerpt.strip() else "status change",
                        from_state=facts.old_status if changed else None,
                        to_state=facts.new_status if changed else None,
                        excerpt=excerpt, sender_name=facts.author_name)


# -- answers --------------------------------------------------------------------------------

def _answer_to(facts: JournalFacts, text: str, written_for: tuple[str, str] | None,
               config: Config) -> tuple[tuple[str, ...], str | None, tuple]:
    """(who is mailed, why nobody is, who was left out and why)."""
    why = _why_nobody(facts, text)
    if why:
        return (), why, ()
    writer = (written_for[1] if written_for else facts.author_email or "").lower()
    wanted = list(dict.fromkeys(a.lower() for a in (facts.reporter, *facts.participants) if a))
    recipients, left_out = [], []
    for address in wanted:
        reason = "wrote the note" if address == writer else unsuitable(address, config)
        if reason:
            left_out.append((address, reason))
        else:
            recipients.append(address)
    return tuple(recipients), None if recipients else "nobody left to mail", tuple(left_out)


def _why_nobody(facts: JournalFacts, text: str) -> str | None:
    if facts.private:
        return "a private note"
    if not text.strip():
        return "no note (a change of fields only)"
    if not facts.reporter:
        return "the ticket records no reporter address"
    if facts.reporter_is_user:
        # Redmine mails its own users; a second copy from us would be noise.
        return "the reporter is a Redmine user"
    return None


def unsuitable(address: str, config: Config) -> str | None:
    """Why an answer must not go to ``address``, or None."""
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain or any(c in address for c in " \t\r\n<>,;\"\0"):
        return "not a single mail address"
    if unread_mailbox(address):
        return "a machine's address"
    if _ours(address, config):
        return "the gateway's own address"
    return None


def _ours(address: str, config: Config) -> bool:
    own = {config.redmine.notification_address or ""}
    if config.notify is not None:
        own.add(parseaddr(config.notify.from_address)[1].lower())
    if address in own:
        return True
    try:
        resolve_recipient(address, config)     # a site's, triage's or a ticket's address
    except UnknownAddress:
        return False
    return True


# -- the writer and the text ------------------------------------------------------------------

def _written_for(facts: JournalFacts, config: Config) -> tuple[str, str] | None:
    """(name, address) of the person a gateway-written note names as its sender."""
    gateway = config.redmine.gateway_user
    if not gateway or facts.author_login != gateway:
        return None
    found = _ATTRIBUTION.match(facts.notes)
    return (found["name"], found["address"].lower()) if found else None


def _text(notes: str, attributed: bool) -> str:
    """The note as a person reads it: no marker, no attribution line."""
    text = without_marker(notes)
    if attributed:
        text = _ATTRIBUTION.sub("", text, count=1)
    return text.strip()


def participants(value: str | None) -> tuple[str, ...]:
    """The participants field: one address a line (``Name <address>`` also read)."""
    lines = (value or "").splitlines()
    return tuple(address.lower() for _, address in getaddresses(lines) if "@" in address)
