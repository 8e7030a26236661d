"""Discord both ways through ``serve`` (issue 14, point 6): the real Redmine, the fake Discord.

The story: Olive mails site-b; the ticket's thread opens in Discord with the
mail.  Sam Support answers in the thread; the answer is a note in Redmine,
written as Sam, and the ticket is Answered, as if Sam had mailed it.  Dana,
whom no login is mapped to, writes too: a note by the gateway's user naming
her.  Nothing comes back to Discord.  A restart, a second host, a 429 storm,
Discord down: each message is one note.  Clearing the ticket's discord-thread
field in Redmine stops it all.

The real Redmine is shared with other tests running at the same time: every
test has its own ticket (its own subject) and counts only its notes.  Only
site-b has a Discord channel here: the watcher tells the thread of any ticket
written on meanwhile, and with ``redmine_fields`` the fan-out sets the thread's
fields on it; site-a is where the other tests' tickets are.
"""

from __future__ import annotations

import os
import smtplib
import time
import uuid

import pytest

from mailgate.clients.redmine import RedmineClient
from support.configs import write_config
from tests.fakes.discord import FakeDiscord
from tests.helpers import without_marker
from tests.load import wait_until
from tests.servers import RunningGateway
from tests.test_discord_threads import DANA, SAM, discord_section

#: The outage of the fast outage test; the slow one has a real minute.
OUTAGE_SECONDS = float(os.environ.get("MAILGATE_TEST_OUTAGE_SECONDS", "3"))


def waited(found, timeout: float = 30.0, step: float = 0.1):
    """What ``found()`` gives once it gives something (None after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = found()
        if value:
            return value
        time.sleep(step)
    return None


def serve_config(tmp_path, redmine, fake: FakeDiscord, *, spool=None, name="mailgate.yaml",
                 hook: str | None = None):
    """``hook``: the forum's webhook, when hosts share one (a second host, a restart)."""
    section = discord_section(fake, poll_interval=0.2, timeout=5,
                              retry={"first_delay": 0.1, "max_delay": 1.0})
    section.update(channels={"site-b": hook or fake.add_webhook(forum=True)}, triage=None)
    return write_config(tmp_path / name, redmine.url, redmine.admin_key,
                        spool=spool or {"path": str(tmp_path / "spool.db")},
                        discord=section, watch={"poll_interval": 0.3})


def mail_ticket(server: RunningGateway, redmine) -> tuple[int, str]:
    """Olive mails site-b over SMTP; the ticket."""
    subject = f"Printer on fire {uuid.uuid4().hex[:8]}"
    raw = (f"Authentication-Results: mx.example.org; dkim=pass header.d=example.org\r\n"
           f"From: Olive Owner <owner@example.org>\r\nTo: site-b@example.org\r\n"
           f"Subject: {subject}\r\nMessage-ID: <{uuid.uuid4().hex}@example.org>\r\n\r\n"
           "It started smoking after the update.\r\n").encode()
    with smtplib.SMTP("127.0.0.1", server.smtp_port) as smtp:
        smtp.sendmail("owner@example.org", ["site-b@example.org"], raw)
    client = RedmineClient(redmine.url, redmine.admin_key)
    ticket = waited(lambda: next((i.id for i in client.issues(project="site-b")
                                  if i.subject == subject), None), 30, 0.2)
    assert ticket, "the mail made no ticket"
    return ticket, subject


def tracked_thread(server: RunningGateway, fake: FakeDiscord, ticket: int):
    """The ticket's thread, once its fields are in Redmine and the reader has read it."""
    thread = waited(lambda: next((t for t in fake.threads()
                                  if (t.name or "").startswith(f"#{ticket} ")), None))
    assert thread, "no thread for the ticket"
    store = server.gateway.discord_reader.store
    assert wait_until(lambda: (store.read(thread.id) or {}).get("polled_at"), 30, 0.1)
    return thread


def notes(redmine, ticket: int):
    return [j for j in RedmineClient(redmine.url, redmine.admin_key).get_issue(ticket).journals
            if j.notes.strip()]


