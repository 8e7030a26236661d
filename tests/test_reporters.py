"""Reporters who are not Redmine users (issue 13, points 1 and 2), through `mailgate
pipe` and `serve`, against the real Redmine.

A neighbour writes to a site's address from their own mail account.  Under
``accept`` the gateway's user opens the ticket and records their address; their
later mail has the owner role (when their address is proven, as any owner's).
Under ``create`` they get a Redmine account and write as themselves.
"""

from __future__ import annotations

import re
import smtplib
import uuid
from email.message import EmailMessage

import pytest

from mailgate.clients.redmine import RedmineClient
from support.configs import write_config
from tests.helpers import run_mailgate, without_marker
from tests.load import wait_until
from tests.servers import RunningGateway

pytestmark = pytest.mark.real_redmine

RECORDING = {"reporter_field": "reporter-email", "participants_field": "participants"}


@pytest.fixture(scope="module")
def client(real_redmine):
    return RedmineClient(real_redmine.url, real_redmine.admin_key)


@pytest.fixture(scope="module")
def accepting(real_redmine, tmp_path_factory):
    """site-a accepts strangers (the gateway's user writes) and records the reporter."""
    return write_config(tmp_path_factory.mktemp("accept") / "mailgate.yaml",
                        real_redmine.url, real_redmine.admin_key, redmine=RECORDING)


@pytest.fixture(scope="module")
def creating(real_redmine, tmp_path_factory):
    """site-a makes an account for each (verified) stranger."""
    return write_config(tmp_path_factory.mktemp("create") / "mailgate.yaml",
                        real_redmine.url, real_redmine.admin_key, redmine=RECORDING,
                        sites={"site-a": {"tracker": "Support", "unknown_senders": "create"}})


def neighbour() -> tuple[str, str]:
    """A fresh stranger: (display name, address) Redmine has never seen."""
    return "Nina Neighbour", f"nina-{uuid.uuid4().hex[:8]}@neighbours.example"


def mail(sender: tuple[str, str], to: str, body: str, *, verified: bool = True,
         cc: str | None = None) -> bytes:
    """A mail as our MTA hands it over: with its word on the DKIM check when ``verified``."""
    msg = EmailMessage()
    if verified:
        domain = sender[1].rpartition("@")[2]
        msg["Authentication-Results"] = f"mx.example.org; dkim=pass header.d={domain}"
    msg["From"] = f"{sender[0]} <{sender[1]}>"
    msg["To"] = to
    if cc:
        msg["Cc"] = cc
    msg["Subject"] = f"Connection dropped {uuid.uuid4().hex[:6]}"
    msg["Message-ID"] = f"<{uuid.uuid4().hex}@neighbours.example>"
    msg.set_content(body)
    return bytes(msg)


def pipe(config, raw: bytes, code: int = 0) -> str:
    result = run_mailgate("pipe", "--config", str(config), stdin=raw,
                          env={"MAILGATE_LOG_LEVEL": "WARNING"})
    said = result.stderr.decode()
    assert result.returncode == code, said
    assert "Traceback" not in said
    return said


def opened(said: str) -> int:
    found = re.search(r"created #(\d+)", said)
    assert found, said
    return int(found.group(1))


def last_note(client, ticket: int):
    return client.get_issue(ticket).journals[-1]


def test_a_strangers_ticket_records_them_and_their_reply_is_the_owners(client, accepting):
    nina = neighbour()
    ticket = opened(pipe(accepting, mail(nina, "site-a@example.org", "Nothing works.",
                                         cc="Fred <fred@elsewhere.example>, site-b@example.org")))
    issue = client.get_issue(ticket)
    assert issue.author_name == "Mail Gateway"
    assert issue.custom_fields["reporter-email"] == nina[1]
    # The participants: the Cc'd person, not our own addresses.
    assert issue.custom_fields["participants"] == "fred@elsewhere.example"

    # Their reply gives more information (Launchpad: the owner's reply), it does not
    # count as someone else's answer: the ticket stays Open.
    said = pipe(accepting, mail(nina, f"ticket{ticket}@example.org", "The light is red."))
    assert "give-info: open -> open" in said
    note = last_note(client, ticket)
    assert without_marker(note.notes) == f"From: {nina[0]} <{nina[1]}>\n\nThe light is red."
    assert client.get_issue(ticket).status_name == "Open"

    # Answered by support; the reporter confirms it solved it, as an owner may.
    client.add_note(ticket, "Please restart the router.", as_user="support",
                    status_id=client.status_ids({"answered": "Answered"})["answered"])
    said = pipe(accepting, mail(nina, f"ticket{ticket}@example.org",
                                "Status: solved\n\nThat did it, thanks."))
    assert "confirm: answered -> solved" in said
    assert client.get_issue(ticket).status_name == "Solved"


