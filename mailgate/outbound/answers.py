"""Answers mailed back: a note written on a ticket, sent to the reporter who is not a
Redmine user (service-desk mode; who gets one is ``handlers.journals``'s decision).

An answer is a person's words, not an automatic reply, so it is sent as one:

* From: the site's address (the address the reporter wrote to), Reply-To: the
  ticket's own address ``ticket<N>@<first domain>``, so that a reply lands on
  the ticket whatever the reporter's client does with From:;
* threaded: every answer of ticket N refers to one stable root,
  ``<ticket-N@hostname>`` (In-Reply-To, References), and has a Message-ID of
  its own that is the same on every attempt, ``<ticket-N-journal-J@hostname>``;
* no ``Auto-Submitted`` (RFC 3834: these are not automatic), but our
  ``X-Loop``: a robot that copies it back is recognised (handlers.automatic);
* sent from the ticket's address as envelope sender (not the null path of
  notices), so a bounce comes back to ``ticket<N>@``, where it is recognised
  as automatic and recorded in the spool, never posted;
* a short footer says what a reply does (Launchpad's idea).

They go through the notices' durable outbox and relay
(``mailgate.store.notices``, ``mailgate.outbound.notify``): once per journal
and recipient, and at most ``answers.max_per_hour`` an hour to one address.
"""

from __future__ import annotations

import logging
import textwrap
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import formatdate

from mailgate.outbound.notify import mail_address

log = logging.getLogger("mailgate.outbound.answers")

#: What a reply to an answer does, in the workflow's words (workflow/default.yaml:
#: the owner's reply gives information, or reopens an answered ticket; the command
#: ``Status: solved`` confirms).
FOOTER = ("Reply to this mail to add information to ticket #{ticket}: your reply is added"
          " to it (after an answer, it opens the ticket again). If your problem is solved,"
          " reply with \"Status: solved\" as the first line.")


@dataclass(frozen=True)
class AnswerMail:
    ticket: int
    journal_id: int
    #: The journal's day (YYYY-MM-DD): with the journal, what makes an answer once.
    day: str
    to: str
    from_address: str
    #: ``ticket<N>@<first domain>``: Reply-To and the envelope sender.
    ticket_address: str
    subject: str
    writer_name: str
    text: str
    new_status: str | None
    #: Our hostname: the Message-IDs' right-hand side and our X-Loop.
    hostname: str


def thread_root(ticket: int, hostname: str) -> str:
    """The one Message-ID every answer of a ticket refers to, so clients thread them."""
    return f"<ticket-{ticket}@{hostname}>"


def message_id(answer: AnswerMail) -> str:
    return f"<ticket-{answer.ticket}-journal-{answer.journal_id}@{answer.hostname}>"


def body(answer: AnswerMail) -> str:
    # Redmine keeps what the web UI sends, CRLF and all; the mail's lines are ours to end.
    text = "\n".join(answer.text.splitlines())
    parts = [f"{answer.writer_name or 'The support team'} wrote on ticket #{answer.ticket}:",
             text]
    if answer.new_status:
        parts.append(f"The ticket's status is now: {answer.new_status}.")
    footer = _wrap(FOOTER.format(ticket=answer.ticket))
    return "\n\n".join(parts) + "\n\n-- \n" + footer + "\n"


def render(answer: AnswerMail, now: float) -> bytes:
    """The answer as a mail, rendered once: every attempt sends the same bytes."""
    message = EmailMessage(policy=SMTP_POLICY)
    message["From"] = answer.from_address
    message["To"] = mail_address(answer.to)
    message["Reply-To"] = answer.ticket_address
    message["Subject"] = f"Re: [#{answer.ticket}] {' '.join(answer.subject.split())}"
    message["Date"] = formatdate(now, usegmt=True)
    message["Message-ID"] = message_id(answer)
    root = thread_root(answer.ticket, answer.hostname)
    message["In-Reply-To"] = root
    message["References"] = root
    # Ours, so that a robot echoing it back is known; no Auto-Submitted: a person wrote it.
    message["X-Loop"] = answer.hostname
    # Asks Exchange and Outlook not to send their out-of-office replies back.
    message["X-Auto-Response-Suppress"] = "OOF, AutoReply"
    message.set_content(body(answer))
    return message.as_bytes()


def _wrap(text: str, width: int = 76) -> str:
    return textwrap.fill(text, width, break_long_words=False, break_on_hyphens=False)


def queue_answer(notifier, answer: AnswerMail, max_per_hour: int, now: float) -> str:
    """Queue ``answer`` in the notices' outbox; what became of it, in a word or a few.

    Raises what the store raises (the watcher retries the journal): unlike a
    notice, an answer is what the journal is for, and must not be lost."""
    store = notifier.store
    if store.answers_since(answer.to, now - 3600) >= max_per_hour:
        log.warning("answer of #%d journal %d to <%s> not sent: %d answers in the last hour",
                    answer.ticket, answer.journal_id, answer.to, max_per_hour)
        return "rate limited"
    if not store.add_answer(answer.to, answer.journal_id, answer.day, render(answer, now),
                            answer.ticket_address, now):
        return "queued before"
    log.info("answer of #%d journal %d to <%s> queued", answer.ticket, answer.journal_id,
             answer.to)
    notifier.wake.set()
    return "queued"
