"""Discord both ways (issue 14): what people write in a ticket's thread becomes a note,
planned as mail is planned, once, and never echoed back.

These run the gateway's own parts (``build_gateway``, ``drain`` as the one-shot
worker does) against the fake Redmine and the fake Discord, so each rule can be
driven precisely: who wrote, what the thread holds, what Discord answers.  The
round trip through ``serve`` against the real Redmine is tests/test_discord_serve.py.
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from mailgate.clients.redmine import RedmineClient
from mailgate.config import load_config
from mailgate.errors import ConfigError
from mailgate.gateway import Envelope
from support.configs import write_config
from tests.fakes.discord import FakeDiscord
from tests.helpers import without_marker

#: Sam Support's Discord account (discord.users maps it to the login "support").
SAM = {"user_id": "80351110224678912", "username": "sam.support", "global_name": "Sam"}
#: Olive Owner's, mapped to "owner".
OLIVE = {"user_id": "80351110224678913", "username": "olive", "global_name": "Olive O"}
#: Someone no login is mapped to.
DANA = {"user_id": "80351110224678999", "username": "dana_d", "global_name": "@Dana <D>"}


def discord_section(fake: FakeDiscord, **overrides) -> dict:
    forum = fake.add_webhook(forum=True)
    section = {"api_base": fake.api_base, "timeout": 2, "bot_token": fake.bot_token,
               "channels": {"site-a": forum, "site-b": forum}, "triage": forum,
               "redmine_fields": True, "read": True, "poll_interval": 0.1,
               "users": {SAM["user_id"]: "support", OLIVE["user_id"]: "owner"},
               "retry": {"first_delay": 0.05, "max_delay": 0.3}}
    return {**section, **overrides}


def config_for(tmp_path, redmine, fake, *, spool=None, name="mailgate.yaml", **discord):
    return write_config(tmp_path / name, redmine.url, redmine.admin_key,
                        spool=spool or {"path": str(tmp_path / "spool.db")},
                        discord=discord_section(fake, **discord), watch={"poll_interval": 0.1})


def settle(*gateways, rounds: int = 3) -> None:
    """Work every queue as the one-shot worker does, a few times (a thread's Redmine
    fields are written after its first post, and read after them)."""
    for _ in range(rounds):
        for gateway in gateways:
            gateway.drain()


def open_ticket(gateway, subject: str | None = None) -> int:
    """Olive mails site-a; the ticket's thread is opened and its fields set."""
    subject = subject or f"Printer on fire {uuid.uuid4().hex[:6]}"
    raw = (f"Authentication-Results: mx.example.org; dkim=pass header.d=example.org\r\n"
           f"From: Olive Owner <owner@example.org>\r\nTo: site-a@example.org\r\n"
           f"Subject: {subject}\r\nMessage-ID: <{uuid.uuid4().hex}@example.org>\r\n\r\n"
           "It started smoking after the update.\r\n").encode()
    gateway.receive(Envelope("owner@example.org", ("site-a@example.org",), raw, via="lmtp"))
    settle(gateway)
    client = RedmineClient(gateway.config.redmine.url, gateway.config.redmine.api_key)
    [issue] = [i for i in client.issues(project="site-a") if i.subject == subject]
    return issue.id


def thread_of(fake: FakeDiscord, ticket: int):
    [thread] = [t for t in fake.threads() if (t.name or "").startswith(f"#{ticket} ")]
    return thread


def notes(redmine, ticket: int):
    return [j for j in RedmineClient(redmine.url, redmine.admin_key).get_issue(ticket).journals
            if j.notes.strip()]


# --- the core: a reply becomes a note, planned as mail is ----------------------------------