def test_an_unverified_reporter_is_only_a_comment(client, accepting):
    nina = neighbour()
    ticket = opened(pipe(accepting, mail(nina, "site-a@example.org", "Nothing works.")))
    said = pipe(accepting, mail(nina, f"ticket{ticket}@example.org", "Status: solved\n\nok",
                                verified=False))
    assert "comment: open -> open" in said and "could not be verified" in said
    assert client.get_issue(ticket).status_name == "Open"


def test_someone_elses_address_is_not_the_reporter(client, accepting):
    nina, fred = neighbour(), neighbour()
    ticket = opened(pipe(accepting, mail(nina, "site-a@example.org", "Nothing works.")))
    said = pipe(accepting, mail(fred, f"ticket{ticket}@example.org", "Status: solved\n\nok"))
    assert "comment: open -> open" in said and "is not a Redmine user" in said


def test_create_makes_the_account_and_the_mail_is_written_as_them(client, creating):
    nina = neighbour()
    ticket = opened(pipe(creating, mail(nina, "site-a@example.org", "Nothing works.")))
    client.clear_caches()
    account = client.find_user_by_email(nina[1])
    assert account is not None and account.login == nina[1] and account.name == nina[0]
    issue = client.get_issue(ticket)
    assert issue.author_email == nina[1]
    assert "reporter-email" not in {k for k, v in issue.custom_fields.items() if v}
    assert without_marker(issue.description.replace("\r\n", "\n")) == "Nothing works."

    # Their next mail is theirs in Redmine too; once answered, theirs to close.
    client.add_note(ticket, "Please restart the router.", as_user="support",
                    status_id=client.status_ids({"answered": "Answered"})["answered"])
    said = pipe(creating, mail(nina, f"ticket{ticket}@example.org", "Status: solved\n\nfixed"))
    assert "confirm: answered -> solved" in said
    note = last_note(client, ticket)
    assert note.user_name == nina[0] and without_marker(note.notes) == "fixed"
    assert client.get_issue(ticket).status_name == "Solved"


def test_create_through_smtp(client, creating):
    nina = neighbour()
    raw = mail(nina, "site-a@example.org", "Written over SMTP.")
    with RunningGateway(creating, lmtp=False) as server:
        with smtplib.SMTP("127.0.0.1", server.smtp_port) as smtp:
            smtp.sendmail(nina[1], ["site-a@example.org"], raw)
        assert wait_until(lambda: client.clear_caches() or client.find_user_by_email(nina[1]),
                          30)
    account = client.find_user_by_email(nina[1])
    mine = client.issues(project="site-a")
    assert any(i.author_id == account.id for i in mine)


def test_create_makes_no_account_for_an_address_nothing_proves(client, creating):
    nina = neighbour()
    said = pipe(creating, mail(nina, "site-a@example.org", "Nothing works.", verified=False))
    ticket = opened(said)
    client.clear_caches()
    assert client.find_user_by_email(nina[1]) is None
    issue = client.get_issue(ticket)
    assert issue.author_name == "Mail Gateway"
    assert issue.custom_fields["reporter-email"] == nina[1]


def test_an_account_redmine_refuses_is_a_clear_refusal(client, creating):
    """locked@example.org belongs to a locked account: not a user mail can write as,
    and Redmine will not make a second account with that address."""
    raw = mail(("Lou Locked", "locked@example.org"), "site-a@example.org", "Let me in.")
    said = pipe(creating, raw)      # taken in (exit 0), then refused: a dead letter
    assert "refused" in said and "Email has already been taken" in said


def test_create_uses_the_account_another_gateway_made_meanwhile(client, creating):
    """serve learnt that Nina has no account; a pipe (another process, or another
    host) then made hers.  serve's next mail from her is hers, not a refusal because
    Redmine already has her address (the full deployment saw it: issue 16's CI run)."""
    nina = neighbour()
    # The shared real Redmine keeps earlier runs' tickets: texts of this run only.
    first, second, third = (f"{n}, {nina[1]}." for n in
                            ("First, unsigned", "Second, by pipe", "Third, signed, over SMTP"))
    with RunningGateway(creating, lmtp=False) as server:
        def send(raw: bytes) -> None:
            with smtplib.SMTP("127.0.0.1", server.smtp_port) as smtp:
                smtp.sendmail(nina[1], ["site-a@example.org"], raw)

        # Nothing proves this one is hers: a ticket by the gateway, and "no account" learnt.
        send(mail(nina, "site-a@example.org", first, verified=False))
        assert wait_until(lambda: _authored_by(client, first), 30)
        opened(pipe(creating, mail(nina, "site-a@example.org", second)))
        send(mail(nina, "site-a@example.org", third))
        assert wait_until(lambda: _authored_by(client, third), 30)
    client.clear_caches()
    account = client.find_user_by_email(nina[1])
    assert _authored_by(client, third) == account.id
    assert _authored_by(client, first) != account.id


def _authored_by(client, text: str) -> int | None:
    """The author id of the site-a ticket whose description says ``text``."""
    found = client.find_issue_with_text("site-a", text)
    return client.get_issue(found).author_id if found else None
