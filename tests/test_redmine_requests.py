"""What mailgate asks of Redmine per mail, and that asking less keeps every guarantee
(issue 16): a status change Redmine drops is still reported, each ticket's mail is
still applied in arrival order, and nothing is asked twice that was just read.

Through the gateway's own entry points (``Gateway.receive`` + ``Worker``, ``serve``)
against the fake Redmine, which counts what it is sent.  Not timed: only what is
sent, and what lands.
"""

from __future__ import annotations

import smtplib
import time
from email.message import EmailMessage

import pytest

from mailgate.clients.redmine import RedmineClient
from mailgate.config import load_config
from mailgate.gateway import Envelope, build_gateway
from mailgate.worker import Worker
from support.configs import VERIFIED, write_config
from tests.fakes import redmine as fake_seed
from tests.helpers import without_marker
from tests.servers import RunningGateway

SENDERS = {"owner": ("Olive Owner", "owner@example.org"),
           "support": ("Sam Support", "support@example.org")}


@pytest.fixture
def client(fake_redmine):
    return RedmineClient(fake_redmine.url, fake_redmine.admin_key)


@pytest.fixture
def gateway(tmp_path, fake_redmine):
    config = write_config(tmp_path / "mailgate.yaml", fake_redmine.url, fake_redmine.admin_key)
    return build_gateway(load_config(config, environ={}))


def mail(ticket: int, who: str, body: str, n: int) -> bytes:
    name, address = SENDERS[who]
    msg = EmailMessage()
    msg["Authentication-Results"] = VERIFIED.split(": ", 1)[1]
    msg["From"] = f"{name} <{address}>"
    msg["To"] = f"ticket{ticket}@example.org"
    msg["Subject"] = f"Re: [site-a - Support #{ticket}] Router drops"
    msg["Message-ID"] = f"<requests-{n}@mail.test>"
    msg.set_content(body)
    return bytes(msg)


def receive(gateway, ticket: int, who: str, body: str, n: int) -> None:
    raw = mail(ticket, who, body, n)
    gateway.receive(Envelope(SENDERS[who][1], (f"ticket{ticket}@example.org",), raw,
                             via="lmtp"))


def notes(client, ticket: int) -> list[str]:
    return [without_marker(j.notes) for j in client.get_issue(ticket).journals if j.notes]


def sent(fake_redmine, method: str, path: str) -> list:
    return [r for r in fake_redmine.requests if r.method == method and r.path == path]


def test_a_burst_is_read_in_rounds_and_proven_writers_are_not_read_back(
        gateway, client, fake_redmine):
    """Six notes to three tickets: the tickets are read together, a round at a time,
    and only the first note of the writer is read back after its PUT."""
    tickets = [client.create_issue("site-a", f"Router {n}", "Drops.", as_user="owner")
               for n in range(3)]
    for n in range(6):
        receive(gateway, tickets[n % 3], "owner", f"Still broken ({n}).", n)
    fake_redmine.requests.clear()
    results = Worker(gateway).run_until_idle()
    assert [r[1].kind for r in results] == ["applied"] * 6
    assert len(sent(fake_redmine, "PUT", f"/issues/{tickets[0]}.json")) == 2
    shown = [r for r in fake_redmine.requests if r.method == "GET"
             and r.path.startswith("/issues/")]
    # The one read-back: the writer's first note (knowledge.Proofs).
    assert [(r.path, r.query.get("include")) for r in shown] == [
        (f"/issues/{tickets[0]}.json", "journals,attachments")]
    lists = sent(fake_redmine, "GET", "/issues.json")
    assert 1 <= len(lists) <= 3, [r.query for r in lists]
    assert set(lists[0].query["issue_id"].split(",")) == set(map(str, tickets))
    for n, ticket in enumerate(tickets):
        assert notes(client, ticket) == [f"Still broken ({n}).", f"Still broken ({n + 3})."]


