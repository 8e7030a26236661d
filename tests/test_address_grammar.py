"""One address grammar for every edge: what SMTP refuses, the pipe refuses too.

Issue 18: ``ticket١@example.org`` (an Arabic-Indic one) reached ticket 1
through ``mailgate pipe`` while SMTP refused it, and control characters in
envelope addresses were accepted and logged raw.  Both edges are spoken to
as an MTA would: the pipe as a child process, SMTP with smtplib.
"""

from __future__ import annotations

import smtplib

import pytest

from mailgate.config import load_config
from mailgate.errors import UnknownAddress
from mailgate.clients.redmine import RedmineClient
from mailgate.routing import resolve_recipient
from support.configs import write_config
from tests.helpers import DEMO_CONFIG, fixture, run_mailgate
from tests.servers import RunningGateway

# Digits that Unicode calls digits (str.isdigit, regex \d) but a ticket ID is not made of.
NON_ASCII_DIGITS = {
    "arabic-indic": str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"),
    "fullwidth": str.maketrans("0123456789", "０１２３４５６７８９"),
    "devanagari": str.maketrans("0123456789", "०१२३४५६७८९"),
}


@pytest.fixture
def config(tmp_path, fake_redmine):
    return write_config(tmp_path / "mailgate.yaml", fake_redmine.url, fake_redmine.admin_key)


@pytest.fixture
def client(fake_redmine):
    return RedmineClient(fake_redmine.url, fake_redmine.admin_key)


@pytest.fixture
def ticket(client):
    return client.create_issue("site-a", "grammar test", "The router drops.", as_user="owner")


@pytest.fixture
def server(config):
    with RunningGateway(config) as running:
        yield running


def pipe(config, *args: str, raw: bytes = b""):
    result = run_mailgate("pipe", "--config", str(config), *args,
                          stdin=raw or fixture("owner-reply.eml"),
                          env={"MAILGATE_LOG_LEVEL": "WARNING"})
    return result.returncode, result.stderr


# -- ticket IDs are ASCII digits -----------------------------------------------------

@pytest.mark.parametrize("digits", NON_ASCII_DIGITS)
def test_resolve_recipient_takes_ascii_digits_only(digits):
    config = load_config(DEMO_CONFIG, need_redmine=False)
    with pytest.raises(UnknownAddress) as refused:
        resolve_recipient(f"ticket{'12'.translate(NON_ASCII_DIGITS[digits])}@example.org", config)
    assert refused.value.smtp_reply.startswith("550 5.1.1")


@pytest.mark.parametrize("address", [
    "tic\u212aet12@example.org",       # KELVIN SIGN, which str.lower() makes a "k"
    "site-a@example.org\u200b",        # a zero-width space after a site address
])
def test_no_unicode_folding_makes_a_foreign_address_one_of_ours(address):
    config = load_config(DEMO_CONFIG, need_redmine=False)
    with pytest.raises(UnknownAddress) as refused:
        resolve_recipient(address, config)
    assert refused.value.smtp_reply.isascii()


@pytest.mark.parametrize("digits", NON_ASCII_DIGITS)
def test_the_pipe_refuses_a_ticket_id_in_other_digits_with_67(config, client, ticket, digits):
    address = f"ticket{str(ticket).translate(NON_ASCII_DIGITS[digits])}@example.org"
    status, said = pipe(config, "--recipient", address)
    assert status == 67, said
    assert client.get_issue(ticket).journals == ()


def test_smtp_refuses_the_same_address(server, ticket):
    address = f"ticket{str(ticket).translate(NON_ASCII_DIGITS['arabic-indic'])}@example.org"
    with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=30) as conn:
        conn.ehlo()
        conn.mail("owner@example.org")
        # smtplib will not send non-ASCII without SMTPUTF8; an MTA might.
        conn.send(f"RCPT TO:<{address}>\r\n".encode())
        code, _ = conn.getreply()
    assert 500 <= code < 600


def test_a_newline_after_the_ticket_id_is_not_the_end_of_the_address(config, client, ticket):
    # "$" in a regex also matches before a final newline.
    status, _ = pipe(config, "--recipient", f"ticket{ticket}\n@example.org")
    assert status != 0
    assert client.get_issue(ticket).journals == ()