def test_a_mapped_support_reply_is_their_answer_and_nothing_echoes(fake_redmine, fake_discord,
                                                                   gateways, tmp_path):
    gateway = gateways(config_for(tmp_path, fake_redmine, fake_discord))
    ticket = open_ticket(gateway)
    thread = thread_of(fake_discord, ticket)
    assert gateway.discord_reader.store.read(thread.id)["gone"] == 0
    posted = len(thread.messages)

    said = fake_discord.post_as_user(thread.id, "Turn it off and on again.", **SAM)
    settle(gateway)

    [note] = notes(fake_redmine, ticket)
    assert without_marker(note.notes) == "Turn it off and on again."
    assert note.user_name == "Sam Support"
    issue = RedmineClient(fake_redmine.url, fake_redmine.admin_key).get_issue(ticket)
    assert issue.status_name == "Answered"            # the workflow's default for support
    record = gateway.discord_reader.store.message(said["id"])
    assert record["state"] == "done"
    assert record["outcome"]["plan"] == {
        "step": "PostNote", "role": "other", "login": "support", "verified": True,
        "discord_user": SAM["user_id"], "as_user": "support", "action": "answer",
        "from_state": "open", "to_state": "answered"}
    # Nothing echoes: the watcher saw the note (it carries our marker) and left it alone.
    settle(gateway)
    assert len(thread.messages) == posted + 1
    assert gateway.watcher.store.counts()["done"] >= 1


def test_the_owners_commands_are_checked_by_the_workflow_as_in_mail(fake_redmine, fake_discord,
                                                                    gateways, tmp_path):
    gateway = gateways(config_for(tmp_path, fake_redmine, fake_discord))
    ticket = open_ticket(gateway)
    thread = thread_of(fake_discord, ticket)
    # Confirming a ticket that never had an answer: refused, a comment (as in mail).
    early = fake_discord.post_as_user(thread.id, "Status: solved\n\nAll good now.", **OLIVE)
    settle(gateway)
    outcome = gateway.discord_reader.store.message(early["id"])["outcome"]
    assert (outcome["plan"]["role"], outcome["action"], outcome["to_state"]) == (
        "owner", "comment", "open")
    assert outcome["refused"] == "cannot confirm: the ticket has not been answered yet"
    fake_discord.post_as_user(thread.id, "Please try a restart.", **SAM)
    late = fake_discord.post_as_user(thread.id, "Status: solved\n\nThat did it.", **OLIVE)
    settle(gateway)
    outcome = gateway.discord_reader.store.message(late["id"])["outcome"]
    assert (outcome["action"], outcome["from_state"], outcome["to_state"]) == (
        "confirm", "answered", "solved")
    assert [without_marker(n.notes) for n in notes(fake_redmine, ticket)] == [
        "All good now.", "Please try a restart.", "That did it."]


def test_an_unmapped_user_is_a_comment_by_the_gateway_naming_them(fake_redmine, fake_discord,
                                                                  gateways, tmp_path):
    gateway = gateways(config_for(tmp_path, fake_redmine, fake_discord))
    ticket = open_ticket(gateway)
    thread = thread_of(fake_discord, ticket)
    fake_discord.add_user(**SAM)
    fake_discord.post_as_user(thread.id, "Status: solved\n\nSame here <@80351110224678912>!",
                              **DANA)
    settle(gateway)
    [note] = notes(fake_redmine, ticket)
    assert note.user_name == "Mail Gateway"
    # Their display name, never a mention (no "@"), and no command taken from them.
    assert without_marker(note.notes) == f"From: Dana D <discord:{DANA['user_id']}>\n\n" \
                                         "Same here Sam!"
    issue = RedmineClient(fake_redmine.url, fake_redmine.admin_key).get_issue(ticket)
    assert issue.status_name == "Open"


def test_unmapped_users_can_be_ignored(fake_redmine, fake_discord, gateways, tmp_path):
    gateway = gateways(config_for(tmp_path, fake_redmine, fake_discord, unmapped="ignore"))
    ticket = open_ticket(gateway)
    said = fake_discord.post_as_user(thread_of(fake_discord, ticket).id, "Me too.", **DANA)
    settle(gateway)
    assert notes(fake_redmine, ticket) == []
    assert gateway.discord_reader.store.message(said["id"])["outcome"]["kind"] == "ignored"


