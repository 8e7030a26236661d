"""The Redmine watcher and the answers it mails back, against the real Redmine and a real
SMTP relay (an aiosmtpd sink on 127.0.0.1), with the fake Discord (issue 13, points 3-5).

The story: a neighbour who has no Redmine account writes to site-a@; the ticket
records their address (``reporter-email``).  Support answers in Redmine (here
over REST, as support: what the web UI does).  The watcher finds the note, mails
it to the neighbour, threaded, and posts it in the ticket's Discord thread; the
neighbour's reply lands on the same ticket.  Whatever happens in between (a
restart, two hosts, Redmine down) the neighbour gets the answer exactly once.

The real Redmine is shared with other tests running at the same time: every
test has its own reporter address and its own ticket, and counts only those.
"""

from __future__ import annotations

import smtplib
import threading
import time
import uuid
from email.policy import default as DEFAULT_POLICY
import email

import pytest
import requests

from mailgate.clients.redmine import RedmineClient
from mailgate.watcher import SETTLE
from support.configs import write_config
from support.processes import closed_url
from tests.helpers import fixture
from tests.load import wait_until
from tests.servers import RunningGateway
from tests.test_notify import relay  # noqa: F401  (the aiosmtpd relay fixture)

HOST = "mailgate.test"


def reporter_address() -> str:
    return f"neighbour-{uuid.uuid4().hex[:10]}@elsewhere.test"


def desk_config(tmp_path, redmine, relay, *, discord=None, spool=None,  # noqa: F811
                url: str | None = None, name: str = "mailgate.yaml", poll: float = 0.2):
    """A gateway config with the watcher and answers on (and Discord, when given)."""
    extra = {}
    if discord is not None:
        forum = discord.add_webhook(forum=True)
        extra["discord"] = {"api_base": discord.api_base, "timeout": 5,
                            "channels": {"site-a": forum, "site-b": forum}, "triage": forum,
                            "retry": {"first_delay": 0.1, "max_delay": 0.5}}
    return write_config(
        tmp_path / name, url or redmine.url, redmine.admin_key,
        redmine={"reporter_field": "reporter-email", "participants_field": "participants"},
        server={"hostname": HOST},
        spool=spool or {"path": str(tmp_path / "spool.db")},
        notify={"relay": f"127.0.0.1:{relay.controller.port}", "from": "mailgate@example.org"},
        watch={"poll_interval": poll}, answers={"max_per_hour": 10}, **extra)


def stranger_ticket(redmine, reporter: str, subject: str = "No internet since Monday") -> int:
    """A ticket as the gateway opens it for someone Redmine does not know."""
    client = RedmineClient(redmine.url, redmine.admin_key)
    return client.create_issue("site-a", subject, "It stopped on Monday.",
                               custom_fields={"reporter-email": reporter}, as_user="gateway")


def support_note(redmine, ticket: int, text: str, *, private: bool = False,
                 status: str | None = None) -> int:
    """Support types a note in Redmine (REST, as the web UI would); its journal id."""
    body: dict = {"notes": text}
    if private:
        body["private_notes"] = True
    if status:
        names = RedmineClient(redmine.url, redmine.admin_key).status_names()
        body["status_id"] = next(i for i, n in names.items() if n == status)
    answer = requests.put(f"{redmine.url}/issues/{ticket}.json", json={"issue": body},
                          headers={"X-Redmine-API-Key": redmine.key("support")}, timeout=10)
    assert answer.status_code == 204, answer.text
    return journals(redmine, ticket)[-1].id


def journals(redmine, ticket: int):
    return RedmineClient(redmine.url, redmine.admin_key).issue_journals(ticket).journals


def mails_to(relay, address: str) -> list[tuple[str, email.message.EmailMessage]]:  # noqa: F811
    return [(mail_from, email.message_from_bytes(raw, policy=DEFAULT_POLICY))
            for mail_from, rcpt, raw in list(relay.received) if rcpt == [address]]


def thread_of(discord, ticket: int):
    found = [t for t in discord.threads() if t.name.startswith(f"#{ticket} ")]
    return found[0] if found else None


