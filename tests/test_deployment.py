"""The full deployment: one configuration with every feature on, fed every kind of mail
in fixtures/mail through every source, on SQLite and on PostgreSQL.

Every feature works alone; a deployment turns them all on at once, and that is
where the first round's defects were (Discord + an out-of-office reply crashed
the worker).  Here: the Discord fan-out (the fake Discord), notices (a real
SMTP relay on 127.0.0.1), per-sender limits, reminders, trust (our MTA's
Authentication-Results), unknown senders accepted, the Redmine watcher with
answers mailed to reporters who are not Redmine users, the Discord threads read
back into Redmine (a mapped and an unmapped Discord user), through SMTP, LMTP,
the pipe (a child process beside `serve`, as an MTA runs it), replay, and an
IMAP mailbox on the real Dovecot that `serve` watches with IDLE.

Invariants: no traceback anywhere; every mail's outcome is the one the
single-feature tests give it (OUTCOMES); no dead letter; each ticket has one
Discord thread; the refused command is told to its sender; a note typed in
Redmine reaches the stranger who asked, once, and the ticket's thread; a reply
typed in a ticket's Discord thread is one note, by its writer, and never echoes.
A new feature adds its mail kinds to fixtures/mail and OUTCOMES, and its
settings to ``deployment_config``.
"""

from __future__ import annotations

import logging
import smtplib
from pathlib import Path

import pytest
import requests

from mailgate.clients.redmine import RedmineClient
from mailgate.mail.message import parse_mail
from support.configs import write_config
from tests.helpers import MAIL, run_mailgate, without_marker
from tests.load import wait_until
from tests.servers import RunningGateway
from tests.test_discord_threads import DANA, SAM
from tests.test_notify import relay  # noqa: F401  (the aiosmtpd relay fixture)

#: fixture -> what becomes of it: an outcome kind of the worker, or "refused" at intake
#: (a 5xx while the sender is connected, a bounce exit code from the pipe).
OUTCOMES = {
    "admin-sets-invalid.eml": "applied",
    "bounce-dsn.eml": "ignored",
    "empty.eml": "refused",
    "forged-owner-confirms.eml": "applied",          # a comment by the gateway user
    "garbage.eml": "refused",
    "html-only-answer.eml": "applied",
    "latin1-owner-reply.eml": "applied",
    "list-mail.eml": "ignored",
    "neighbour-opens-ticket.eml": "created",          # the gateway user writes, records them
    "neighbour-writes-to-triage.eml": "created",      # triage makes them an account
    "out-of-office-reply.eml": "ignored",
    "outlook-reply-with-suppress-header.eml": "applied",
    "own-loop.eml": "ignored",
    "owner-confirms-unanswered.eml": "applied",      # its command refused: a notice
    "owner-confirms.eml": "applied",
    "owner-reply-long-log.eml": "applied",           # cut, the whole text attached
    "owner-reply-quoting-history.eml": "applied",
    "owner-reply-with-attachments.eml": "applied",
    "owner-reply-with-blocked-attachment.eml": "applied",
    "owner-reply-with-hostile-markup.eml": "applied",  # posted as text (issue 18)
    "owner-reply.eml": "applied",
    "redmine-notification-reply.eml": "applied",
    "site-a-new-ticket.eml": "created",
    "site-a-new-ticket-long-subject.eml": "created",  # subject cut to Redmine's 255
    "site-a-subject-tag-reply.eml": "applied",
    "support-answer.eml": "applied",
    "support-requests-info.eml": "applied",
    "unknown-address.eml": "refused",
    "unknown-sender-reply.eml": "applied",           # accepted: the gateway user writes it
}
SOURCES = ("smtp", "lmtp", "pipe", "replay", "imap")
#: Our MTA's hostname: own-loop.eml carries it as X-Loop.
HOSTNAME = "mailgate.example.org"
#: A reporter who is not a Redmine user (the ticket's reporter-email).
STRANGER = "neighbour@elsewhere.test"


def test_every_fixture_has_an_expected_outcome():
    assert sorted(OUTCOMES) == sorted(p.name for p in MAIL.glob("*.eml"))


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request, tmp_path) -> dict:
    if request.param == "postgres":
        return {"url": request.getfixturevalue("pg_url")}
    return {"path": str(tmp_path / "spool.db")}


