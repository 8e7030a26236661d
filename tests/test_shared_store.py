"""Shared state, shared store: two hosts on one PostgreSQL, and `pipe` beside `serve` on
one SQLite file, see the same Discord thread registry and the same rate buckets.

Before, each host kept Discord's queue and threads in its own SQLite file: two
hosts delivering posts of the same new ticket each opened a thread and each wrote
its id into Redmine.  ``test_two_hosts_with_their_own_stores_open_two_threads``
shows that race is real; the others show it closed.
"""

from __future__ import annotations

import re
import smtplib
import threading
import time

import pytest

from mailgate.clients.redmine import RedmineClient
from mailgate.outbound.fanout import Fanout, FanoutEvent, load_discord_settings
from support.configs import VERIFIED, write_config
from support.processes import ServeProcess, free_port
from tests.helpers import fixture, run_mailgate
from tests.load import wait_until


def event(n: int, ticket: int, kind: str = "reply") -> FanoutEvent:
    return FanoutEvent(
        mail_key=f"<mail-{n}@example.org>", kind=kind, ticket=ticket, site="site-a",
        subject="Printer", sender_name="Olive Owner", sender_address="owner@example.org",
        action="open" if kind == "new" else "answer", from_state=None, to_state="open",
        excerpt=f"[e{n}] text of mail {n}", url=f"https://redmine.example.org/issues/{ticket}")


def markers(messages) -> list[str]:
    return [m for message in messages for m in re.findall(r"\\?\[e(\d+)\\?\]", message["content"])]


class Hosts:
    """Fan-outs ("hosts") delivering at the same time, each in its own thread."""

    def __init__(self, fake_discord, fake_redmine, stores: list):
        self.told: list[tuple[int, str]] = []
        redmine = RedmineClient(fake_redmine.url, fake_redmine.admin_key)
        lock = threading.Lock()

        def thread_created(ticket: int, thread_id: str) -> None:
            time.sleep(0.2)                      # a slow Redmine: the other host polls meanwhile
            with lock:
                self.told.append((ticket, thread_id))
                redmine.set_custom_field(ticket, "discord-thread", True)
                redmine.set_custom_field(ticket, "discord-thread-id", thread_id)

        settings = load_discord_settings({
            "channels": {"site-a": fake_discord.add_webhook(forum=True)},
            "api_base": fake_discord.api_base, "timeout": 5, "redmine_fields": True,
            "retry": {"first_delay": 0.05, "max_delay": 0.3}})
        self.fanouts = [Fanout(settings, store, on_thread_created=thread_created)
                        for store in stores]

    def deliver(self, timeout: float = 30.0) -> None:
        start = threading.Barrier(len(self.fanouts))

        def run(fanout: Fanout) -> None:
            start.wait()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                held = fanout.queue.counts()
                if not held["queued"] and not held["threads_unannounced"]:
                    return
                if not fanout.run_once():
                    time.sleep(0.01)

        threads = [threading.Thread(target=run, args=(f,)) for f in self.fanouts]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def close(self) -> None:
        for fanout in self.fanouts:
            fanout.close()


@pytest.fixture
def hosts(fake_discord, fake_redmine):
    made = []

    def make(stores: list) -> Hosts:
        made.append(Hosts(fake_discord, fake_redmine, stores))
        return made[-1]

    yield make
    for each in made:
        each.close()


def test_two_hosts_on_one_postgresql_open_one_thread_and_tell_redmine_once(
        fake_discord, fake_redmine, pg_url, hosts):
    ticket = RedmineClient(fake_redmine.url, fake_redmine.admin_key).create_issue(
        "site-a", "Printer", "It smokes.", as_user="owner")
    two = hosts([pg_url, pg_url])
    first, second = two.fanouts
    first.enqueue(event(1, ticket, "new"))       # host 1 applied the new ticket's mail,
    second.enqueue(event(2, ticket))             # host 2 the replies that came right after
    second.enqueue(event(3, ticket))
    first.enqueue(event(4, ticket))
    fake_discord.delay = 0.2                     # each post in flight long enough to race
    two.deliver()

    [thread] = fake_discord.threads()
    assert markers(thread.messages) == ["1", "2", "3", "4"]
    assert two.told == [(ticket, thread.id)]
    fields = {f["name"]: f.get("value") for f in fake_redmine.issue(ticket)["custom_fields"]}
    assert fields["discord-thread-id"] == thread.id
    assert sum(f.stats().get("run_delivered", 0) for f in two.fanouts) == 4


