"""What the plan would refuse and can be known while the sender is connected is refused
then (issue 12, point 2): a 5xx at DATA over SMTP, exit 77 from the pipe, with the true
reason; and nothing is spooled.  Through the real entry points, against the fake Redmine."""

from __future__ import annotations

import smtplib

import pytest

from mailgate.clients.redmine import RedmineClient
from mailgate.errors import EX_NOPERM, EX_OK
from support.configs import write_config
from tests.helpers import fixture, run_mailgate
from tests.servers import RunningGateway

#: What our MTA (a trusted authserv-id in write_config) writes on the mail it took in.
PASSED = b"Authentication-Results: mx.example.org; dkim=pass header.d=example.org"
FAILED = b"Authentication-Results: mx.example.org; dkim=fail header.d=example.org"


def owner_reply(ticket: int, results: bytes = FAILED) -> bytes:
    """The owner's "it works now" to their ticket, with our MTA's verdict on top."""
    raw = fixture("owner-confirms.eml").replace(b"ticket1@", f"ticket{ticket}@".encode())
    assert raw.startswith(PASSED)
    return raw.replace(PASSED, results, 1)


@pytest.fixture
def ticket(fake_redmine) -> int:
    client = RedmineClient(fake_redmine.url, fake_redmine.admin_key)
    return client.create_issue("site-a", "Router", "Drops.", as_user="owner")


@pytest.fixture
def rejecting(fake_redmine, tmp_path):
    """The demo's set-up, with unverified owners and admins refused."""
    return write_config(tmp_path / "m.yaml", fake_redmine.url, fake_redmine.admin_key,
                        unverified_senders="reject", unknown_senders="reject",
                        trust={"trusted_authserv_ids": ["mx.example.org"], "verify_dkim": False})


def test_an_owner_our_mta_proved_unverified_gets_550_at_data(rejecting, ticket):
    with RunningGateway(rejecting, lmtp=False) as server:
        with smtplib.SMTP("127.0.0.1", server.smtp_port) as smtp:
            with pytest.raises(smtplib.SMTPDataError) as refused:
                smtp.sendmail("owner@example.org", [f"ticket{ticket}@example.org"],
                              owner_reply(ticket))
        assert server.gateway.spool.counts() == {}                     # nothing taken in
    assert refused.value.smtp_code == 550
    text = refused.value.smtp_error.decode()
    assert text.startswith("5.7.1 <owner@example.org> is not verified")
    assert "dkim=fail" in text and "not a Redmine user" not in text    # the true reason


def test_the_pipe_exits_77_with_the_same_reason(rejecting, ticket):
    result = run_mailgate("pipe", "--config", str(rejecting), "--sender", "owner@example.org",
                          stdin=owner_reply(ticket))
    assert result.returncode == EX_NOPERM
    assert b"<owner@example.org> is not verified" in result.stderr
    assert b"Traceback" not in result.stderr


def test_a_verified_owner_passes_and_is_applied(rejecting, ticket, fake_redmine):
    result = run_mailgate("pipe", "--config", str(rejecting), "--sender", "owner@example.org",
                          stdin=owner_reply(ticket, PASSED))
    assert result.returncode == EX_OK, result.stderr
    assert b"applied" in result.stderr


def test_an_unknown_sender_under_reject_gets_550_naming_that(rejecting, ticket):
    raw = fixture("unknown-sender-reply.eml").replace(b"ticket1@", f"ticket{ticket}@".encode())
    with RunningGateway(rejecting, lmtp=True) as server:
        with smtplib.LMTP("127.0.0.1", server.lmtp_port) as lmtp:
            with pytest.raises(smtplib.SMTPDataError) as refused:
                lmtp.sendmail("stranger@elsewhere.test", [f"ticket{ticket}@example.org"], raw)
        assert server.gateway.spool.counts() == {}
    assert refused.value.smtp_code == 550
    assert b"is not a Redmine user" in refused.value.smtp_error


def test_accept_without_a_gateway_user_is_a_config_error(fake_redmine, tmp_path):
    config = write_config(tmp_path / "m.yaml", fake_redmine.url, fake_redmine.admin_key,
                          redmine={"gateway_user": None}, unknown_senders="accept")
    result = run_mailgate("check-config", str(config))
    assert result.returncode == 78
    assert b"unknown_senders: 'accept' needs redmine.gateway_user" in result.stderr
