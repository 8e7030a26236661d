"""The SMTP and LMTP listener, spoken to with smtplib: every reply code of the issue."""

from __future__ import annotations

import asyncio
import smtplib
import time

import pytest
from aiosmtpd.smtp import SMTP
from hypothesis import given, settings, strategies as st

from mailgate.clients.redmine import RedmineClient
from mailgate.intake.smtp import GatewaySMTP
from support.configs import write_config
from tests.helpers import fixture, rcpt, smtp
from tests.servers import RunningGateway


@pytest.fixture
def server(tmp_path, fake_redmine):
    config = write_config(tmp_path / "mailgate.yaml", fake_redmine.url, fake_redmine.admin_key)
    with RunningGateway(config) as running:
        yield running


@pytest.fixture
def client(fake_redmine):
    return RedmineClient(fake_redmine.url, fake_redmine.admin_key)


@pytest.fixture
def ticket(client):
    return client.create_issue("site-a", "smtp test", "The router drops.", as_user="owner")


def wait_for_journal(client, ticket, count=1, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        issue = client.get_issue(ticket)
        if len(issue.journals) >= count:
            return issue
        time.sleep(0.1)
    raise AssertionError(f"ticket #{ticket} got no note")


def test_accepted_mail_becomes_a_note_as_the_sender(server, client, ticket):
    with smtp(server) as conn:
        refused = conn.sendmail("support@example.org", [f"ticket{ticket}@example.org"],
                                fixture("support-answer.eml"))
    assert refused == {}
    issue = wait_for_journal(client, ticket)
    assert issue.status_name == "Answered"
    assert issue.journals[-1].user_name == "Sam Support"


def test_greeting_uses_the_configured_hostname_and_advertises_size(server):
    with smtp(server) as conn:
        code, banner = conn.ehlo()
        assert code == 250 and banner.startswith(b"mailgate.test")
        assert conn.esmtp_features["size"] == "200000"


def test_unknown_address_is_550_at_rcpt(server):
    with smtp(server) as conn:
        assert rcpt(conn, "nobody@example.org") == \
            (550, b"5.1.1 <nobody@example.org>: no such mailbox here")


def test_missing_ticket_is_550_no_such_ticket(server):
    with smtp(server) as conn:
        assert rcpt(conn, "ticket999999@example.org") == (550, b"5.1.1 no such ticket #999999")


def test_redmine_down_during_the_check_is_451_4_4_1(server, fake_redmine, ticket):
    fake_redmine.fail_next(status=503, count=1)
    with smtp(server) as conn:
        code, text = rcpt(conn, f"ticket{ticket}@example.org")
    assert code == 451 and text.startswith(b"4.4.1")
    # Our trouble is not the sender's business: no internal URL, no exception text.
    assert text == b"4.4.1 temporary failure, please try again later"


def test_too_many_recipients_is_452(server, ticket):
    with smtp(server) as conn:
        conn.ehlo()
        conn.mail("owner@example.org")
        codes = [conn.rcpt(f"ticket{ticket}@example.org")[0] for _ in range(4)]
    assert codes == [250, 250, 250, 452]


def test_over_the_size_limit_is_552_5_3_4(server, ticket):
    big = fixture("owner-reply.eml") + (b"x" * 76 + b"\r\n") * 3300
    with smtp(server) as conn:
        # Declared with SIZE= at MAIL FROM (smtplib does this when SIZE is advertised).
        with pytest.raises(smtplib.SMTPSenderRefused) as info:
            conn.sendmail("owner@example.org", [f"ticket{ticket}@example.org"], big)
        assert info.value.smtp_code == 552 and info.value.smtp_error.startswith(b"5.3.4")
    with smtp(server) as conn:
        # Not declared: refused after DATA.
        assert rcpt(conn, f"ticket{ticket}@example.org")[0] == 250
        code, text = conn.data(big)
        assert (code, text[:5]) == (552, b"5.3.4")


def test_an_internal_error_is_451_never_250_or_500(server, ticket):
    server.gateway.spool.close()   # every commit now fails with an unexpected error
    with smtp(server) as conn:
        assert rcpt(conn, f"ticket{ticket}@example.org")[0] == 250
        code, text = conn.data(fixture("owner-reply.eml"))
    assert (code, text) == (451, b"4.3.0 Internal error, please try again later")


def test_unknown_sender_refused_where_the_site_rejects_them(server):
    with smtp(server) as conn:
        assert rcpt(conn, "site-b@example.org")[0] == 250
        code, text = conn.data(fixture("unknown-sender-reply.eml"))
    assert code == 550 and text.startswith(b"5.7.1")


def test_lmtp_answers_per_recipient(server, client, ticket):
    # site-a accepts unknown senders (posted by the gateway user), site-b rejects them.
    with smtplib.LMTP("127.0.0.1", server.lmtp_port) as conn:
        conn.ehlo()   # smtplib.LMTP sends LHLO
        conn.mail("stranger@elsewhere.test")
        assert conn.rcpt(f"ticket{ticket}@example.org")[0] == 250
        assert conn.rcpt("site-b@example.org")[0] == 250
        first = conn.data(fixture("unknown-sender-reply.eml"))
        second = conn.getreply()
    assert first[0] == 250
    assert second[0] == 550 and second[1].startswith(b"5.7.1")
    issue = wait_for_journal(client, ticket)
    assert issue.journals[-1].notes.startswith("From: Stranger Danger <stranger@elsewhere.test>")


# -- the envelope's addresses, read without the stdlib's parse tree -------------------

_PIECES = st.sampled_from(["a", "Z", "0", "-", "+", "=", "'", "~", ".", "@", "<", ">", " ",
                           "\t", "(", ")", '"', "\\", "[", "]", ",", ":", ";", "é", "\r",
                           "x.y", "example.org", "SIZE=10", "BODY=8BITMIME"])
_PART = st.lists(st.sampled_from(["a", "Z", "0", "-", "+", "'", "~", ".", ".", " ", "(", '"',
                                  "é", "[", "]", "\\", "@"]), max_size=5).map("".join)
_PARAMS = st.lists(st.sampled_from([" ", "\t", "(c)", "SIZE=10", "\r", "x", "<", ">"]),
                   max_size=4).map("".join)
#: Anything, and above all what is nearly "<local@domain> params".
_ARGUMENTS = st.one_of(st.lists(_PIECES, max_size=12).map("".join),
                       st.builds("<{}@{}>{}".format, _PART, _PART, _PARAMS))


def _reader(arg: str):
    """(ours, aiosmtpd's) reading of a MAIL or RCPT argument (after FROM:/TO:); what
    one raises (the stdlib's parser has bugs: '"' is an IndexError) is its reading."""
    loop = asyncio.new_event_loop()
    try:
        session = GatewaySMTP(object(), hostname="mailgate.test", loop=loop)
        return [_outcome(read, session, arg) for read in (GatewaySMTP._getaddr, SMTP._getaddr)]
    finally:
        loop.close()


def _outcome(read, session, arg: str):
    try:
        return read(session, arg)
    except Exception as exc:    # noqa: BLE001 - compared, not hidden
        return type(exc)


@given(_ARGUMENTS)
@settings(max_examples=500)
def test_plain_envelope_addresses_are_read_as_aiosmtpd_reads_them(arg):
    ours, theirs = _reader(arg)
    assert ours == theirs


@pytest.mark.parametrize("arg", ["<a@b>", "<A.B+c@Ex.Org> SIZE=9", "<a@b>SIZE=9",
                                 "<a@b> \t (comment) SIZE=9", "<a@b>\r", "<a..b@c>",
                                 "<a@b.>", "<a@[1.2.3.4]>", '<"a b"@c>', "<>", " <a@b>",
                                 "<@relay:a@b>", "<é@b>", "a@b SIZE=1"])
def test_the_forms_aiosmtpd_reads_alike(arg):
    ours, theirs = _reader(arg)
    assert ours == theirs