def deployment_config(tmp_path: Path, redmine, discord, relay_port: int, spool: dict,
                      mailbox=None) -> Path:
    """Every feature on."""
    imap = {"imap": {"mailboxes": [mailbox.settings(tmp_path)]}} if mailbox else {}
    forum = discord.add_webhook(forum=True)
    return write_config(
        tmp_path / "mailgate.yaml", redmine.url, redmine.admin_key,
        server={"hostname": HOSTNAME, "max_message_size": 2_000_000, "max_recipients": 5},
        spool={**spool, "retry_first_delay": 0.2, "retry_max_delay": 1},
        discord={"api_base": discord.api_base, "timeout": 2,
                 "channels": {"site-a": forum, "site-b": discord.add_webhook(forum=True)},
                 "triage": discord.add_webhook(forum=True),
                 "retry": {"first_delay": 0.1, "max_delay": 0.5},
                 # The threads read back into Redmine (issue 14).
                 "bot_token": discord.bot_token, "redmine_fields": True, "read": True,
                 "poll_interval": 0.2, "users": {SAM["user_id"]: "support"}},
        notify={"relay": f"127.0.0.1:{relay_port}", "from": "mailgate@example.org"},
        limits={"per_sender": {"mails": 1000, "per_seconds": 60}},
        sweep={"remind_after_hours": 24, "interval": 3600},
        # Notes cut (owner-reply-long-log.eml), Redmine's upload limit below ours.
        attachments={"max_size": 1_000_000, "max_note_chars": 3_000},
        redmine={"reporter_field": "reporter-email", "participants_field": "participants",
                 "text_formatting": "textile", "max_attachment_size": 900_000},
        triage={"unknown_senders": "create"},
        watch={"poll_interval": 0.3},
        answers={"max_per_hour": 20},
        **imap,
    )


def from_discord(redmine, ticket: int) -> list[tuple[str, str]]:
    """The notes on the conversation ``ticket`` by anyone but its owner, whose mails made
    the others: those from its Discord thread, as (writer, text)."""
    return [(j["user"]["name"], without_marker(j["notes"])) for j in redmine.journals(ticket)
            if j["notes"].strip() and j["user"]["name"] != "Olive Owner"]


class Tickets:
    """A fresh ticket per (fixture, source), and the fixture rewritten to reach it."""

    def __init__(self, client: RedmineClient):
        self.client = client
        #: Message-ID of each mail sent -> "source-fixture".
        self.keys: dict[str, str] = {}

    def mail_for(self, name: str, source: str) -> bytes:
        raw = (MAIL / name).read_bytes()
        if not raw.strip() or b"\n\n" not in raw.replace(b"\r\n", b"\n"):
            return raw                      # empty and garbage: nothing to rewrite
        ticket = self.client.create_issue("site-a", f"{name} via {source}", "Deployment test.",
                                          as_user="owner")
        for old, new in ((b"ticket1@", f"ticket{ticket}@"), (b"#1]", f"#{ticket}]"),
                         (b"redmine.issue-1.", f"redmine.issue-{ticket}."),
                         # The same mail through two sources is two mails here.
                         (b"Message-ID: <", f"Message-ID: <{source}-")):
            raw = raw.replace(old, new.encode())
        self.keys[parse_mail(raw, headers_only=True).message_id] = f"{source}-{name}"
        return raw

    def key_of(self, spooled) -> str:
        return self.keys[parse_mail(spooled.raw, headers_only=True).message_id]


def imap_said(gateway, config: Path, mailbox, uids: dict) -> dict[str, str]:
    """What the IMAP source said of each mail: its receipt's outcome.  Dovecot itself
    refuses to store an empty mail (APPEND: "Can't save a zero byte message")."""
    source = gateway.config.imap.mailboxes[0].source
    uidvalidity = mailbox.uidvalidity()
    said = {}
    for name, uid in uids.items():
        outcome = gateway.spool.receipts.by_uid(source, uidvalidity, uid) if uid else "rejected"
        said[f"imap-{name}"] = "refused" if outcome == "rejected" else "accepted"
    return said


def send_smtp(port: int, raw: bytes, lmtp: bool) -> str:
    client = smtplib.LMTP if lmtp else smtplib.SMTP
    # On the wire every line ends in CRLF (smtplib leaves bytes as they are).
    raw = raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    try:
        with client("127.0.0.1", port) as smtp:
            smtp.sendmail("owner@example.org", [_recipient(raw)], raw)
    except (smtplib.SMTPRecipientsRefused, smtplib.SMTPDataError):
        return "refused"
    return "accepted"


def _recipient(raw: bytes) -> str:
    for line in raw.replace(b"\r\n", b"\n").split(b"\n"):
        if line.lower().startswith(b"to:"):
            return line.decode().rpartition("<")[2].strip(" >\n") if b"<" in line \
                else line[3:].decode().strip()
    return "ticket1@example.org"