def test_a_status_change_redmine_refuses_is_reported_where_the_read_back_is_skipped(
        gateway, client, fake_redmine, monkeypatch):
    """Once support's notes and status changes were seen kept, their next status change
    is not read back when Redmine's workflow offers it; one it does not offer (here:
    Support may not answer a ticket waiting for information) is read back, and
    reported as refused."""
    support = fake_seed.WORKFLOWS["Support"] - {("Needs information", "Answered")}
    monkeypatch.setitem(fake_seed.WORKFLOWS, "Support", support)
    first, second = (client.create_issue("site-a", f"Router {n}", "Drops.", as_user="owner")
                     for n in range(2))
    worker = Worker(gateway)
    receive(gateway, first, "support", "Try a new cable.", 1)
    [(_, proving)] = worker.run_until_idle()
    assert (proving.kind, proving.to_state) == ("applied", "answered")
    assert proving.journal_id is not None                  # read back: nothing known yet

    receive(gateway, second, "support", "Status: needs information\n\nWhich model?", 2)
    fake_redmine.requests.clear()
    [(_, asked)] = worker.run_until_idle()
    assert (asked.kind, asked.to_state, asked.journal_id) == ("applied", "needs-info", None)
    assert not [r for r in sent(fake_redmine, "GET", f"/issues/{second}.json")
                if "journals" in r.query.get("include", "")]

    receive(gateway, second, "support", "It is the cable.", 3)
    [(_, refused)] = worker.run_until_idle()
    assert (refused.kind, refused.from_state, refused.to_state) == (
        "status-refused", "needs-info", "needs-info")
    assert "refused by Redmine's workflow" in refused.reason
    assert client.get_issue(second).status_name == "Needs information"
    assert notes(client, second) == ["Which model?", "It is the cable."]


def test_a_ticket_we_just_wrote_to_is_decided_on_without_reading_it_again(
        gateway, client, fake_redmine):
    """Once a note and status change are known kept without a read-back, the ticket as
    read before the write, with that status, decides the next mail: no read in between,
    and the decision is the one the ticket's new status calls for (issue 16, b-2)."""
    ticket = client.create_issue("site-a", "Router", "Drops.", as_user="owner")
    worker = Worker(gateway)
    # Each writer's first note and status change is read back: then they are known kept.
    for n, (who, body) in enumerate([("support", "Try a new cable."),
                                     ("owner", "Still broken."),
                                     ("support", "Try another port.")]):
        receive(gateway, ticket, who, body, n)
        [(_, outcome)] = worker.run_until_idle()
        assert outcome.kind == "applied"
    assert outcome.journal_id is None           # known kept: not read back
    fake_redmine.requests.clear()

    receive(gateway, ticket, "owner", "Still broken, with another port.", 3)
    [(_, reopened)] = worker.run_until_idle()
    assert (reopened.kind, reopened.from_state, reopened.to_state) == (
        "applied", "answered", "open")
    assert not [r for r in fake_redmine.requests if r.method == "GET"
                and r.path in ("/issues.json", f"/issues/{ticket}.json")
                and "allowed_statuses" not in r.query.get("include", "")]
    assert client.get_issue(ticket).status_name == "Open"
    assert notes(client, ticket)[-1] == "Still broken, with another port."


