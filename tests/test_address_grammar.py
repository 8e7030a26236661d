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
from mailgate.redmine import RedmineClient
from mailgate.routing import resolve_recipient
from tests.helpers import DEMO_CONFIG, fixture, run_mailgate
from tests.servers import RunningGateway, write_config

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