def test_files_become_attachments_within_the_mail_limits(fake_redmine, fake_discord, gateways,
                                                         tmp_path):
    config = config_for(tmp_path, fake_redmine, fake_discord)
    config.write_text(config.read_text() + "attachments: {max_size: 1000}\n")
    gateway = gateways(config)
    ticket = open_ticket(gateway)
    fake_discord.post_as_user(thread_of(fake_discord, ticket).id, "The log and a video.",
                              files=(("log.txt", b"E: fuser", "text/plain"),
                                     ("fire.mp4", b"v" * 5000, "video/mp4"),
                                     ("fix.exe", b"MZ", "application/octet-stream")), **SAM)
    settle(gateway)
    [note] = notes(fake_redmine, ticket)
    assert without_marker(note.notes) == (
        "The log and a video.\n\n(not attached: fire.mp4 (larger than 1000 bytes),"
        " fix.exe (blocked type))")
    issue = fake_redmine.issue(ticket)
    assert [(a["filename"], a["filesize"]) for a in issue["attachments"]] == [("log.txt", 8)]
    # The big file was never fetched: its size said enough.
    assert [p.path.rsplit("/", 1)[-1] for p in fake_discord.posts
            if "/attachments/" in p.path] == ["log.txt"]


# --- never our own words ---------------------------------------------------------------------

def test_our_own_posts_and_other_bots_are_never_read_as_anyones(fake_redmine, fake_discord,
                                                                gateways, tmp_path):
    gateway = gateways(config_for(tmp_path, fake_redmine, fake_discord))
    ticket = open_ticket(gateway)
    thread = thread_of(fake_discord, ticket)
    # A note typed in Redmine: a second webhook post in the thread.  (A second later: the
    # watcher reads an issue again only when its updated_on, to the second, moved on.)
    time.sleep(1.1)
    client = RedmineClient(fake_redmine.url, fake_redmine.key("support"))
    client.add_note(ticket, "Typed in Redmine.")
    settle(gateway)
    assert len(thread.messages) == 2 and all(m.get("webhook_id") for m in thread.messages)
    with fake_discord._lock:        # a bot that is not ours, writing in the thread
        bot = {"id": "55555", "username": "another-bot", "bot": True}
        fake_discord._new_message(thread, {"content": "beep"}, bot, None)
    settle(gateway)
    assert [without_marker(n.notes) for n in notes(fake_redmine, ticket)] == [
        "Typed in Redmine."]
    assert gateway.discord_reader.store.counts()["done"] == 0


def test_in_bot_mode_the_bots_own_posts_are_not_read(fake_redmine, fake_discord, gateways,
                                                     tmp_path):
    channel = fake_discord.add_channel("text")
    config = config_for(tmp_path, fake_redmine, fake_discord, mode="bot",
                        channels={"site-a": channel}, triage=channel)
    gateway = gateways(config)
    ticket = open_ticket(gateway)
    thread = thread_of(fake_discord, ticket)
    assert thread.messages[0]["author"]["id"] == fake_discord.bot_user["id"]
    fake_discord.post_as_user(thread.id, "Turn it off and on again.", **SAM)
    settle(gateway)
    assert [without_marker(n.notes) for n in notes(fake_redmine, ticket)] == [
        "Turn it off and on again."]
    assert len(thread.messages) == 2


# --- configuration ---------------------------------------------------------------------------

@pytest.mark.parametrize("change, key", [
    ({"bot_token": None}, "discord.read"),
    ({"redmine_fields": False}, "discord.read"),
    ({"unmapped": "reply"}, "discord.unmapped"),
    ({"users": {"sam": "support"}}, "discord.users.sam"),
    ({"users": {"80351110224678912": ""}}, "discord.users.80351110224678912"),
    ({"reads": True}, "discord.reads"),
])
def test_a_reading_mistake_names_its_key(fake_discord, tmp_path, change, key):
    section = discord_section(fake_discord, **change)
    config = write_config(tmp_path / "m.yaml", "http://127.0.0.1:9", "k", discord=section,
                          watch={"poll_interval": 1})
    with pytest.raises(ConfigError, match=f"^{key}"):
        load_config(config, environ={})


