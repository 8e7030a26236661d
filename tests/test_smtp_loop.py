"""The SMTP listener without a thread hop per mail (issue 16, idea a-1).

What needs no Redmine is answered on the event loop: RCPT to a site address or
to a ticket confirmed lately, DATA's screening where no ``reject`` policy must
ask about the sender.  The spool writer's thread commits, and each 250 still
follows its mail's COMMIT: a commit that fails or a writer that crashes answers
451, and the listener goes on.  What needs Redmine is still asked, in a thread.
"""

from __future__ import annotations

import smtplib
import threading
import time

import pytest

from mailgate.clients.redmine import RedmineClient
from mailgate.errors import SpoolBusy
from mailgate.intake.smtp import LOOP_SCREEN_BELOW
from support.configs import write_config
from tests.helpers import fixture, rcpt, smtp
from tests.servers import RunningGateway

NEW_TICKET = fixture("site-a-new-ticket.eml")


@pytest.fixture
def server(tmp_path, fake_redmine):
    config = write_config(tmp_path / "mailgate.yaml", fake_redmine.url, fake_redmine.admin_key)
    with RunningGateway(config) as running:
        yield running


@pytest.fixture
def ticket(fake_redmine):
    client = RedmineClient(fake_redmine.url, fake_redmine.admin_key)
    return client.create_issue("site-a", "loop test", "The router drops.", as_user="owner")


def send(server, address="site-a@example.org", raw=NEW_TICKET):
    with smtp(server) as conn:
        assert rcpt(conn, address)[0] == 250
        return conn.data(raw)


def taken(spool) -> int:
    """Mails in the spool, whatever the worker (running: serve's) did with them since."""
    return sum(spool.counts().values())


def threads_of(monkeypatch, owner, name: str) -> list[threading.Thread]:
    """The threads ``owner.name`` is called in, from now on."""
    called, real = [], getattr(owner, name)

    def recording(*args, **kwargs):
        called.append(threading.current_thread())
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, recording)
    return called


# -- RCPT ------------------------------------------------------------------------------

def test_rcpt_to_a_site_address_is_answered_on_the_loop_asking_no_one(
        server, fake_redmine, monkeypatch):
    checks = threads_of(monkeypatch, server.gateway.intake, "check_recipient")
    asked = fake_redmine.request_count
    with smtp(server) as conn:
        assert rcpt(conn, "site-a@example.org")[0] == 250
    assert checks and set(checks) == {server.loop_thread}      # no thread hop
    assert fake_redmine.request_count == asked


def test_a_ticket_is_asked_about_in_a_thread_then_answered_on_the_loop(
        server, fake_redmine, ticket, monkeypatch):
    checks = threads_of(monkeypatch, server.gateway.intake, "check_recipient")
    with smtp(server) as conn:
        assert rcpt(conn, f"ticket{ticket}@example.org")[0] == 250
    # Not known yet: Redmine was asked, and not on the loop.
    assert any(thread is not server.loop_thread for thread in checks)
    checks.clear()
    asked = fake_redmine.request_count
    with smtp(server) as conn:
        assert rcpt(conn, f"ticket{ticket}@example.org")[0] == 250
    assert set(checks) == {server.loop_thread} and fake_redmine.request_count == asked


def test_a_ticket_redmine_is_slow_about_holds_up_no_other_session(server, fake_redmine, ticket):
    served = fake_redmine.stall_answer("GET", "/issues.json")   # the RCPT check
    with smtp(server) as waiting:
        waiting.ehlo()
        waiting.mail("owner@example.org")
        waiting.putcmd("rcpt", f"TO:<ticket{ticket}@example.org>")
        assert served.wait(10)
        started = time.monotonic()
        with smtp(server) as other:
            assert rcpt(other, "site-a@example.org")[0] == 250
            assert other.data(NEW_TICKET)[0] == 250
        assert time.monotonic() - started < 5
        fake_redmine.release()
        assert waiting.getreply()[0] == 250


def test_an_unknown_ticket_is_still_refused_at_rcpt(server):
    with smtp(server) as conn:
        assert rcpt(conn, "ticket999999@example.org") == (550, b"5.1.1 no such ticket #999999")


# -- DATA ------------------------------------------------------------------------------

