"""A small SMTP load generator for the fault tests: threads of real smtplib clients
that, like an MTA, retry a mail until it gets a 250 (on 4xx, or a dropped connection)."""

from __future__ import annotations

import smtplib
import threading
import time
import uuid
from dataclasses import dataclass, field

from support.mails import verified_reply
from tests.helpers import without_marker


@dataclass
class Mail:
    ticket: int
    body: str
    raw: bytes
    accepted: bool = False
    tries: int = 0


def make_mails(tickets: list[int], count: int, sender: str = "support@example.org",
               name: str = "Sam Support") -> list[Mail]:
    run = uuid.uuid4().hex[:6]
    mails = []
    for n in range(count):
        ticket = tickets[n % len(tickets)]
        body = f"load {run} mail {n} for ticket {ticket}"
        raw = verified_reply(ticket, sender, name, f"Re: load {ticket}",
                             f"<load-{run}-{n}@load.test>", body)
        mails.append(Mail(ticket, body, raw))
    return mails


@dataclass
class Load:
    """Sends every mail from ``clients`` threads, retrying until 250 or the deadline."""

    port: int
    mails: list[Mail]
    clients: int = 4
    deadline: float = 300.0
    pause: float = 0.0
    errors: list[str] = field(default_factory=list)

    def run(self) -> None:
        queue = list(reversed(self.mails))
        lock = threading.Lock()
        stop_at = time.monotonic() + self.deadline

        def client():
            while time.monotonic() < stop_at:
                with lock:
                    if not queue:
                        return
                    mail = queue.pop()
                # Each mail in its own order: the per-client sequence is kept.
                while not self._send(mail) and time.monotonic() < stop_at:
                    time.sleep(0.2)
                time.sleep(self.pause)

        threads = [threading.Thread(target=client) for _ in range(self.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def _send(self, mail: Mail) -> bool:
        mail.tries += 1
        try:
            with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as smtp:
                smtp.sendmail("support@example.org", [f"ticket{mail.ticket}@example.org"],
                              mail.raw)
        except (smtplib.SMTPException, OSError) as exc:
            code = getattr(exc, "smtp_code", None)
            if code is not None and code >= 500:
                self.errors.append(f"{mail.body}: permanent {exc}")
                return True      # a 5xx is final: recorded as an error
            return False         # 4xx, refused or dropped connection: try again
        mail.accepted = True
        return True


def count_notes(client, tickets: list[int]) -> dict[str, int]:
    """How often each note text is on the tickets (marker line removed)."""
    counts: dict[str, int] = {}
    for ticket in tickets:
        for journal in client.get_issue(ticket).journals:
            text = without_marker(journal.notes)
            if text:
                counts[text] = counts.get(text, 0) + 1
    return counts


def wait_until(predicate, timeout: float, step: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False