def test_reading_needs_the_watcher_and_a_gateway_user_for_comments(fake_discord, tmp_path):
    config = write_config(tmp_path / "m.yaml", "http://127.0.0.1:9", "k",
                          discord=discord_section(fake_discord))
    with pytest.raises(ConfigError, match="^discord.read: needs a watch: section"):
        load_config(config, environ={})
    config = write_config(tmp_path / "m.yaml", "http://127.0.0.1:9", "k",
                          discord=discord_section(fake_discord), watch={"poll_interval": 1},
                          redmine={"gateway_user": None}, unknown_senders="reject")
    with pytest.raises(ConfigError, match="^discord.unmapped: 'comment' needs"):
        load_config(config, environ={})


# --- the discord-thread field is the switch --------------------------------------------------

def set_field(redmine, ticket: int, value: str) -> None:
    """Someone sets or clears the ticket's discord-thread field in Redmine.  A second
    after the ticket's last change: the watcher reads an issue again only when its
    updated_on (to the second) has moved on."""
    time.sleep(1.1)
    client = RedmineClient(redmine.url, redmine.admin_key)
    client.set_custom_field(ticket, "discord-thread", value)


def test_clearing_the_field_stops_posting_and_reading_and_setting_it_resumes(
        fake_redmine, fake_discord, gateways, tmp_path):
    gateway = gateways(config_for(tmp_path, fake_redmine, fake_discord))
    ticket = open_ticket(gateway)
    thread = thread_of(fake_discord, ticket)
    set_field(fake_redmine, ticket, "0")
    settle(gateway)
    assert gateway.fanout.queue.switched_off(ticket)

    # Nothing is read from the thread, nothing is posted to it.
    fake_discord.post_as_user(thread.id, "Said while it was off.", **SAM)
    time.sleep(1.1)
    RedmineClient(fake_redmine.url, fake_redmine.key("support")).add_note(ticket, "Typed.")
    settle(gateway)
    assert [without_marker(n.notes) for n in notes(fake_redmine, ticket)] == ["Typed."]
    assert len(thread.messages) == 2            # the new ticket, and Sam's message
    assert gateway.fanout.stats()["run_switched_off"] == 1

    # Set again: what is said from now on is read; what was said meanwhile stays there.
    set_field(fake_redmine, ticket, "1")
    settle(gateway)
    time.sleep(0.05)
    fake_discord.post_as_user(thread.id, "Back on.", **SAM)
    settle(gateway)
    assert [without_marker(n.notes) for n in notes(fake_redmine, ticket)] == [
        "Typed.", "Back on."]


def test_setting_the_field_on_a_ticket_without_a_thread_opens_one(fake_redmine, fake_discord,
                                                                 gateways, tmp_path):
    gateway = gateways(config_for(tmp_path, fake_redmine, fake_discord))
    settle(gateway)             # the watcher's first look: what Redmine holds is history
    client = RedmineClient(fake_redmine.url, fake_redmine.admin_key)
    ticket = client.create_issue("site-a", "Typed in the web UI", "Please look.",
                                 as_user="owner")
    set_field(fake_redmine, ticket, "1")
    settle(gateway)

    thread = thread_of(fake_discord, ticket)
    [opening] = thread.messages
    assert opening["content"].startswith(
        f"**#{ticket}** followed in Discord: Typed in the web UI\nfrom Redmine Admin")
    assert client.get_issue(ticket).custom_fields["discord-thread-id"] == thread.id
    fake_discord.post_as_user(thread.id, "On it.", **SAM)
    settle(gateway)
    assert [without_marker(n.notes) for n in notes(fake_redmine, ticket)] == ["On it."]
    # Setting it again (the fields mailgate wrote with the thread) opens no second one.
    settle(gateway)
    assert len([t for t in fake_discord.threads() if t.name.startswith(f"#{ticket} ")]) == 1


# --- exactly once, whatever happens ----------------------------------------------------------