def test_data_is_screened_on_the_loop_and_committed_by_the_writer(server, monkeypatch):
    screens = threads_of(monkeypatch, server.gateway.intake, "screen")
    commits = threads_of(monkeypatch, server.gateway.spool, "add_many")
    assert send(server)[0] == 250
    assert screens == [server.loop_thread]
    assert [thread.name for thread in commits] == ["spool-writer"]


def test_250_only_once_the_commit_has_returned(server, monkeypatch):
    spool, committed = server.gateway.spool, []
    real = spool.add_many

    def slow(mails):
        time.sleep(0.5)
        ids = real(mails)
        committed.append(time.monotonic())
        return ids

    monkeypatch.setattr(spool, "add_many", slow)
    code, _ = send(server)
    answered = time.monotonic()
    assert code == 250 and len(committed) == 1 and committed[0] <= answered
    assert taken(spool) == 1


def test_a_commit_that_fails_is_451_temporary_never_250(server, monkeypatch):
    def busy(mails):
        raise SpoolBusy("store: database is locked")

    monkeypatch.setattr(server.gateway.spool, "add_many", busy)
    assert send(server) == (451, b"4.3.0 temporary failure, please try again later")
    monkeypatch.undo()
    assert taken(server.gateway.spool) == 0


def test_a_crash_in_the_writer_is_451_and_the_listener_goes_on(server, monkeypatch):
    intake = server.gateway.intake
    real, calls = intake.commit, []

    def crash_once(batch):
        calls.append(len(batch))
        if len(calls) == 1:
            raise RuntimeError("the writer's own bug")
        return real(batch)

    monkeypatch.setattr(intake, "commit", crash_once)
    assert send(server) == (451, b"4.3.0 Internal error, please try again later")
    assert send(server)[0] == 250
    assert calls == [1, 1] and taken(server.gateway.spool) == 1


def test_where_a_policy_must_ask_redmine_data_is_received_in_a_thread(server, monkeypatch):
    # site-b rejects unknown senders: the plan's screen asks Redmine who the sender is.
    receives = threads_of(monkeypatch, server.gateway.intake, "receive")
    with smtp(server) as conn:
        assert rcpt(conn, "site-b@example.org")[0] == 250
        code, text = conn.data(fixture("unknown-sender-reply.eml"))
    assert code == 550 and text.startswith(b"5.7.1")
    assert receives and server.loop_thread not in receives


def test_a_big_mail_is_screened_in_a_thread_not_on_the_loop(server, monkeypatch):
    # Its header block could be the whole of it: parsing that must not stop the loop.
    receives = threads_of(monkeypatch, server.gateway.intake, "receive")
    big = NEW_TICKET + (b"x" * 76 + b"\r\n") * (LOOP_SCREEN_BELOW // 78 + 1)
    assert send(server, raw=big)[0] == 250
    assert receives and server.loop_thread not in receives
    assert taken(server.gateway.spool) == 1


def test_lmtp_mail_committed_by_the_writer_is_answered_per_recipient(server, ticket):
    with smtplib.LMTP("127.0.0.1", server.lmtp_port) as conn:
        conn.ehlo()
        conn.mail("owner@example.org")
        assert conn.rcpt(f"ticket{ticket}@example.org")[0] == 250
        assert conn.rcpt("site-a@example.org")[0] == 250
        first = conn.data(fixture("owner-reply.eml"))
        second = conn.getreply()
    assert first[0] == second[0] == 250
    assert taken(server.gateway.spool) == 2


def test_mails_of_many_sessions_share_commits(server, monkeypatch):
    spool, sizes = server.gateway.spool, []
    real = spool.add_many

    def counting(mails):
        sizes.append(len(mails))
        time.sleep(0.05)            # a slow disk: mails queue up behind each commit
        return real(mails)

    monkeypatch.setattr(spool, "add_many", counting)
    codes: list[int] = []
    sessions = [threading.Thread(target=lambda: codes.append(send(server)[0]))
                for _ in range(10)]
    for session in sessions:
        session.start()
    for session in sessions:
        session.join(30)
    assert codes == [250] * 10 and sum(sizes) == 10 and len(sizes) < 10
    assert taken(spool) == 10
