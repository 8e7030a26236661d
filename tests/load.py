"""A small SMTP load generator for the fault tests: threads of real smtplib clients
that, like an MTA, retry a mail until it gets a 250 (on 4xx, or a dropped connection)."""

from __future__ import annotations

import signal
import smtplib
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

from tests.helpers import child_env, without_marker
from tests.servers import VERIFIED


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
        msg = EmailMessage()
        # What our MTA writes on mail whose signature it verified (trusted in write_config).
        msg["Authentication-Results"] = VERIFIED.partition(": ")[2]
        msg["From"] = f"{name} <{sender}>"
        msg["To"] = f"ticket{ticket}@example.org"
        msg["Subject"] = f"Re: load {ticket}"
        msg["Message-ID"] = f"<load-{run}-{n}@load.test>"
        body = f"load {run} mail {n} for ticket {ticket}"
        msg.set_content(body)
        mails.append(Mail(ticket, body, bytes(msg)))
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


class ServeProcess:
    """``mailgate serve`` as its own process, as an operator runs it (and kill -9s it)."""

    def __init__(self, config: Path, port: int, log: Path):
        self.config, self.port, self.log = config, port, log
        self.process: subprocess.Popen | None = None

    def start(self) -> "ServeProcess":
        env = child_env()
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mailgate", "serve", "--config", str(self.config),
                 "--smtp", f"127.0.0.1:{self.port}"], stdout=log, stderr=log, env=env)
        if not wait_until(self._answers, 20, 0.1):
            raise RuntimeError(f"mailgate serve did not start; see {self.log}")
        return self

    def _answers(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def __enter__(self) -> "ServeProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        # A failed test must not leave a gateway running behind it.
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def kill9(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(40)
