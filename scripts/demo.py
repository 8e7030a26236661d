"""The end-to-end demo: the Launchpad support story (shared/seeds/004) told by email.

Starts `mailgate serve` against the local real Redmine, sends each mail over
SMTP as a person would, and prints the ticket's timeline as Redmine has it,
then the ticket's Discord thread, and a reply typed in that thread by Sam
Support, which arrives in Redmine as Sam's note.  Then a second story: a neighbour who is not
a Redmine user writes to the site, support answers in Redmine, and the answer
reaches the neighbour by mail (an SMTP relay on 127.0.0.1 stands in for their
mailbox); their reply to it closes the ticket.  Discord itself cannot be reached from here,
so the demo runs the test suite's fake Discord on 127.0.0.1 (a real HTTP
server that enforces Discord's shapes and limits) and shows what it received.
Run it through scripts/demo, which installs and starts everything first.
"""

from __future__ import annotations

import email
import email.policy
import os
import signal
import smtplib
import socket
import subprocess
import sys
import time
import uuid
from email.message import EmailMessage
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from aiosmtpd.controller import Controller  # noqa: E402

from mailgate.clients.redmine import RedmineClient  # noqa: E402
from mailgate.mail.idempotency import markers_in  # noqa: E402
from tests.fakes.discord import FakeDiscord  # noqa: E402

CONFIG = ROOT / "fixtures" / "config" / "demo.yaml"
PEOPLE = {"owner": "Olive Owner <owner@example.org>",
          "support": "Sam Support <support@example.org>",
          "admin": "Ada Admin <admin@example.org>"}

# (who, how they address it, body): the story of one ticket.
STORY = [
    ("owner", "site", "My router drops the connection every evening. What can I do?"),
    ("support", "ticket", "Action: Request for more information\n\n"
                          "Which firmware version does it run?"),
    ("owner", "notification", "It runs firmware 2.0.9."),
    ("support", "ticket", "Please update to 2.1.3; it fixes the evening drop-outs."),
    ("owner", "subject-tag", "I updated, but it still drops at eight."),
    ("support", "ticket", "Then the DHCP lease is too short: set it to 24 hours."),
    ("owner", "ticket", "Status: Solved\n\nThat did it, thank you!"),
    ("owner", "ticket", "Thanks again, you are great."),
]


#: The neighbour: no Redmine account; their mail provider signs with DKIM.
NEIGHBOUR = "Nina Neighbour <nina@neighbours.example>"
#: Sam Support's Discord account, mapped to the Redmine login "support" (discord.users).
SAM_ON_DISCORD = {"user_id": "80351110224678912", "username": "sam.support",
                  "global_name": "Sam"}
#: What Sam types in the ticket's Discord thread.
SAM_REPLY = "Glad it works! If it drops again, the router's log is under Status > Log."


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def compose(who: str, how: str, body: str, ticket: int | None, subject: str) -> EmailMessage:
    msg = EmailMessage()
    # What the local MTA writes once it has verified the sender's DKIM signature.
    msg["Authentication-Results"] = "mx.example.org; dkim=pass header.d=example.org"
    msg["From"] = PEOPLE[who]
    msg["Message-ID"] = f"<{uuid.uuid4().hex}@demo.example.org>"
    msg["Subject"] = subject if ticket is None else f"Re: {subject}"
    if how == "site":
        msg["To"] = "site-a@example.org"
    elif how == "ticket":
        msg["To"] = f"ticket{ticket}@example.org"
    elif how == "notification":
        # A reply to Redmine's own notification mail, as a mail client sends it.
        msg["To"] = "redmine@example.org"
        msg["In-Reply-To"] = f"<redmine.issue-{ticket}.20261123080000.1@example.org>"
    elif how == "subject-tag":
        msg["To"] = "site-a@example.org"
        msg.replace_header("Subject", f"Re: [site-a - Support #{ticket}] {subject}")
    msg.set_content(body)
    return msg