def texts(redmine, ticket: int) -> list[str]:
    return [without_marker(n.notes) for n in notes(redmine, ticket)]


def test_a_reply_in_the_thread_is_a_note_by_its_writer_and_nothing_echoes(
        real_redmine, fake_discord, tmp_path):
    config = serve_config(tmp_path, real_redmine, fake_discord)
    with RunningGateway(config, lmtp=False) as server:
        gateway = server.gateway
        assert gateway.discord_reader.runner.alive
        ticket, subject = mail_ticket(server, real_redmine)
        thread = tracked_thread(server, fake_discord, ticket)
        [opened] = thread.messages                  # the mail, as a forum post
        assert opened["content"].startswith(f"**New ticket #{ticket}** in site-b: {subject}")

        # Each reply a second after the ticket's last change: the watcher reads an issue
        # again only when its updated_on, to the second, has moved on (docs/reporters.md).
        told = gateway.watcher.store.journal
        for text, person in (("Turn it off and on again.", SAM), ("Same problem here.", DANA)):
            time.sleep(1.1)
            fake_discord.post_as_user(thread.id, text, **person)
            assert wait_until(lambda: any(text in n.notes for n in notes(real_redmine, ticket)),
                              30, 0.2)
            # The watcher sees the note, and leaves it alone: Discord hears nothing back.
            [note] = [n for n in notes(real_redmine, ticket) if text in n.notes]
            assert wait_until(lambda: (told(note.id) or {}).get("state") == "done", 30, 0.2)
            assert told(note.id)["outcome"]["discord"] is False
        time.sleep(1.0)
        assert [m.get("webhook_id") is not None for m in thread.messages] == [
            True, False, False]

    sam, dana = notes(real_redmine, ticket)
    assert (sam.user_name, without_marker(sam.notes)) == (
        "Sam Support", "Turn it off and on again.")
    assert (dana.user_name, without_marker(dana.notes)) == (
        "Mail Gateway", f"From: Dana D <discord:{DANA['user_id']}>\n\nSame problem here.")
    issue = RedmineClient(real_redmine.url, real_redmine.admin_key).get_issue(ticket)
    assert issue.status_name == "Answered"           # Sam's answer, as the workflow says
    assert issue.custom_fields["discord-thread-id"] == thread.id


def test_a_restart_and_a_second_host_on_postgresql_write_each_message_once(
        real_redmine, fake_discord, pg_url, tmp_path):
    hook = fake_discord.add_webhook(forum=True)
    configs = [serve_config(tmp_path, real_redmine, fake_discord, spool={"url": pg_url},
                            name=f"host{n}.yaml", hook=hook) for n in (1, 2)]
    with RunningGateway(configs[0], lmtp=False) as server:
        ticket, _ = mail_ticket(server, real_redmine)
        thread = tracked_thread(server, fake_discord, ticket)
        for n in range(3):
            fake_discord.post_as_user(thread.id, f"Message {n}.", **SAM)
        assert wait_until(lambda: len(notes(real_redmine, ticket)) == 3, 30, 0.2)
    # Said while no gateway ran; then host 1 comes back, and host 2 starts beside it.
    for n in range(3, 6):
        fake_discord.post_as_user(thread.id, f"Message {n}.", **(SAM if n % 2 else DANA))
    with RunningGateway(configs[0], lmtp=False) as one, \
            RunningGateway(configs[1], lmtp=False) as two:
        assert wait_until(lambda: len(notes(real_redmine, ticket)) >= 6, 30, 0.2)
        time.sleep(2.0)                              # a few more reads by both hosts
        stats = [s.gateway.discord_reader.stats() for s in (one, two)]
    assert [t.rpartition("\n\n")[2] for t in texts(real_redmine, ticket)] == [
        f"Message {n}." for n in range(6)]
    assert stats[0]["done"] == stats[1]["done"] == 6 and stats[0]["dead"] == 0


