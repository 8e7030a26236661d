"""A reply to a ticket: decide the workflow action and the note to post."""

from __future__ import annotations

from mailgate.config import Config, Site
from mailgate.mail.idempotency import defused
from mailgate.mail.message import Attachment, ParsedMail
from mailgate.mail.shorten import cut_point
from mailgate.mail.trimming import trim_reply
from mailgate.trust import Verdict
from workflow import Decision, TicketFacts, parse_commands

from .plans import Defer, Duplicate, Ignore, Plan, PostNote, Refuse, Sender, TicketView
from .posted import Posted, compose
from .senders import NOT_NEEDED, Identity, identity, role_of, sender_of

name = "reply"
description = "A reply to ticket N: a note, and the status the workflow decides."

#: How much of a mail's text is trimmed, in notes (attachments.max_note_chars).
TRIM_WINDOW = 4


def handle(mail: ParsedMail, ticket: TicketView, login: str | None, site: Site | None,
           config: Config, mark: str = "", verdict: Verdict = NOT_NEEDED) -> Plan:
    """``mark``: the idempotency marker this mail's note carries (see mailgate.mail.idempotency);
    ``verdict``: whether the sender's identity is proven (mailgate.trust)."""
    role = role_of(mail.from_address, ticket.owners, config)
    sender = sender_of(mail, login, role, verdict)
    reporter = mail.from_address.lower() == (ticket.reporter_address or "").lower()
    who = identity(sender, verdict, site, config, reporter=reporter)
    if isinstance(who, (Refuse, Defer)):
        return who
    if mark and _written_by(ticket.markers.get(mark), who.writer, config):
        # Posted before, and the record of it was lost (a crash after Redmine
        # answered).  Only a marker in a note this mail's writer (or the gateway)
        # wrote counts: anyone else's is a copy, not this mail.
        return Duplicate(f"already on ticket #{ticket.id} as {mark}")
    commands, text = parse_commands(mail.body)
    # A forged From: must not put words in the real person's Redmine mouth: the
    # gateway's user writes, and names who the mail says it is from.
    note = _note(mail, text, config, mark, None if who.writes_as(sender) else sender)
    decision = _decide(ticket, role, commands, site, config, who)
    if not note.has_content and not decision.changes_state:
        return Ignore("nothing to post: no text, no attachment, no status change")
    return PostNote(ticket=ticket.id, sender=sender, decision=decision, text=note.text,
                    attachments=note.attachments, as_user=who.writer, subject=ticket.subject,
                    project=ticket.project, new_account=who.account, excerpt=note.excerpt,
                    formatting=config.redmine.text_formatting)


def _written_by(author: str | None, writer: str, config: Config) -> bool:
    return author is not None and author in (writer, config.redmine.gateway_user)


def _note(mail: ParsedMail, text: str, config: Config, mark: str,
          sender: Sender | None) -> Posted:
    """The note (trimmed, naming what was not attached) and the files to attach."""
    # Trimming reads about 0.1 µs a character (2 µs, 45 s for a 25 MB pasted text,
    # before it skipped lines that cannot end an attribution: bench/trim_score.py
    # --speed), and the note shows at most max_note_chars of it: only the beginning
    # is trimmed, where the quoted part trimming looks for starts if it is in the
    # note at all.  The whole text, as it came, is then the attached file
    # (handlers.posted).
    window = TRIM_WINDOW * config.attachment_limits.max_note_chars
    head = text if len(text) <= window else text[:cut_point(text, window)]
    trimmed = trim_reply(defused(head))
    return compose(trimmed.text, mail.attachments, config, mark=mark,
                   own=_original(mail, trimmed.removed, config), sender=sender,
                   whole=None if head is text else text.strip())


def _original(mail: ParsedMail, removed: str, config: Config) -> tuple[Attachment, ...]:
    """The mail as received, so what trimming took out can still be read."""
    wanted = config.attach_original == "always" or (
        config.attach_original == "when-trimmed" and removed.strip())
    if not wanted or not mail.raw:
        return ()
    return (Attachment("original.eml", "message/rfc822", mail.raw),)


def _decide(ticket: TicketView, role: str, commands, site: Site | None, config: Config,
            who: Identity) -> Decision:
    if not who.acts:
        # Not the sender's own word, or no account: a comment, whatever the commands.
        state = ticket.state or ticket.status_name
        return Decision(role, "comment", state, state, refused=who.why)
    if ticket.state is None:
        # A status the workflow does not know (set by hand in Redmine): keep
        # the mail as a comment rather than guess a state for it.
        return Decision(role, "comment", ticket.status_name, ticket.status_name,
                        refused=f"status {ticket.status_name!r} is not part of the workflow"
                        if commands else None)
    return config.workflow_for(site).decide(
        role, ticket.state, commands, TicketFacts(has_answer=ticket.has_answer))