def flat(text: str) -> str:
    return " ".join(text.split())


# --- the answer ------------------------------------------------------------------------------

def test_a_note_typed_by_support_is_mailed_once_to_the_reporter_threaded_and_posted(
        real_redmine, relay, fake_discord, gateways, tmp_path):  # noqa: F811
    reporter = reporter_address()
    gateway = gateways(desk_config(tmp_path, real_redmine, relay, discord=fake_discord))
    gateway.drain()                  # the first poll: what Redmine holds now is history
    ticket = stranger_ticket(real_redmine, reporter)
    journal = support_note(real_redmine, ticket, "Please restart the router.\n\nSam",
                           status="Answered")
    for _ in range(3):               # polls after the answer find nothing new
        gateway.drain()

    [(mail_from, answer)] = mails_to(relay, reporter)
    assert mail_from == f"ticket{ticket}@example.org"      # its bounces come back to the ticket
    assert answer["From"] == "site-a@example.org"
    assert answer["To"] == reporter
    assert answer["Reply-To"] == f"ticket{ticket}@example.org"
    assert answer["Subject"] == f"Re: [#{ticket}] No internet since Monday"
    assert answer["Message-ID"] == f"<ticket-{ticket}-journal-{journal}@{HOST}>"
    assert answer["In-Reply-To"] == answer["References"] == f"<ticket-{ticket}@{HOST}>"
    assert answer["X-Loop"] == HOST and answer["Auto-Submitted"] is None
    [raw] = [raw for _, rcpt, raw in relay.received if rcpt == [reporter]]
    assert b"\r\r" not in raw                 # Redmine's CRLF notes, one line end each
    text = answer.get_content().replace("\r\n", "\n")
    assert text.startswith(f"Sam Support wrote on ticket #{ticket}:\n\n"
                           "Please restart the router.\n\nSam\n\n"
                           "The ticket's status is now: Answered.\n\n-- \n")
    assert 'reply with "Status: solved" as the first line' in flat(text)
    # The same note, in the ticket's Discord thread.
    assert wait_until(lambda: thread_of(fake_discord, ticket), 10, 0.1)
    [post] = [m["content"] for m in thread_of(fake_discord, ticket).messages]
    assert post.startswith(f"**#{ticket}** note (Open → Answered): No internet since Monday\n"
                           "from Sam Support\n> Please restart the router.")
    assert gateway.watcher.store.journal(journal)["outcome"]["mailed"] == {reporter: "queued"}


def test_a_private_note_is_never_mailed(real_redmine, relay, fake_discord, gateways,  # noqa: F811
                                        tmp_path):
    reporter = reporter_address()
    gateway = gateways(desk_config(tmp_path, real_redmine, relay, discord=fake_discord))
    gateway.drain()
    ticket = stranger_ticket(real_redmine, reporter)
    private = support_note(real_redmine, ticket, "Between us: their line is faulty.",
                           private=True)
    gateway.drain()
    assert mails_to(relay, reporter) == []
    assert gateway.watcher.store.journal(private)["outcome"] == {
        "discord": False, "not_mailed": "a private note"}
    assert thread_of(fake_discord, ticket) is None            # no words, no status change
    # Not delayed either: the next public note is the one mail.
    public = support_note(real_redmine, ticket, "We are on it.")
    gateway.drain()
    [(_, answer)] = mails_to(relay, reporter)
    assert answer["Message-ID"] == f"<ticket-{ticket}-journal-{public}@{HOST}>"
    assert "faulty" not in answer.get_content()
    assert "faulty" not in " ".join(m["content"] for m in fake_discord.messages)


# --- exactly once ----------------------------------------------------------------------------

