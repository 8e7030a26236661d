"""Where handlers' facts come from: Redmine, or (for `explain`) the command line.

Both sources answer the same two questions: what is this ticket's state and
who owns it, and which Redmine login (if any) does a mail address belong to.

Redmine's answers come from reads the client made after its last write to the
ticket (or before it, brought up to it when what Redmine kept of it is known), at
most ``FRESH_SECONDS`` old (``mailgate.clients.knowledge``), else
from one list request for the ticket and every other ticket with mail waiting
in the spool: a burst of mail to many tickets costs one read per round of
them, not one per mail.  The ticket's history (its journals: the markers of
notes already written, whether it ever had an answer) is read only when the
planner asks for it.
"""

from __future__ import annotations

import threading
from typing import Callable, Iterable, Mapping, Protocol

from handlers.plans import TicketView

from mailgate.config import Config
from mailgate.errors import NoSuchTicket
from mailgate.mail.idempotency import markers_in
from mailgate.mail.message import ParsedMail
from mailgate.trust import Verdict, return_path_proven, verify_sender


class Facts(Protocol):
    def ticket(self, ticket_id: int, history: bool = True) -> TicketView: ...

    def login_for(self, address: str) -> str | None: ...

    def sender_verdict(self, mail: ParsedMail, via_our_mta: bool) -> Verdict: ...

    def return_path_proven(self, mail: ParsedMail, envelope_sender: str,
                           via_our_mta: bool) -> bool: ...


class _Trust:
    """Whether the sender is who they say: the same checks whatever the ticket's facts
    come from (trusted Authentication-Results need no network; DKIM needs DNS)."""

    config: Config

    def sender_verdict(self, mail: ParsedMail, via_our_mta: bool) -> Verdict:
        return verify_sender(mail.raw, mail.from_address, settings=self.config.trust,
                             via_our_mta=via_our_mta)

    def return_path_proven(self, mail: ParsedMail, envelope_sender: str,
                           via_our_mta: bool) -> bool:
        return return_path_proven(mail.raw, envelope_sender, self.config.trust,
                                  via_our_mta=via_our_mta)


class RedmineFacts(_Trust):
    """Facts read from Redmine, with the status map learnt once.

    ``waiting``: the tickets with mail waiting in the spool, read with the one asked
    about (the spool's ``waiting_tickets``)."""

    def __init__(self, client, config: Config,
                 waiting: Callable[[], Iterable[int]] = lambda: ()):
        self.client = client
        self.config = config
        self.waiting = waiting
        self._status_ids: dict[str, int] | None = None
        # One read at a time: workers that start a round together would each read all
        # the waiting tickets; the second one waits and finds its ticket read.
        self._reading = threading.Lock()
        #: Tickets seen answered: an answer, once given, stays given.
        self._answered: set[int] = set()

    @property
    def status_ids(self) -> Mapping[str, int]:
        """workflow state id -> Redmine status id (a missing status is a ConfigError)."""
        if self._status_ids is None:
            table = self.config.workflow.table
            names = {sid: self.config.redmine.statuses.get(sid, name)
                     for sid, name in table.states.items()}
            self._status_ids = self.client.status_ids(names)
        return self._status_ids

    def ticket(self, ticket_id: int, history: bool = True) -> TicketView:
        """The ticket; ``history=False``: without its markers, and with ``has_answer``
        only as far as known without the journals (``TicketView.answer_known``)."""
        if not history:
            return self._view(self._current(ticket_id), history=False)
        return self._view(self.client.get_issue(ticket_id), history=True)

    def _current(self, ticket_id: int):
        issue = self.client.current_issue(ticket_id)
        if issue is None:
            with self._reading:
                issue = self.client.current_issue(ticket_id)
                if issue is None:
                    # With it, the waiting tickets whose last read no longer stands.
                    stale = [t for t in self.waiting() if self.client.current_issue(t) is None]
                    issue = self.client.read_issues([ticket_id, *stale]).get(ticket_id)
        if issue is None:
            raise NoSuchTicket(f"Redmine has no ticket #{ticket_id}")
        return issue

    def _view(self, issue, history: bool) -> TicketView:
        states = {status_id: sid for sid, status_id in self.status_ids.items()}
        answered = self.status_ids.get("answered")
        if issue.status_id == answered or (history and any(
                j.status_change and j.status_change[1] == answered for j in issue.journals)):
            self._answered.add(issue.id)
        has_answer = issue.id in self._answered
        # Who wrote each marker: only the gateway's or the writer's own are believed.
        markers = {mark: self.client.user_login(j.user_id)
                   for j in issue.journals for mark in markers_in(j.notes)} if history else {}
        reporter, participants = _recorded(issue.custom_fields, self.config)
        return TicketView(id=issue.id, state=states.get(issue.status_id),
                          status_name=issue.status_name, owner_address=issue.author_email,
                          has_answer=has_answer, subject=issue.subject,
                          markers=markers, project=issue.project_name,
                          reporter_address=reporter, participants=participants,
                          answer_known=history or has_answer)

    def login_for(self, address: str) -> str | None:
        user = self.client.find_user_by_email(address)
        return user.login if user else None


class GivenFacts(_Trust):
    """Facts stated on the command line: no Redmine is contacted at all."""

    def __init__(self, state: str, owner: str, config: Config):
        self.state = state
        self.owner = owner.lower()
        self.config = config

    def ticket(self, ticket_id: int, history: bool = True) -> TicketView:
        name = self.config.workflow.table.states[self.state]
        # An answered or solved ticket has had an answer; that is all we can know.
        return TicketView(id=ticket_id, state=self.state, status_name=name,
                          owner_address=self.owner,
                          has_answer=self.state in ("answered", "solved"))

    def login_for(self, address: str) -> str | None:
        # Without Redmine, assume every sender is a Redmine user.
        return address


def _recorded(fields: Mapping[str, object], config: Config
              ) -> tuple[str | None, tuple[str, ...]]:
    """The reporter and participants the ticket's custom fields record (docs/reporters.md)."""
    names = config.redmine
    reporter = _address(fields.get(names.reporter_field)) if names.reporter_field else None
    lines = str(fields.get(names.participants_field) or "").splitlines() \
        if names.participants_field else []
    return reporter, tuple(filter(None, map(_address, lines)))


def _address(value) -> str | None:
    """A recorded address as handlers compare it (a field may hold anything)."""
    text = str(value or "").strip().lower()
    return text if "@" in text else None