def test_mail_to_each_ticket_lands_in_arrival_order_with_several_workers(
        tmp_path, client, fake_redmine):
    """Four workers, five tickets, forty mails sent one after another: the tickets are
    worked on side by side, each ticket's notes in the order its mail arrived."""
    config = write_config(tmp_path / "mailgate.yaml", fake_redmine.url, fake_redmine.admin_key,
                          spool={"workers": 4})
    tickets = [client.create_issue("site-a", f"Router {n}", "Drops.", as_user="owner")
               for n in range(5)]
    fake_redmine.delay = 0.01       # answers take a while: the workers overlap
    with RunningGateway(config, lmtp=False) as server:
        assert server.gateway.worker.runner.concurrency == 4
        with smtplib.SMTP("127.0.0.1", server.smtp_port) as smtp:
            for n in range(40):
                who = ("owner", "support")[(n // 5) % 2]
                smtp.sendmail(SENDERS[who][1], [f"ticket{tickets[n % 5]}@example.org"],
                              mail(tickets[n % 5], who, f"Mail {n}.", n))
        deadline = time.monotonic() + 30
        while server.gateway.spool.counts().get("done", 0) < 40 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.gateway.spool.counts() == {"done": 40}
    for t, ticket in enumerate(tickets):
        assert notes(client, ticket) == [f"Mail {n}." for n in range(t, 40, 5)]


def test_the_rcpt_check_asks_nothing_about_a_ticket_the_worker_just_read(
        gateway, client, fake_redmine):
    ticket = client.create_issue("site-a", "Router", "Drops.", as_user="owner")
    receive(gateway, ticket, "owner", "Still broken.", 1)
    Worker(gateway).run_until_idle()
    fake_redmine.requests.clear()
    gateway.check_recipient(f"ticket{ticket}@example.org")
    assert fake_redmine.requests == []
    # A ticket nobody read is still asked about.
    other = client.create_issue("site-a", "Other", "Drops.", as_user="owner")
    fake_redmine.requests.clear()
    gateway.check_recipient(f"ticket{other}@example.org")
    assert [(r.path, r.query.get("issue_id")) for r in fake_redmine.requests] == [
        ("/issues.json", str(other))]


def test_threads_that_need_the_same_user_at_once_ask_redmine_once(client, fake_redmine):
    """Two spool workers starting together both need the writer: one look-up each for
    the address, the login and the user's page, not one per thread."""
    import threading

    fake_redmine.delay = 0.05          # both are waiting for the first answer
    fake_redmine.requests.clear()
    start = threading.Barrier(4)

    def look_up():
        start.wait()
        assert client.find_user_by_email("owner@example.org").login == "owner"
        assert client.user_by_login("owner").login == "owner"

    threads = [threading.Thread(target=look_up) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    asked = [r.path for r in fake_redmine.requests if r.method == "GET"]
    assert asked.count("/users.json") == 1, asked
    assert asked.count("/users/current.json") == 1, asked


def test_rcpt_checks_made_at_the_same_time_share_a_request(tmp_path, client, fake_redmine):
    """Six SMTP sessions name six tickets at once (one missing): the checks waiting
    while one is on its way go together in the next list request; the missing ticket
    is still refused at RCPT, the others accepted."""
    import threading

    config = write_config(tmp_path / "mailgate.yaml", fake_redmine.url, fake_redmine.admin_key)
    tickets = [client.create_issue("site-a", f"Router {n}", "Drops.", as_user="owner")
               for n in range(5)]
    missing = max(tickets) + 100
    fake_redmine.delay = 0.1            # each answer takes a while: the others gather
    said: dict[int, int] = {}
    with RunningGateway(config, lmtp=False) as server:
        fake_redmine.requests.clear()
        start = threading.Barrier(6)

        def rcpt(ticket: int) -> None:
            with smtplib.SMTP("127.0.0.1", server.smtp_port) as smtp:
                smtp.ehlo()
                smtp.mail("owner@example.org")
                start.wait()
                said[ticket] = smtp.rcpt(f"ticket{ticket}@example.org")[0]

        threads = [threading.Thread(target=rcpt, args=(t,)) for t in [*tickets, missing]]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(20)
        asked = [r for r in fake_redmine.requests if r.method == "GET"
                 and r.path.startswith("/issues")]
    assert said == {**{t: 250 for t in tickets}, missing: 550}
    assert all(r.path == "/issues.json" for r in asked)
    assert 2 <= len(asked) <= 3, [r.query for r in asked]
    named = [n for r in asked for n in r.query["issue_id"].split(",")]
    assert sorted(map(int, named)) == sorted([*tickets, missing])


def test_more_tickets_than_a_page_are_all_read(client, fake_redmine):
    """A round of reads (the ticket and up to 100 waiting ones) or a batch of RCPT checks
    may name more tickets than Redmine lists on a page: none is left out, the one
    asked about least of all (it would be 'no such ticket')."""
    tickets = [client.create_issue("site-a", f"Router {n}", "Drops.", as_user="owner")
               for n in range(103)]
    fake_redmine.requests.clear()
    found = client.read_issues(tickets)
    assert sorted(found) == sorted(tickets)
    assert len(sent(fake_redmine, "GET", "/issues.json")) == 2