@pytest.mark.parametrize("seconds", [OUTAGE_SECONDS, pytest.param(60.0, marks=pytest.mark.slow)])
def test_a_429_storm_and_discord_down_lose_nothing(real_redmine, fake_discord, tmp_path,
                                                   request, seconds):
    if seconds >= 60 and "slow" not in (request.config.option.markexpr or "") and \
            not os.environ.get("MAILGATE_SLOW_TESTS"):
        pytest.skip("a real minute: run with -m slow or MAILGATE_SLOW_TESTS=1")
    config = serve_config(tmp_path, real_redmine, fake_discord)
    said = []
    with RunningGateway(config, lmtp=False) as server:
        ticket, _ = mail_ticket(server, real_redmine)
        thread = tracked_thread(server, fake_discord, ticket)
        fake_discord.rate_limit_next(15, retry_after=0.2, method="GET", path="/messages")
        fake_discord.rate_limit_next(3, retry_after=0.2, is_global=True, method="GET")
        for n in range(3):
            said.append(fake_discord.post_as_user(thread.id, f"Storm {n}.", **SAM))
        assert wait_until(lambda: len(notes(real_redmine, ticket)) == 3, 30, 0.2)

        # Down: first 503s, then refused connections (open ones cut too); people keep
        # writing meanwhile.
        fake_discord.down = True
        started, n = time.monotonic(), 0
        while (elapsed := time.monotonic() - started) < seconds:
            if elapsed > seconds / 2 and fake_discord.running:
                fake_discord.stop()
                fake_discord.down = False
            said.append(fake_discord.post_as_user(thread.id, f"Outage {n}.", **SAM))
            n += 1
            time.sleep(seconds / 10)
        assert len(notes(real_redmine, ticket)) == 3
        fake_discord.start()
        back = time.monotonic()
        assert wait_until(lambda: len(notes(real_redmine, ticket)) == len(said), 60, 0.2)
        caught_up = time.monotonic() - back
        time.sleep(1.0)
        store = server.gateway.discord_reader.store
        assert {store.message(m["id"])["state"] for m in said} == {"done"}
        stats = server.gateway.discord_reader.stats()
    assert [t for t in texts(real_redmine, ticket)] == [m["content"] for m in said]
    limited = [p for p in fake_discord.posts if p.status == 429 and p.method == "GET"]
    assert len(limited) == 18 and stats["dead"] == 0
    print(f"\nreading: {len(said)} messages, each one note; 18 answered 429; a {seconds:.0f} s"
          f" outage caught up {caught_up:.1f} s after Discord came back")


def test_clearing_the_field_stops_the_sync(real_redmine, fake_discord, tmp_path):
    config = serve_config(tmp_path, real_redmine, fake_discord)
    admin = RedmineClient(real_redmine.url, real_redmine.admin_key)
    with RunningGateway(config, lmtp=False) as server:
        gateway = server.gateway
        ticket, _ = mail_ticket(server, real_redmine)
        thread = tracked_thread(server, fake_discord, ticket)
        time.sleep(1.1)                 # the field's change a second after the last one
        admin.set_custom_field(ticket, "discord-thread", False)
        assert wait_until(lambda: gateway.fanout.queue.switched_off(ticket), 30, 0.1)

        fake_discord.post_as_user(thread.id, "Is anyone reading this?", **SAM)
        time.sleep(1.1)
        journal = RedmineClient(real_redmine.url, real_redmine.key("support")).add_note(
            ticket, "Typed in Redmine after the thread was switched off.").journal_id
        assert wait_until(lambda: (gateway.watcher.store.journal(journal) or {}).get(
            "state") == "done", 30, 0.1)
        time.sleep(1.0)                 # five reads' worth of the reader's interval
    assert texts(real_redmine, ticket) == [
        "Typed in Redmine after the thread was switched off."]
    assert len(thread.messages) == 2    # the mail's post, and the message nobody read
    assert gateway.discord_reader.store.read(thread.id)["polled_at"] < time.time() - 1.0