# -- control characters in envelope addresses ------------------------------------------

# NUL cannot be passed on a command line; the SMTP tests below send it.
PIPE_CONTROLS = ["\r", "\n", "\t", "\x01", "\x1b", "\x1f", "\x7f"]
SMTP_CONTROLS = ["\x00", "\x01", "\t", "\x0b", "\x1b", "\x7f"]


def smtp_command(server, *lines: str) -> list[tuple[int, bytes]]:
    """The replies to the given command lines, sent byte for byte after EHLO."""
    with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=30) as conn:
        conn.ehlo()
        replies = []
        for line in lines:
            conn.send(line.encode("latin-1") + b"\r\n")
            replies.append(conn.getreply())
        return replies


def no_raw_controls(text: str) -> bool:
    return not any(ord(c) < 0x20 and c not in "\n" or ord(c) == 0x7f for c in text)


@pytest.mark.parametrize("control", PIPE_CONTROLS)
def test_the_pipe_refuses_a_recipient_with_a_control_character_with_65(
        config, client, ticket, control):
    status, said = pipe(config, "--recipient", f"ticket{ticket}{control}@example.org")
    assert status == 65, said
    line = said.decode().strip()
    assert line == f"mailgate: recipient <ticket{ticket}{ascii(control)[1:-1]}@example.org>:" \
                   " control character in the address"
    assert client.get_issue(ticket).journals == ()


@pytest.mark.parametrize("control", PIPE_CONTROLS)
def test_the_pipe_refuses_a_sender_with_a_control_character_with_65(
        config, client, ticket, control):
    status, said = pipe(config, "--recipient", f"ticket{ticket}@example.org",
                        "--sender", f"owner{control}@example.org")
    assert status == 65, said
    assert b"sender <owner" in said and no_raw_controls(said.decode().strip())
    assert client.get_issue(ticket).journals == ()


def test_a_control_character_at_the_end_is_not_stripped_away(config, client, ticket):
    status, _ = pipe(config, "--recipient", f"ticket{ticket}@example.org\n")
    assert status == 65
    assert client.get_issue(ticket).journals == ()


@pytest.mark.parametrize("control", SMTP_CONTROLS)
def test_smtp_refuses_a_sender_with_a_control_character_with_553(server, control, caplog):
    [(code, text)] = smtp_command(server, f"MAIL FROM:<owner{control}@example.org>")
    assert (code, text.split()[0]) == (553, b"5.1.7"), text
    assert all(no_raw_controls(r.getMessage()) for r in caplog.records)


@pytest.mark.parametrize("control", SMTP_CONTROLS)
def test_smtp_refuses_a_recipient_with_a_control_character_with_553(
        server, ticket, control, caplog):
    replies = smtp_command(server, "MAIL FROM:<owner@example.org>",
                           f"RCPT TO:<ticket{ticket}{control}@example.org>")
    assert replies[0][0] == 250
    code, text = replies[1]
    assert (code, text.split()[0]) == (553, b"5.1.3"), text
    assert all(no_raw_controls(r.getMessage()) for r in caplog.records)


@pytest.mark.parametrize("address, system, unread", [
    ("MAILER-DAEMON@mx.example.org", True, True),
    ("<postmaster@example.org>", True, True),
    ("MAILER-DAEMON", True, True),
    ("no-reply@github.example", False, True),
    ("noreply@example.org", False, True),
    ("do_not_reply@example.org", False, True),
    ("bounces+123-abc@lists.example.org", False, True),
    ("nina@neighbours.example", False, False),
    ("replyall@example.org", False, False),
])
def test_who_reads_an_address_is_decided_in_one_place(address, system, unread):
    """Notices, answers and the plan's reply_to all ask mailgate.mail.addresses; mail
    from the mail system itself is automatic (handlers.automatic asks it too)."""
    from mailgate.mail.addresses import system_mailbox, unread_mailbox

    assert (system_mailbox(address), unread_mailbox(address)) == (system, unread)