def test_a_restarted_watcher_never_sends_twice(real_redmine, relay, fake_discord, gateways,  # noqa: F811
                                               tmp_path):
    reporter = reporter_address()
    config = desk_config(tmp_path, real_redmine, relay, discord=fake_discord)
    first = gateways(config)
    first.drain()
    ticket = stranger_ticket(real_redmine, reporter)
    journal = support_note(real_redmine, ticket, "Please restart the router.")
    # The poll finds the journal; the process dies before telling it.
    first.watcher.force = True
    assert first.watcher.runner.run_once().result.found >= 1
    first.close()

    second = gateways(config)
    # A host that tells the journal and dies before recording it: its lease runs out...
    second.watcher.tell(_claim(second, journal))
    second.watcher.store.defer(journal, "the host died", until=0, failed=False)
    # ... and the next one tells it again, which queues nothing new.
    for _ in range(3):
        second.drain()
    third = gateways(config)
    third.drain()

    assert len(mails_to(relay, reporter)) == 1
    assert wait_until(lambda: thread_of(fake_discord, ticket), 10, 0.1)
    assert len(thread_of(fake_discord, ticket).messages) == 1
    assert second.watcher.store.journal(journal)["outcome"]["mailed"] == {
        reporter: "queued before"}


def _claim(gateway, journal: int):
    """Claim ``journal``; other tests' journals found by the same poll may come first:
    those are told on the way."""
    store = gateway.watcher.store
    while (item := store.claim(time.time(), lease=60)).id != journal:
        store.done(item.id, gateway.watcher.tell(item), time.time())
    return item