def until(condition, *gateways, timeout: float = 20.0):
    """Work the gateways' queues until ``condition()`` holds."""
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline, "timed out"
        for gateway in gateways:
            gateway.drain()
        time.sleep(0.05)
    return found


def test_a_host_that_dies_after_writing_the_note_never_makes_a_second(
        fake_redmine, fake_discord, gateways, tmp_path):
    config = config_for(tmp_path, fake_redmine, fake_discord)
    first = gateways(config)
    ticket = open_ticket(first)
    said = fake_discord.post_as_user(thread_of(fake_discord, ticket).id, "Turn it off.", **SAM)
    reader = first.discord_reader
    reader.store.sync(time.time())
    reader.store.all_due()
    assert reader.runner.run_once().result == 1          # read: the message is queued
    # It is applied in Redmine, and the host dies before recording so; its lease runs out.
    item = reader.store.claim(time.time(), lease=60)
    reader.apply(item)
    reader.store.defer(item.id, "the host died", until=0, failed=False)
    first.close()

    second = gateways(config)
    settle(second)
    assert [without_marker(n.notes) for n in notes(fake_redmine, ticket)] == ["Turn it off."]
    assert second.discord_reader.store.message(said["id"])["outcome"]["kind"] == "duplicate"
    # The thread read again from the start queues nothing new: the message id is the key.
    assert second.discord_reader.store.add_page(
        thread_of(fake_discord, ticket).id, ticket, [said], int(said["id"]), time.time()) == 0


def test_two_hosts_on_one_postgresql_store_write_each_message_once(
        fake_redmine, fake_discord, gateways, pg_url, tmp_path):
    hosts = [gateways(config_for(tmp_path, fake_redmine, fake_discord, spool={"url": pg_url},
                                 name=f"host{n}.yaml")) for n in (1, 2)]
    ticket = open_ticket(hosts[0])
    thread = thread_of(fake_discord, ticket)
    said = [fake_discord.post_as_user(thread.id, f"Message {n}.", **(SAM if n % 2 else DANA))
            for n in range(6)]
    start = threading.Barrier(2)

    def work(gateway):
        start.wait()
        for _ in range(4):
            gateway.drain()

    threads = [threading.Thread(target=work, args=(host,)) for host in hosts]
    for running in threads:
        running.start()
    for running in threads:
        running.join(60)
    settle(*hosts)
    texts = [without_marker(n.notes).rpartition("\n\n")[2] for n in notes(fake_redmine, ticket)]
    assert texts == [f"Message {n}." for n in range(6)]          # once each, in order
    assert {hosts[1].discord_reader.store.message(m["id"])["state"] for m in said} == {"done"}


def test_a_429_storm_and_an_outage_on_reading_lose_nothing(fake_redmine, fake_discord,
                                                           gateways, tmp_path):
    gateway = gateways(config_for(tmp_path, fake_redmine, fake_discord))
    ticket = open_ticket(gateway)
    thread = thread_of(fake_discord, ticket)
    fake_discord.post_as_user(thread.id, "Before the storm.", **SAM)
    fake_discord.rate_limit_next(8, retry_after=0.1, method="GET", path="/messages")
    fake_discord.rate_limit_next(2, retry_after=0.1, is_global=True, method="GET")
    until(lambda: notes(fake_redmine, ticket), gateway)
    fake_discord.down = True
    fake_discord.post_as_user(thread.id, "While Discord was down.", **SAM)
    for _ in range(3):
        gateway.drain()
    assert gateway.discord_reader.store.read(thread.id)["failures"] >= 1
    fake_discord.down = False
    until(lambda: len(notes(fake_redmine, ticket)) == 2, gateway)
    settle(gateway)
    assert [without_marker(n.notes) for n in notes(fake_redmine, ticket)] == [
        "Before the storm.", "While Discord was down."]
    reads = [p for p in fake_discord.posts if p.method == "GET" and "/messages" in p.path]
    assert sum(1 for p in reads if p.status == 429) == 10
    assert gateway.discord_reader.stats()["run_waits"] >= 1


