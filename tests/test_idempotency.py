"""Nothing twice: the same mail delivered again and again is one note.

Through the real entry points (SMTP, pipe, replay) against the fake Redmine;
the fault tests run the same checks against the real one under load.
"""

from __future__ import annotations

import mailbox
import smtplib
import subprocess
import sys
import time
from email.message import EmailMessage

import pytest

from mailgate.config import load_config
from mailgate.gateway import Envelope, build_gateway
from mailgate.store import open_spool
from mailgate.clients.redmine import RedmineClient
from mailgate.worker import Worker
from support.configs import VERIFIED, write_config
from support.processes import child_env
from tests.helpers import run_mailgate, without_marker
from tests.servers import RunningGateway


@pytest.fixture
def config(tmp_path, fake_redmine):
    return write_config(tmp_path / "mailgate.yaml", fake_redmine.url, fake_redmine.admin_key)


@pytest.fixture
def client(fake_redmine):
    return RedmineClient(fake_redmine.url, fake_redmine.admin_key)


@pytest.fixture
def ticket(client):
    return client.create_issue("site-a", "Router drops", "It drops.", as_user="owner")


def reply(ticket: int, body: str = "Still broken.", msgid: str = "<same-1@mail.test>",
          to: str | None = None, subject: str = "Re: Router drops") -> bytes:
    msg = EmailMessage()
    msg["Authentication-Results"] = VERIFIED.split(": ", 1)[1]
    msg["From"] = "Olive Owner <owner@example.org>"
    msg["To"] = to or f"ticket{ticket}@example.org"
    msg["Subject"] = subject
    msg["Message-ID"] = msgid
    msg.set_content(body)
    return bytes(msg)


def killed_after_the_write(config, raw: bytes, fake_redmine, method: str, path: str) -> None:
    """`mailgate pipe` killed (SIGKILL) after Redmine made its write and before its answer
    arrived: the write is in Redmine, the outcome is recorded nowhere."""
    served = fake_redmine.stall_answer(method, path)
    pipe = subprocess.Popen([sys.executable, "-m", "mailgate", "pipe", "--config", str(config)],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=child_env())
    pipe.stdin.write(raw)
    pipe.stdin.close()
    try:
        assert served.wait(30), "the pipe never made its write"
    finally:
        pipe.kill()
        pipe.wait(30)
        fake_redmine.release()


def spool_outcome(config, kind: str) -> dict:
    """The outcome of the one mail of the spool that has ``kind``."""
    spool = open_spool(load_config(config, environ={}).store)
    try:
        [found] = [m.outcome for m in spool.mails(state=None) if (m.outcome or {}).get("kind")
                   == kind]
    finally:
        spool.close()
    return found


def notes(client, ticket) -> list[str]:
    return [without_marker(j.notes) for j in client.get_issue(ticket).journals if j.notes]


def test_mta_retry_reply_all_and_replay_make_one_note(config, client, ticket, tmp_path):
    raw = reply(ticket, subject=f"Re: [site-a - Support #{ticket}] Router drops")
    # 1. The MTA delivers, then delivers again (it did not see our 250).
    for _ in range(2):
        assert run_mailgate("pipe", "--config", str(config), stdin=raw).returncode == 0
    # 2. Reply-all: the same mail to the ticket's address and to the site's.
    with RunningGateway(config, lmtp=False) as server:
        with smtplib.SMTP("127.0.0.1", server.smtp_port) as smtp:
            smtp.sendmail("owner@example.org",
                          [f"ticket{ticket}@example.org", "site-a@example.org"], raw)
        deadline = time.monotonic() + 10
        while server.gateway.spool.counts().get("queued") and time.monotonic() < deadline:
            time.sleep(0.1)
    # 3. A replay of the mailbox that holds it.
    box = mailbox.mbox(tmp_path / "inbox.mbox")
    box.add(raw)
    box.flush()
    result = run_mailgate("replay", "--config", str(config), str(tmp_path / "inbox.mbox"))
    assert result.returncode == 0 and "1 duplicate" in result.stdout.decode()
    assert notes(client, ticket) == ["Still broken."]


def test_the_marker_catches_a_note_whose_record_was_lost(config, client, ticket, fake_redmine):
    """A crash after Redmine stored the note but before the state store did: the try
    after it, and every copy of the mail after that, is a duplicate."""
    raw = reply(ticket)
    killed_after_the_write(config, raw, fake_redmine, "PUT", f"/issues/{ticket}.json")
    assert notes(client, ticket) == ["Still broken."]       # written, recorded nowhere
    assert run_mailgate("worker", "--config", str(config)).returncode == 0
    found = spool_outcome(config, "duplicate")
    assert found["reason"].startswith(f"already on ticket #{ticket} as (mailgate:")
    again = run_mailgate("pipe", "--config", str(config), stdin=raw)   # the MTA, again
    assert f"duplicate (already on ticket #{ticket})" in again.stderr.decode()
    assert notes(client, ticket) == ["Still broken."]