def test_two_watchers_on_one_postgresql_store_send_once(real_redmine, relay, fake_discord,  # noqa: F811
                                                        gateways, pg_url, tmp_path):
    reporter = reporter_address()
    spool = {"url": pg_url}
    hosts = [gateways(desk_config(tmp_path, real_redmine, relay, discord=fake_discord,
                              spool=spool, name=f"host{n}.yaml")) for n in (1, 2)]
    hosts[0].drain()
    ticket = stranger_ticket(real_redmine, reporter)
    journal = support_note(real_redmine, ticket, "Please restart the router.")
    start = threading.Barrier(2)

    def work(gateway):
        start.wait()
        for _ in range(4):
            gateway.drain()

    threads = [threading.Thread(target=work, args=(host,)) for host in hosts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    for host in hosts:
        host.drain()

    assert len(mails_to(relay, reporter)) == 1
    assert wait_until(lambda: thread_of(fake_discord, ticket), 10, 0.1)
    assert len(thread_of(fake_discord, ticket).messages) == 1
    assert hosts[1].watcher.store.journal(journal)["state"] == "done"


def test_redmine_down_during_a_poll_loses_nothing(real_redmine, relay, gateways,  # noqa: F811
                                                  tmp_path):
    reporter = reporter_address()
    good = gateways(desk_config(tmp_path, real_redmine, relay))
    good.drain()
    before = good.watcher.store.state()["watermark"]
    ticket = stranger_ticket(real_redmine, reporter)
    support_note(real_redmine, ticket, "Please restart the router.")

    # The same store, a Redmine that does not answer: the poll fails, nothing moves.
    down = gateways(desk_config(tmp_path, real_redmine, relay, url=closed_url(), name="down.yaml"))
    down.drain()
    state = down.watcher.store.state()
    assert (state["watermark"], state["failures"]) == (before, 1)
    assert "cannot reach Redmine" in state["last_error"]
    assert down.metrics.redmine_down_since is not None        # /healthz will say so
    assert down.watcher.runner.counts["retries"] == 1
    assert mails_to(relay, reporter) == []

    good.drain()                    # Redmine is back (here: the other gateway reaches it)
    assert len(mails_to(relay, reporter)) == 1
    assert good.watcher.store.state()["failures"] == 0


# --- the round trip through serve ----------------------------------------------------------

def test_the_reporters_reply_to_the_answer_lands_on_the_same_ticket(real_redmine, relay,  # noqa: F811
                                                                    tmp_path):
    reporter = reporter_address()
    config = desk_config(tmp_path, real_redmine, relay, poll=0.3)
    client = RedmineClient(real_redmine.url, real_redmine.admin_key)
    with RunningGateway(config, lmtp=False) as server:
        gateway = server.gateway
        assert gateway.watcher.runner.alive
        assert wait_until(lambda: gateway.watcher.store.state()["watermark"], 30, 0.1)
        ticket = stranger_ticket(real_redmine, reporter)
        support_note(real_redmine, ticket, "Please restart the router.", status="Answered")
        assert wait_until(lambda: mails_to(relay, reporter), 30, 0.2)
        [(_, answer)] = mails_to(relay, reporter)

        # The neighbour answers from their own mail program (Reply-To, In-Reply-To), as
        # the footer says; our MTA verified their domain's DKIM signature.
        reply = ("Authentication-Results: mx.example.org; dkim=pass header.d=elsewhere.test"
                 f"\r\nFrom: Nina Neighbour <{reporter}>\r\nTo: {answer['Reply-To']}\r\n"
                 f"Subject: {answer['Subject']}\r\n"
                 f"Message-ID: <reply-{uuid.uuid4().hex}@elsewhere.test>\r\n"
                 f"In-Reply-To: {answer['Message-ID']}\r\n"
                 f"References: {answer['References']} {answer['Message-ID']}\r\n\r\n"
                 "Status: solved\r\n\r\nIt works again, thank you!\r\n\r\n"
                 "> Please restart the router.\r\n")
        with smtplib.SMTP("127.0.0.1", server.smtp_port) as smtp:
            smtp.sendmail(reporter, [answer["Reply-To"]], reply.encode())
        assert wait_until(lambda: any("It works again, thank you!" in j.notes
                                      for j in client.issue_journals(ticket).journals), 30, 0.2)
        mine = [j for j in client.issue_journals(ticket).journals
                if "It works again" in j.notes][0]

        # A bounce of an answer comes back to the ticket: recognised, recorded, not posted.
        bounce = fixture("bounce-dsn.eml").replace(b"ticket1@", f"ticket{ticket}@".encode())
        with smtplib.SMTP("127.0.0.1", server.smtp_port) as smtp:
            smtp.sendmail("", [f"ticket{ticket}@example.org"], bounce)

        # The watcher sees the reply's journal too: it is the reporter's own, not mailed.
        assert wait_until(lambda: (gateway.watcher.store.journal(mine.id) or {}).get(
            "state") == "done", 30, 0.2)
        assert wait_until(lambda: not gateway.spool.counts().get("queued"), 30, 0.2)
    assert gateway.watcher.store.journal(mine.id)["outcome"]["not_mailed"] == \
        "nobody left to mail"
    assert len(mails_to(relay, reporter)) == 1
    [dsn] = [m for m in gateway.spool.mails(state=None, limit=1000)
             if m.rcpt == f"ticket{ticket}@example.org" and m.mail_from in ("", "<>")]
    assert dsn.outcome["kind"] == "ignored"
    assert "automatic" in dsn.outcome["reason"]
    assert len(client.issue_journals(ticket).journals) == 2   # the answer and the reply
    # The reporter is the ticket's owner: their "Status: solved" confirmed the answer.
    assert client.issue_journals(ticket).status_name == "Solved"


# --- what a poll costs, and how far it reads (the fake Redmine counts requests) -------------

def test_a_poll_costs_one_request_when_nothing_changed(fake_redmine, relay, gateways,  # noqa: F811
                                                       tmp_path):
    reporter = reporter_address()
    gateway = gateways(desk_config(tmp_path, fake_redmine, relay))
    gateway.drain()
    ticket = stranger_ticket(fake_redmine, reporter)
    support_note(fake_redmine, ticket, "Please restart the router.")
    gateway.drain()
    assert len(mails_to(relay, reporter)) == 1

    # An issue is counted as handled once its last second has passed (SETTLE).
    time.sleep(SETTLE + 1)
    gateway.drain()
    before = len(fake_redmine.requests)
    gateway.drain()
    [poll] = fake_redmine.requests[before:]
    assert (poll.method, poll.path) == ("GET", "/issues.json")
    assert poll.query["updated_on"].startswith(">=") and poll.query["sort"] == "updated_on"
    assert poll.query["status_id"] == "*"


def test_a_second_change_in_the_same_second_is_not_missed(fake_redmine, relay, gateways,  # noqa: F811
                                                         tmp_path):
    """Redmine's updated_on is to the second: a poll that read an issue, then a save
    in that same second, left updated_on as it was, and the second note was never
    mailed (found by the Discord work; test_a_private_note_is_never_mailed flaked)."""
    reporter = reporter_address()
    gateway = gateways(desk_config(tmp_path, fake_redmine, relay))
    gateway.drain()
    ticket = stranger_ticket(fake_redmine, reporter)
    support_note(fake_redmine, ticket, "Please restart the router.")
    gateway.drain()
    stamp = fake_redmine.issues[ticket].updated_on
    support_note(fake_redmine, ticket, "And check the cable.")
    fake_redmine.set_updated_on(ticket, stamp)      # saved within the same second
    gateway.drain()
    assert len(mails_to(relay, reporter)) == 2


def test_a_poll_reads_every_page_of_what_changed(fake_redmine, relay, gateways,  # noqa: F811
                                                 tmp_path):
    gateway = gateways(desk_config(tmp_path, fake_redmine, relay))
    gateway.drain()
    admin = RedmineClient(fake_redmine.url, fake_redmine.admin_key)
    support = RedmineClient(fake_redmine.url, fake_redmine.key("support"))
    # More than a page (100), most of them updated within the same second.
    tickets = [admin.create_issue("site-a", f"Ticket {n}", "x", as_user="owner")
               for n in range(130)]
    for ticket in tickets:
        support.add_note(ticket, f"Answer to {ticket}.")
    gateway.drain()
    assert gateway.watcher.store.counts() == {"queued": 0, "done": 130, "dead": 0}


def test_answers_to_one_address_are_limited_per_hour(fake_redmine, relay, gateways,  # noqa: F811
                                                     tmp_path):
    reporter = reporter_address()
    config = desk_config(tmp_path, fake_redmine, relay)
    config.write_text(config.read_text().replace("max_per_hour: 10", "max_per_hour: 2"))
    gateway = gateways(config)
    gateway.drain()
    ticket = stranger_ticket(fake_redmine, reporter)
    notes = [support_note(fake_redmine, ticket, f"Note {n}.") for n in range(3)]
    gateway.drain()
    assert len(mails_to(relay, reporter)) == 2
    assert gateway.watcher.store.journal(notes[2])["outcome"]["mailed"] == {
        reporter: "rate limited"}


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_the_watcher_shows_in_metrics_and_healthz_says_when_it_stopped(
        fake_redmine, relay, tmp_path):  # noqa: F811
    config = desk_config(tmp_path, fake_redmine, relay)
    with RunningGateway(config, lmtp=False, metrics=True) as server:
        base = f"http://127.0.0.1:{server.metrics_port}"
        watcher = server.gateway.watcher
        assert wait_until(lambda: watcher.store.state()["polled_at"], 10, 0.1)
        assert 'mailgate_runner_up{queue="watch"} 1.0' in requests.get(
            f"{base}/metrics", timeout=5).text
        assert requests.get(f"{base}/healthz", timeout=5).text == "ok\n"

        def gone(*args):
            raise SystemExit("the watcher's thread ends")     # past the runner's guard

        watcher.store.claim = gone
        assert wait_until(lambda: not watcher.runner.alive, 10, 0.1)
        answer = requests.get(f"{base}/healthz", timeout=5)
        assert (answer.status_code, answer.text) == (503, "watch runner is not running\n")


def test_the_one_shot_worker_polls_once(real_redmine, relay, tmp_path):  # noqa: F811
    from tests.helpers import run_mailgate

    reporter = reporter_address()
    config = desk_config(tmp_path, real_redmine, relay, poll=3600)
    first = run_mailgate("worker", "--config", str(config))          # history
    assert first.returncode == 0, first.stderr.decode()
    ticket = stranger_ticket(real_redmine, reporter)
    support_note(real_redmine, ticket, "Please restart the router.")
    # Due or not (the interval is an hour), each run of the cron form polls once.
    second = run_mailgate("worker", "--config", str(config))
    assert second.returncode == 0, second.stderr.decode()
    assert len(mails_to(relay, reporter)) == 1
    assert b"Traceback" not in first.stderr + second.stderr