def test_without_the_message_content_intent_nothing_is_lost(fake_redmine, fake_discord,
                                                            gateways, tmp_path, caplog):
    gateway = gateways(config_for(tmp_path, fake_redmine, fake_discord))
    ticket = open_ticket(gateway)
    thread = thread_of(fake_discord, ticket)
    fake_discord.message_content_intent = False
    fake_discord.post_as_user(thread.id, "Can you hear me?", **SAM)
    settle(gateway)
    assert notes(fake_redmine, ticket) == []
    assert "MESSAGE CONTENT intent" in gateway.discord_reader.store.read(thread.id)["last_error"]
    fake_discord.message_content_intent = True          # the operator turns it on
    until(lambda: notes(fake_redmine, ticket), gateway)
    assert [without_marker(n.notes) for n in notes(fake_redmine, ticket)] == [
        "Can you hear me?"]


def test_an_edit_after_reading_is_not_a_second_note_and_a_message_deleted_before_is_none(
        fake_redmine, fake_discord, gateways, tmp_path):
    gateway = gateways(config_for(tmp_path, fake_redmine, fake_discord))
    ticket = open_ticket(gateway)
    thread = thread_of(fake_discord, ticket)
    kept = fake_discord.post_as_user(thread.id, "Turn it off.", **SAM)
    settle(gateway)
    fake_discord.edit_message(thread.id, kept["id"], "Turn it off and on again.")
    gone = fake_discord.post_as_user(thread.id, "Oops, wrong ticket.", **SAM)
    fake_discord.delete_message(thread.id, gone["id"])
    settle(gateway)
    assert [without_marker(n.notes) for n in notes(fake_redmine, ticket)] == ["Turn it off."]
    assert gateway.discord_reader.store.message(gone["id"]) is None


def test_a_deleted_thread_is_no_longer_read_and_its_replacement_is(fake_redmine, fake_discord,
                                                                   gateways, tmp_path):
    gateway = gateways(config_for(tmp_path, fake_redmine, fake_discord))
    ticket = open_ticket(gateway)
    old = thread_of(fake_discord, ticket)
    fake_discord.delete_thread(old.id)
    settle(gateway)
    assert gateway.discord_reader.store.read(old.id)["gone"] == 1
    reads = len(fake_discord.posts)
    settle(gateway)
    assert not [p for p in fake_discord.posts[reads:] if old.id in p.path]
    # The ticket's next post opens a new thread, which is read.
    time.sleep(1.1)
    RedmineClient(fake_redmine.url, fake_redmine.key("support")).add_note(ticket, "Typed.")
    settle(gateway)
    new = thread_of(fake_discord, ticket)
    fake_discord.post_as_user(new.id, "Found the new thread.", **SAM)
    settle(gateway)
    assert [without_marker(n.notes) for n in notes(fake_redmine, ticket)] == [
        "Typed.", "Found the new thread."]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_the_reader_shows_in_metrics_and_healthz_says_when_it_stopped(fake_redmine, fake_discord,
                                                                      tmp_path):
    import requests

    from tests.load import wait_until
    from tests.servers import RunningGateway

    config = config_for(tmp_path, fake_redmine, fake_discord)
    with RunningGateway(config, lmtp=False, metrics=True) as server:
        base = f"http://127.0.0.1:{server.metrics_port}"
        reader = server.gateway.discord_reader
        assert wait_until(lambda: reader.runner.alive, 10, 0.1)
        metrics = requests.get(f"{base}/metrics", timeout=5).text
        assert 'mailgate_runner_up{queue="discord-read"} 1.0' in metrics
        assert 'mailgate_queue_items{kind="threads",queue="discord-read"}' in metrics
        assert requests.get(f"{base}/healthz", timeout=5).text == "ok\n"

        def gone(*args):
            raise SystemExit("the reader's thread ends")     # past the runner's guard

        reader.store.claim = gone
        assert wait_until(lambda: not reader.runner.alive, 10, 0.1)
        answer = requests.get(f"{base}/healthz", timeout=5)
        assert (answer.status_code, answer.text) == (503, "discord-read runner is not running\n")