def test_everything_on_every_source(fake_redmine, fake_discord, relay, backend,  # noqa: F811
                                    mailbox, tmp_path, caplog):
    config = deployment_config(tmp_path, fake_redmine, fake_discord, relay.controller.port,
                               backend, mailbox)
    tickets = Tickets(RedmineClient(fake_redmine.url, fake_redmine.admin_key))
    said: dict[str, str] = {}
    replay_dir = tmp_path / "replay"
    replay_dir.mkdir()
    imap_names = []
    with caplog.at_level(logging.INFO), RunningGateway(config, lmtp=True) as server:
        # A stranger's ticket, answered in Redmine (REST, as support): once the watcher
        # has taken its first look, so that the answer is news to it.
        assert wait_until(lambda: server.gateway.watcher.store.state()["watermark"], 10, 0.1)
        stranger = tickets.client.create_issue(
            "site-a", "Typed in Redmine", "Deployment test.", as_user="gateway",
            custom_fields={"reporter-email": STRANGER})
        typed = requests.put(f"{fake_redmine.url}/issues/{stranger}.json",
                             json={"issue": {"notes": "Answered in the web UI."}},
                             headers={"X-Redmine-API-Key": fake_redmine.key("support")})
        assert typed.status_code == 204
        for name in sorted(OUTCOMES):
            for source in ("smtp", "lmtp"):
                port = server.lmtp_port if source == "lmtp" else server.smtp_port
                said[f"{source}-{name}"] = send_smtp(port, tickets.mail_for(name, source),
                                                     lmtp=source == "lmtp")
            piped = run_mailgate("pipe", "--config", str(config),
                                 stdin=tickets.mail_for(name, "pipe"))
            assert b"Traceback" not in piped.stderr, piped.stderr.decode()
            said[f"pipe-{name}"] = "accepted" if piped.returncode == 0 else "refused"
            (replay_dir / name).write_bytes(tickets.mail_for(name, "replay"))
            imap_names.append(name)
        # Into the mailbox that serve watches; the UIDs find their receipts below.
        imap_uids = dict(zip(imap_names, mailbox.append(
            *[tickets.mail_for(name, "imap") for name in imap_names])))
        # One ticket's conversation through two addresses: its own, and Redmine's
        # notification address (triage's): one Discord thread.
        both = tickets.client.create_issue("site-a", "two ways in", "Deployment test.",
                                           as_user="owner")
        for name in ("owner-reply.eml", "redmine-notification-reply.eml"):
            raw = (MAIL / name).read_bytes().replace(b"ticket1@", f"ticket{both}@".encode())
            raw = raw.replace(b"#1]", f"#{both}]".encode()).replace(
                b"redmine.issue-1.", f"redmine.issue-{both}.".encode()).replace(
                b"Message-ID: <", b"Message-ID: <both-")
            tickets.keys[parse_mail(raw, headers_only=True).message_id] = f"both-{name}"
            assert send_smtp(server.smtp_port, raw, lmtp=False) == "accepted"
        # A duplicate: the same mail delivered twice (a client that retried).
        twice = tickets.mail_for("owner-reply.eml", "twice")
        for _ in range(2):
            assert send_smtp(server.smtp_port, twice, lmtp=False) == "accepted"
        replayed = run_mailgate("replay", "--config", str(config), str(replay_dir))
        assert replayed.returncode == 0 and b"Traceback" not in replayed.stderr, \
            replayed.stderr.decode()
        for line in replayed.stderr.decode().splitlines():
            path, _, rest = line.partition(": ")
            said[f"replay-{Path(path).name}"] = "refused" if rest.startswith("rejected") \
                else "accepted"
        gateway = server.gateway
        assert wait_until(lambda: mailbox.message_ids("INBOX") == [], 60, 0.3), \
            mailbox.message_ids("INBOX")
        said.update(imap_said(gateway, config, mailbox, imap_uids))
        assert wait_until(lambda: not gateway.spool.counts().get("queued"), 60, 0.2), \
            gateway.spool.counts()
        assert wait_until(lambda: gateway.fanout.stats().get("queued", 0) == 0, 30, 0.2)
        assert wait_until(lambda: relay.received, 15, 0.1)
        assert wait_until(lambda: [m for m in relay.messages() if m["To"] == STRANGER], 15, 0.1)
        assert wait_until(lambda: not gateway.watcher.counts()["queued"], 15, 0.1)
        # Replies typed in the conversation's Discord thread: Sam's, and Dana's.
        [conversation] = [t for t in fake_discord.threads() if t.name.startswith(f"#{both} ")]
        reader = gateway.discord_reader
        assert wait_until(lambda: (reader.store.read(conversation.id) or {}).get("polled_at"),
                          30, 0.1)
        fake_discord.post_as_user(conversation.id, "Try the other cable.", **SAM)
        fake_discord.post_as_user(conversation.id, "That worked for me.", **DANA)
        assert wait_until(lambda: len(from_discord(fake_redmine, both)) == 2, 30, 0.1)
        runners = gateway.runners()
        assert all(r.alive for r in runners)

    # Every mail became what the single-feature tests say it becomes.
    kinds: dict[str, list[str]] = {}
    made: dict[str, int] = {}
    for mail in gateway.spool.mails(state=None, limit=10_000):
        kinds.setdefault(tickets.key_of(mail), []).append(
            mail.outcome["kind"] if mail.outcome else mail.state)
        if mail.outcome and mail.outcome.get("ticket"):
            made[tickets.key_of(mail)] = mail.outcome["ticket"]
    assert kinds.pop("twice-owner-reply.eml") == ["applied", "duplicate"]
    assert [kinds.pop(f"both-{n}") for n in ("owner-reply.eml",
                                             "redmine-notification-reply.eml")] == [
        ["applied"], ["applied"]]
    for name, expected in OUTCOMES.items():
        for source in SOURCES:
            key = f"{source}-{name}"
            got = kinds[key][0] if key in kinds else said.get(key)
            assert got == expected, f"{key}: {got} (intake said {said.get(key)})\n" + \
                replayed.stderr.decode()[-3000:]
    # Mail text posted as text, cut, and a subject cut to Redmine's 255 (issue 18).
    for source in SOURCES:
        [note] = [j.notes for j in tickets.client.get_issue(
            made[f"{source}-owner-reply-with-hostile-markup.eml"]).journals if j.notes]
        assert "&#33;http://evil.test/pixel.png!" in note and "{{collapse" not in note
        log = tickets.client.get_issue(made[f"{source}-owner-reply-long-log.eml"])
        assert [a.filename for a in log.attachments] == ["message.txt"]
        opened = tickets.client.get_issue(made[f"{source}-site-a-new-ticket-long-subject.eml"])
        assert len(opened.subject) == 255 and "Subject: The printer" in opened.description
    # No dead letter, and no traceback in the gateway's own log.
    assert not gateway.spool.mails(state="dead")
    assert "Traceback" not in caplog.text
    # One Discord thread per ticket that got a post, whichever address its mail reached.
    names = [thread.name for thread in fake_discord.threads()]
    assert len(names) == len(set(names)) and names
    [conversation] = [t for t in fake_discord.threads() if t.name.startswith(f"#{both} ")]
    assert len([m for m in conversation.messages if m.get("webhook_id")]) == 2
    # The Discord replies: a note each, by their writer; nothing of them came back.
    assert from_discord(fake_redmine, both) == [
        ("Sam Support", "Try the other cable."),
        ("Mail Gateway", f"From: Dana D <discord:{DANA['user_id']}>\n\nThat worked for me.")]
    assert len(conversation.messages) == 4
    assert gateway.discord_reader.counts()["dead"] == 0
    # Reporters who are not Redmine users: recorded, or given an account (issue 13).
    opened = [i for i in fake_redmine.issues.values()
              if i.subject == "No connection since this morning"]
    assert len(opened) == len(SOURCES)
    assert all((i.author.login, i.custom_fields.get(3), i.custom_fields.get(4)) ==
               ("gateway", "nina@elsewhere.test", "fred@elsewhere.test") for i in opened)
    [nils] = [u for u in fake_redmine.users if u.mail == "nils@elsewhere.test"]
    # Replay is not our MTA: nothing proves the address there, so no account acts.
    authors = sorted(i.author.login for i in fake_redmine.issues.values()
                     if i.subject == "Which site am I on?")
    assert authors == ["gateway"] + [nils.login] * (len(SOURCES) - 1), authors
    # The one refused command was told to its sender, once a day.
    notices = [m for m in relay.messages() if "was not carried out" in
               " ".join(m.get_content().split())]
    assert len(notices) == 1 and notices[0]["To"] == "owner@example.org", \
        [(m["To"], m["Subject"], m["Date"]) for m in notices]
    # The note typed in Redmine: mailed once to the stranger, posted once in the thread;
    # nobody else was answered (every other ticket's author is a Redmine user).
    [answer] = [m for m in relay.messages() if m["To"] == STRANGER]
    assert "Answered in the web UI." in answer.get_content()
    assert [m["To"] for m in relay.messages() if m["Reply-To"]] == [STRANGER]
    [thread] = [t for t in fake_discord.threads() if t.name.startswith(f"#{stranger} ")]
    assert [m["content"].split("\n")[0] for m in thread.messages] == [
        f"**#{stranger}** note: Typed in Redmine"]
    assert gateway.watcher.counts()["dead"] == 0
