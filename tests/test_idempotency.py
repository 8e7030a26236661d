"""Nothing twice: the same mail delivered again and again is one note.

Through the real entry points (SMTP, pipe, replay) against the fake Redmine;
the fault tests run the same checks against the real one under load.
"""

from __future__ import annotations

import mailbox
import smtplib
import time
from email.message import EmailMessage

import pytest

from mailgate.config import load_config
from mailgate.gateway import Envelope, build_gateway
from mailgate.clients.redmine import RedmineClient
from mailgate.worker import Worker
from support.configs import VERIFIED, write_config
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


def lose_state_store(tmp_path) -> None:
    for name in ("spool.db", "spool.db-wal", "spool.db-shm"):
        (tmp_path / name).unlink(missing_ok=True)


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


def test_the_marker_catches_a_note_whose_record_was_lost(config, client, ticket, tmp_path):
    """A crash after Redmine stored the note but before the state store did."""
    raw = reply(ticket)
    assert run_mailgate("pipe", "--config", str(config), stdin=raw).returncode == 0
    lose_state_store(tmp_path)        # the note is in Redmine, the record of it is gone
    result = run_mailgate("pipe", "--config", str(config), stdin=raw)
    assert result.returncode == 0
    assert f"duplicate (already on ticket #{ticket} as (mailgate:" in result.stderr.decode()
    assert notes(client, ticket) == ["Still broken."]


def test_a_new_ticket_is_not_opened_twice_after_a_lost_record(config, client, tmp_path):
    raw = reply(0, body="Please help.", msgid="<new-1@mail.test>", to="site-a@example.org",
                subject="Printer on fire")
    assert run_mailgate("pipe", "--config", str(config), stdin=raw).returncode == 0
    lose_state_store(tmp_path)
    result = run_mailgate("pipe", "--config", str(config), stdin=raw)
    assert "duplicate #1 (already ticket #1)" in result.stderr.decode()
    assert [i.subject for i in client.issues(project="site-a")] == ["Printer on fire"]


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
