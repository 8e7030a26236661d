"""Every cell of the default table, through `serve` (SMTP) and through `pipe`, landing as
the right note and status in the real Redmine (scripts/redmine-local).

The "other" sender is Sam Support (Redmine's Support role, allowed to answer);
the admin is Redmine's admin.  Each case gets its own fresh ticket.
"""

from __future__ import annotations

import smtplib
import time
import uuid
from email.message import EmailMessage

import pytest

from mailgate.clients.redmine import RedmineClient
from support.configs import VERIFIED, write_config
from tests.helpers import run_mailgate, without_marker
from tests.servers import RunningGateway

SENDERS = {"owner": ("Olive Owner", "owner@example.org", "owner"),
           "other": ("Sam Support", "support@example.org", "support"),
           "admin": ("Ada Admin", "admin@example.org", "admin")}

STATUS_NAMES = {"open": "Open", "needs-info": "Needs information", "answered": "Answered",
                "solved": "Solved", "expired": "Expired", "invalid": "Invalid"}

# (sender role, ticket state, expected action, expected state): the 18 default cells.
CELLS = [
    ("owner", "open", "give-info", "open"),
    ("owner", "needs-info", "give-info", "open"),
    ("owner", "answered", "reopen", "open"),
    ("owner", "expired", "reopen", "open"),
    ("owner", "solved", "comment", "solved"),
    ("owner", "invalid", "comment", "invalid"),
] + [(role, state, action, dest) for role in ("other", "admin") for state, action, dest in [
    ("open", "answer", "answered"),
    ("needs-info", "answer", "answered"),
    ("answered", "answer", "answered"),
    ("expired", "comment", "expired"),
    ("solved", "comment", "solved"),
    ("invalid", "comment", "invalid"),
]]


@pytest.fixture(scope="module")
def client(real_redmine):
    return RedmineClient(real_redmine.url, real_redmine.admin_key)


@pytest.fixture(scope="module")
def status_ids(client):
    return client.status_ids(STATUS_NAMES)


@pytest.fixture(scope="module")
def config_path(real_redmine, tmp_path_factory):
    return write_config(tmp_path_factory.mktemp("e2e") / "mailgate.yaml",
                        real_redmine.url, real_redmine.admin_key)


@pytest.fixture(scope="module")
def server(config_path):
    with RunningGateway(config_path, lmtp=False) as running:
        yield running


def ticket_in_state(client, status_ids, state: str) -> int:
    ticket = client.create_issue("site-a", f"e2e {state} {uuid.uuid4().hex[:8]}",
                                 "The router drops the connection.", as_user="owner")
    if state != "open":
        # Moved by the admin, as a person would in the web interface.
        result = client.add_note(ticket, "", status_id=status_ids[state], as_user="admin")
        assert result.status_applied
    return ticket


def mail_from(role: str, ticket: int, body: str) -> bytes:
    name, address, _ = SENDERS[role]
    msg = EmailMessage()
    msg["Authentication-Results"] = VERIFIED.split(": ", 1)[1]
    msg["From"] = f"{name} <{address}>"
    msg["To"] = f"ticket{ticket}@example.org"
    msg["Subject"] = f"Re: ticket {ticket}"
    msg["Message-ID"] = f"<{uuid.uuid4().hex}@e2e.test>"
    msg.set_content(body)
    return bytes(msg)


def wait_for_note(client, ticket: int, text: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        issue = client.get_issue(ticket)
        notes = [j for j in issue.journals if without_marker(j.notes) == text]
        if notes:
            return issue, notes[-1]
        time.sleep(0.2)
    raise AssertionError(f"no note {text!r} on #{ticket} after {timeout} s")


@pytest.mark.parametrize("entry", ["serve", "pipe"])
@pytest.mark.parametrize("role, state, action, to_state", CELLS,
                         ids=[f"{r}-{s}" for r, s, _, _ in CELLS])
def test_default_cell_lands_in_redmine(entry, role, state, action, to_state, client,
                                       status_ids, config_path, request):
    ticket = ticket_in_state(client, status_ids, state)
    body = f"{role} writes on a {state} ticket ({action} expected) {uuid.uuid4().hex[:6]}"
    raw = mail_from(role, ticket, body)
    if entry == "serve":
        server = request.getfixturevalue("server")
        with smtplib.SMTP("127.0.0.1", server.smtp_port) as smtp:
            smtp.sendmail(SENDERS[role][1], [f"ticket{ticket}@example.org"], raw)
    else:
        result = run_mailgate("pipe", "--config", str(config_path), stdin=raw,
                              env={"MAILGATE_LOG_LEVEL": "WARNING"})
        assert result.returncode == 0, result.stderr.decode()
        assert action in result.stderr.decode()
    issue, note = wait_for_note(client, ticket, body)
    assert issue.status_id == status_ids[to_state], f"expected {to_state}, got {issue.status_name}"
    assert note.user_name == SENDERS[role][0] if role != "admin" else note.user_id == 1
    assert "(mailgate:" in note.notes.splitlines()[-1]


def test_a_yahoo_android_reply_lands_as_what_the_person_wrote(client, status_ids, config_path):
    """Issue 17: Yahoo Mail for Android runs its attribution on into the old mail and
    adds its line above it (fixtures/replies/185); through `pipe`, the note in the
    real Redmine is the one line the person wrote."""
    ticket = ticket_in_state(client, status_ids, "open")
    mine = f"What is the difference with Unikraft? {uuid.uuid4().hex[:6]}"
    body = (f"{mine}\n\nSent from Yahoo Mail on Android \n \n  On Sat, Sep 5, 2020 at 10:43 PM, "
            "Samuel Thibault<samuel.thibault@ens-lyon.org> wrote:   Hello,\n\n"
            "Jason Long, le ven. 04 sept. 2020 22:01:42 +0000, a ecrit:\n"
            "> Can anyone tell me about the goal and features of Mini-OS?\n\n"
            "https://wiki.xen.org/wiki/Mini-OS\n\nSamuel\n")
    result = run_mailgate("pipe", "--config", str(config_path),
                          stdin=mail_from("owner", ticket, body),
                          env={"MAILGATE_LOG_LEVEL": "WARNING"})
    assert result.returncode == 0, result.stderr.decode()
    wait_for_note(client, ticket, mine)