def test_a_new_ticket_is_not_opened_twice_after_a_lost_record(config, client, fake_redmine):
    raw = reply(0, body="Please help.", msgid="<new-1@mail.test>", to="site-a@example.org",
                subject="Printer on fire")
    killed_after_the_write(config, raw, fake_redmine, "POST", "/issues.json")
    assert run_mailgate("worker", "--config", str(config)).returncode == 0
    assert spool_outcome(config, "duplicate")["reason"] == "already ticket #1"
    assert [i.subject for i in client.issues(project="site-a")] == ["Printer on fire"]


def test_a_first_attempt_does_not_search_the_ticket_for_its_marker(config, client, ticket,
                                                                    fake_redmine):
    """No earlier attempt, no write to find: the ticket's journals are not read before the
    note is written, nor Redmine searched for a new ticket's marker."""
    fake_redmine.requests.clear()
    assert run_mailgate("pipe", "--config", str(config), stdin=reply(ticket)).returncode == 0
    sent = [(r.method, r.query.get("include", "")) for r in fake_redmine.requests]
    before = sent[:sent.index(("PUT", ""))]
    assert before and not [s for s in before if "journals" in s[1]]
    opened = reply(0, body="Please help.", msgid="<new-2@mail.test>", to="site-a@example.org",
                   subject="Printer on fire")
    assert run_mailgate("pipe", "--config", str(config), stdin=opened).returncode == 0
    assert not [r for r in fake_redmine.requests if "description" in r.query]
    assert notes(client, ticket) == ["Still broken."]


def test_an_attempt_that_failed_before_redmine_wrote_is_written_once(config, client, ticket,
                                                                      fake_redmine):
    """A retry after a 503 looks for the marker, finds none, and writes."""
    fake_redmine.fail_next(status=503, count=1, method="PUT")
    first = run_mailgate("pipe", "--config", str(config), stdin=reply(ticket))
    assert "spooled as 1" in first.stderr.decode()
    assert notes(client, ticket) == []
    spool = open_spool(load_config(config, environ={}).store)
    assert spool.retry() == 1                      # due now (an operator's "retry")
    spool.close()
    fake_redmine.requests.clear()
    assert run_mailgate("worker", "--config", str(config)).returncode == 0
    assert [r for r in fake_redmine.requests
            if "journals" in r.query.get("include", "")], "the retry did not look"
    assert notes(client, ticket) == ["Still broken."]


def test_mail_without_message_id_is_keyed_by_its_bytes(config, client, ticket):
    raw = reply(ticket).replace(b"Message-ID: <same-1@mail.test>\n", b"")
    assert b"Message-ID" not in raw
    for _ in range(2):
        assert run_mailgate("pipe", "--config", str(config), stdin=raw).returncode == 0
    other = raw.replace(b"Still broken.", b"Still broken, really.")
    assert run_mailgate("pipe", "--config", str(config), stdin=other).returncode == 0
    assert notes(client, ticket) == ["Still broken.", "Still broken, really."]


def test_same_message_id_on_another_ticket_is_not_a_duplicate(config, client, ticket):
    second = client.create_issue("site-a", "Other", "Other.", as_user="owner")
    for target in (ticket, second):
        raw = reply(target)
        assert run_mailgate("pipe", "--config", str(config), stdin=raw).returncode == 0
    assert notes(client, ticket) == notes(client, second) == ["Still broken."]


def test_mail_for_one_ticket_is_applied_in_arrival_order(config, client, ticket, fake_redmine):
    """A mail waiting for a retry holds back later mail of its ticket only."""
    gateway = build_gateway(load_config(config, environ={}))
    other = client.create_issue("site-a", "Other", "Other.", as_user="owner")
    for n, (target, body) in enumerate([(ticket, "first"), (ticket, "second"), (other, "x")]):
        gateway.receive(Envelope("owner@example.org", (f"ticket{target}@example.org",),
                                 reply(target, body, msgid=f"<order-{n}@mail.test>"),
                                 via="lmtp"))
    worker = Worker(gateway)
    fake_redmine.fail_next(status=503, count=1)    # the first mail's first write fails
    results = worker.run_until_idle()
    # "first" was deferred; "second" (same ticket) waited; the other ticket went on.
    assert [type(r[1]).__name__ for r in results] == ["RedmineUnavailable", "Outcome"]
    assert notes(client, other) == ["x"] and notes(client, ticket) == []
    assert gateway.spool.retry() == 2              # what an operator's "retry all" does
    worker.run_until_idle()
    assert notes(client, ticket) == ["first", "second"]