def test_two_hosts_with_their_own_stores_open_two_threads(fake_discord, fake_redmine,
                                                          tmp_path, hosts):
    """The control: the layout before, each host's Discord state in its own file."""
    ticket = RedmineClient(fake_redmine.url, fake_redmine.admin_key).create_issue(
        "site-a", "Printer", "It smokes.", as_user="owner")
    two = hosts([tmp_path / "host1.db", tmp_path / "host2.db"])
    first, second = two.fanouts
    first.enqueue(event(1, ticket, "new"))
    second.enqueue(event(2, ticket))
    two.deliver()
    assert len(fake_discord.threads()) == 2 and len(two.told) == 2


def reply(n: int, ticket: int) -> bytes:
    return (f"{VERIFIED}\r\nFrom: Olive Owner <owner@example.org>\r\n"
            f"To: ticket{ticket}@example.org\r\nSubject: Re: The router drops the connection\r\n"
            f"Message-ID: <shared-reply-{n}@mail.example.org>\r\n\r\n"
            f"[e{n}] reply number {n}\r\n").encode()


def test_pipe_beside_serve_share_the_thread_registry_and_the_rate_buckets(
        fake_discord, fake_redmine, tmp_path):
    forum = fake_discord.add_webhook(forum=True)
    config = write_config(
        tmp_path / "m.yaml", fake_redmine.url, fake_redmine.admin_key,
        discord={"api_base": fake_discord.api_base, "timeout": 5, "redmine_fields": True,
                 "channels": {"site-a": forum, "site-b": forum}, "triage": forum,
                 "retry": {"first_delay": 0.1, "max_delay": 0.5}},
        limits={"per_sender": {"mails": 3, "per_seconds": 600}})

    def pipe(raw: bytes, recipient: str):
        return run_mailgate("pipe", "--config", str(config), "--sender", "owner@example.org",
                            "--recipient", recipient, stdin=raw)

    with ServeProcess(config, free_port(), tmp_path / "serve.log") as server:
        created = pipe(fixture("site-a-new-ticket.eml"), "site-a@example.org")
        assert created.returncode == 0, created.stderr.decode()
        ticket = int(re.search(rb"#(\d+)", created.stderr).group(1))
        # serve delivers what the pipe queued: the ticket's thread.
        assert wait_until(lambda: fake_discord.threads(), 30, 0.1), server.log.read_text()

        with smtplib.SMTP("127.0.0.1", server.port) as smtp:
            smtp.sendmail("owner@example.org", [f"ticket{ticket}@example.org"], reply(2, ticket))
        assert pipe(reply(3, ticket), f"ticket{ticket}@example.org").returncode == 0

        # Three mails from owner@ through the pipe and serve: serve's bucket is empty too.
        with smtplib.SMTP("127.0.0.1", server.port) as smtp:
            smtp.ehlo()
            code, text = smtp.docmd("MAIL", "FROM:<owner@example.org>")
        assert (code, text[:5]) == (450, b"4.7.1")
        assert pipe(reply(4, ticket), f"ticket{ticket}@example.org").returncode == 75

        def delivered():
            return [m for t in fake_discord.threads() for m in t.messages]

        assert wait_until(lambda: len(delivered()) == 3, 30, 0.1), server.log.read_text()
        [thread] = fake_discord.threads()
        assert markers(thread.messages[1:]) == ["2", "3"]
        assert wait_until(lambda: {f["name"]: f.get("value") for f in fake_redmine.issue(
            ticket)["custom_fields"]}["discord-thread-id"] == thread.id, 30, 0.1)
        changes = [d for j in fake_redmine.journals(ticket) for d in j["details"]
                   if d["property"] == "cf" and d["new_value"] == thread.id]
        assert len(changes) == 1                 # the thread id written once