def wait_for(predicate, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise SystemExit("demo: timed out waiting for mailgate to process a mail")


class Mailbox:
    """An SMTP server on 127.0.0.1 that keeps what it is sent: the relay mailgate's
    answers go through, standing in for the neighbour's mailbox."""

    def __init__(self):
        self.received: list[email.message.EmailMessage] = []
        self.controller = Controller(self, hostname="127.0.0.1", port=free_port())

    async def handle_DATA(self, server, session, envelope):
        self.received.append(email.message_from_bytes(envelope.content,
                                                      policy=email.policy.default))
        return "250 OK"


def demo_config(discord: FakeDiscord, hooks: dict[str, str], relay: int) -> Path:
    """demo.yaml, with the Discord section pointed at the fake Discord, and the
    answers to reporters who are not Redmine users going through ``relay``."""
    data = yaml.safe_load(CONFIG.read_text())
    # A fresh spool each run, as a new deployment has: the Discord fake is new each
    # run too, and the Redmine watcher starts from now, not from a previous run's
    # watermark (it would catch up on everything since, the test suite's tickets too).
    spool = (CONFIG.parent / data["spool"]["path"]).resolve()
    spool = spool.with_name(f"{spool.stem}-{os.getpid()}{spool.suffix}")
    data["spool"]["path"] = str(spool)
    data["discord"] = {"api_base": discord.api_base, "channels": {"site-a": hooks["site-a"]},
                       "triage": hooks["triage"], "redmine_fields": True,
                       # Both ways: the bot reads the threads back into Redmine.
                       "bot_token": discord.bot_token, "read": True, "poll_interval": 1,
                       "users": {SAM_ON_DISCORD["user_id"]: "support"}}
    data["notify"] = {**data.get("notify", {}), "relay": f"127.0.0.1:{relay}"}
    data["watch"] = {"poll_interval": 1}
    path = ROOT / "var" / "demo-with-discord.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def main() -> int:
    client = RedmineClient(os.environ["MAILGATE_REDMINE_URL"],
                           os.environ["MAILGATE_REDMINE_API_KEY"])
    port = free_port()
    mailbox = Mailbox()
    mailbox.controller.start()
    with FakeDiscord() as discord:
        hooks = {"site-a": discord.add_webhook(forum=True),
                 "triage": discord.add_webhook(forum=True)}
        config = demo_config(discord, hooks, mailbox.controller.port)
        server = subprocess.Popen([sys.executable, "-m", "mailgate", "serve", "--config",
                                   str(config), "--smtp", f"127.0.0.1:{port}"],
                                  env={**os.environ, "MAILGATE_LOG_LEVEL": "WARNING"})
        try:
            wait_for(lambda: _answers(port))
            ticket = tell_story(client, port)
            thread = print_thread(client, discord, discord.webhook_channel(hooks["site-a"]),
                                  ticket)
            reply_in_discord(client, discord, thread, ticket)
            tell_neighbours_story(client, port, mailbox)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(40)
            mailbox.controller.stop()
            spool = Path(yaml.safe_load(config.read_text())["spool"]["path"])
            for path in spool.parent.glob(spool.name + "*"):
                path.unlink()
    return 0


def print_thread(client: RedmineClient, discord: FakeDiscord, forum: str, ticket: int):
    """The ticket's forum thread as the fake Discord has it; the thread."""
    def thread():
        found = [t for t in discord.threads(forum) if (t.name or "").startswith(f"#{ticket} ")]
        return found[0] if found and len(found[0].messages) >= len(STORY) else None

    posted = wait_for(thread)
    print(f"\nDiscord (fake, on 127.0.0.1): forum thread {posted.name!r},"
          f" {len(posted.messages)} posts")
    for message in posted.messages:
        print("  | " + "\n  | ".join(message["content"].splitlines()))
        print("  |")
    fields = wait_for(lambda: client.get_issue(ticket).custom_fields.get("discord-thread-id"))
    print(f"Redmine #{ticket}: discord-thread-id = {fields}")
    return posted


def reply_in_discord(client: RedmineClient, discord: FakeDiscord, thread, ticket: int) -> None:
    """Sam types a reply in the ticket's thread (in the fake Discord, as from Discord's
    app); it arrives in Redmine as Sam's note, and nothing of it comes back."""
    posts = len(thread.messages)
    print(f"\nIn the Discord thread, Sam ({SAM_ON_DISCORD['username']}, mapped to the Redmine"
          f" login support) replies:\n  | {SAM_REPLY}")
    discord.post_as_user(thread.id, SAM_REPLY, **SAM_ON_DISCORD)
    journal = wait_for(lambda: next((j for j in client.get_issue(ticket).journals
                                     if SAM_REPLY in j.notes), None), 60)
    issue = client.get_issue(ticket)
    print(f"Redmine #{ticket}: a note by {journal.user_name}: {_first(journal.notes)}..."
          f" (status {issue.status_name})")
    time.sleep(3)           # three polls of the watcher: nothing echoes back
    print(f"Discord thread: {len(thread.messages)} posts ({posts} before the reply;"
          f" nothing posted back)")


def _answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def tell_story(client: RedmineClient, port: int) -> int:
    """Send the story; returns the ticket it made."""
    subject = f"Router drops the connection ({uuid.uuid4().hex[:6]})"
    ticket = None
    print(f"Sending the story over SMTP to mailgate on 127.0.0.1:{port}\n")
    for who, how, body in STORY:
        msg = compose(who, how, body, ticket, subject)
        with smtplib.SMTP("127.0.0.1", port) as smtp:
            smtp.send_message(msg)
        if ticket is None:
            ticket = wait_for(lambda: _find_ticket(client, subject))
        else:
            wait_for(lambda: _has_note(client, ticket, body.splitlines()[-1]))
        print(f"  {who:8} -> {msg['To']:24} {body.splitlines()[-1][:50]}")
    print_timeline(client, ticket)
    return ticket


def tell_neighbours_story(client: RedmineClient, port: int, mailbox: Mailbox) -> None:
    """A reporter who is not a Redmine user: the answer typed in Redmine reaches them
    by mail, and their reply to it lands on the same ticket."""
    subject = f"No internet since this morning ({uuid.uuid4().hex[:6]})"
    print(f"\n\nA neighbour who is not a Redmine user writes to site-a@\n")
    first = neighbour_mail(subject, "site-a@example.org",
                           "The light on my router is red and nothing loads.")
    send(port, first)
    ticket = wait_for(lambda: _find_ticket(client, subject))
    print(f"  {NEIGHBOUR} -> site-a@example.org: ticket #{ticket}, reporter-email ="
          f" {client.get_issue(ticket).custom_fields.get('reporter-email')}")
    answer = "Please unplug the router for ten seconds; the red light means it lost its line."
    answered = client.status_ids({"answered": "Answered"})["answered"]
    client.add_note(ticket, answer, status_id=answered, as_user="support")
    print(f"  Sam Support answers in Redmine (as in its web interface): {answer[:40]}...")
    mail = wait_for(lambda: next((m for m in mailbox.received
                                  if f"#{ticket}]" in str(m["Subject"])), None), 60)
    print("\nThe neighbour's mailbox receives:\n")
    for name in ("From", "To", "Reply-To", "Subject", "Message-ID", "In-Reply-To"):
        print(f"  {name}: {mail[name]}")
    print("  | " + "\n  | ".join(mail.get_content().rstrip().splitlines()))
    reply = neighbour_mail(f"Re: {subject}", str(mail["Reply-To"]),
                           "Status: solved\n\nUnplugging it did it, thank you!")
    reply["In-Reply-To"] = mail["Message-ID"]
    send(port, reply)
    wait_for(lambda: client.get_issue(ticket).status_name == "Solved")
    print(f"\n  {NEIGHBOUR} replies to it: 'Status: solved'")
    print_timeline(client, ticket)


def neighbour_mail(subject: str, to: str, body: str) -> EmailMessage:
    msg = EmailMessage()
    msg["Authentication-Results"] = "mx.example.org; dkim=pass header.d=neighbours.example"
    msg["From"] = NEIGHBOUR
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{uuid.uuid4().hex}@neighbours.example>"
    msg.set_content(body)
    return msg


def send(port: int, msg: EmailMessage) -> None:
    with smtplib.SMTP("127.0.0.1", port) as smtp:
        smtp.send_message(msg)


def _find_ticket(client: RedmineClient, subject: str) -> int | None:
    for issue in client.issues(project="site-a"):
        if issue.subject == subject:
            return issue.id
    return None


def _has_note(client: RedmineClient, ticket: int, line: str) -> bool:
    return any(line in j.notes for j in client.get_issue(ticket).journals)


def actions_taken(ticket: int) -> dict[str | None, str]:
    """The action mailgate chose for each mail on this ticket, from its spool, by the
    marker its note carries (None: the mail that opened the ticket).  Not by journal
    id: a note whose read-back was skipped has none (issue 16)."""
    from mailgate.config import load_config
    from mailgate.mail.idempotency import marker
    from mailgate.mail.message import parse_mail
    from mailgate.store import open_spool

    config = load_config(ROOT / "var" / "demo-with-discord.yaml")
    spool = open_spool(config.store)
    actions: dict[str | None, str] = {}
    for mail in spool.mails(state="done"):
        outcome = mail.outcome or {}
        if outcome.get("ticket") != ticket:
            continue
        route = (outcome.get("plan") or {}).get("route", f"ticket:{ticket}")
        mark = None if outcome["kind"] == "created" else marker(
            parse_mail(mail.raw).key, route, config.redmine.marker_secret)
        actions[mark] = outcome.get("action", outcome["kind"])
    spool.close()
    return actions


def print_timeline(client: RedmineClient, ticket: int) -> None:
    """One row per journal with its own author, action and status; a journal that
    only set a field (the Discord thread's id) is no part of the story."""
    issue = client.get_issue(ticket)
    actions = actions_taken(ticket)
    names = {v: k for k, v in client.status_ids(
        {s: s for s in ("Open", "Needs information", "Answered", "Solved")}).items()}
    url = os.environ["MAILGATE_REDMINE_URL"]
    print(f"\nTicket #{ticket} in Redmine ({url}/issues/{ticket}): {issue.subject}\n")
    print(f"  {'who':13} {'action':14} {'status after':18} note")
    state = "Open"
    opened = actions.get(None, "open")
    print(f"  {issue.author_name:13} {opened:14} {state:18} {_first(issue.description)}")
    for journal in issue.journals:
        if not journal.notes.strip() and not journal.status_change:
            continue
        if journal.status_change:
            state = names.get(journal.status_change[1], str(journal.status_change[1]))
        marks = markers_in(journal.notes)
        action = next((actions[m] for m in marks if m in actions), "(in Redmine)")
        print(f"  {journal.user_name:13} {action:14} {state:18} {_first(journal.notes)}")
    print(f"\nFinal status: {issue.status_name}")


def _first(text: str) -> str:
    return (text.strip().splitlines() or [""])[0][:40]


if __name__ == "__main__":
    sys.exit(main())
