"""Issue 18, probed as an attacker on the internet would: each finding reproduced through
the real entry points (SMTP to `serve`, `mailgate pipe`), against the fake Redmine, and
shown fixed.  The input-grammar findings (ISO-2022-JP, digits, control characters, the
spool's mode, MIME depth, empty files) have their own files: test_charsets.py,
test_address_grammar.py, test_spool_permissions.py, test_mime_depth.py, test_message.py.
"""

from __future__ import annotations

import smtplib

import pytest

from mailgate.clients.redmine import RedmineClient
from support.configs import write_config
from tests.helpers import fixture, run_mailgate, without_marker
from tests.load import wait_until
from tests.servers import RunningGateway


@pytest.fixture
def client(fake_redmine) -> RedmineClient:
    return RedmineClient(fake_redmine.url, fake_redmine.admin_key)


@pytest.fixture
def ticket(client) -> int:
    return client.create_issue("site-a", "Router", "Drops.", as_user="owner")


@pytest.fixture
def config(fake_redmine, tmp_path):
    """The demo's set-up: unknown senders accepted, unverified ones commented."""
    return write_config(tmp_path / "m.yaml", fake_redmine.url, fake_redmine.admin_key,
                        spool={"path": str(tmp_path / "spool.db"), "retry_first_delay": 60})


def unsigned(raw: bytes) -> bytes:
    """The fixture without our MTA's verdict: mail from anywhere, no signature."""
    lines = raw.split(b"\n")
    return b"\n".join(line for line in lines if not line.startswith(b"Authentication-Results"))


def deliver(server: RunningGateway, ticket: int, raw: bytes, sender: str) -> None:
    raw = raw.replace(b"ticket1@", f"ticket{ticket}@".encode())
    with smtplib.SMTP("127.0.0.1", server.smtp_port) as smtp:
        smtp.sendmail(sender, [f"ticket{ticket}@example.org"], raw.replace(b"\n", b"\r\n"))


def settled(server: RunningGateway) -> bool:
    return not server.gateway.spool.counts().get("queued")


def test_3_anyone_writing_as_a_redmine_user_is_only_a_comment_by_the_gateway(config, client,
                                                                            ticket):
    # Before: "From: Sam Support", unsigned, from anywhere: "Updated by Sam Support",
    # and the status moved (request-info -> Needs information).
    raw = unsigned(fixture("support-requests-info.eml"))
    with RunningGateway(config, lmtp=False) as server:
        deliver(server, ticket, raw, "support@example.org")
        assert wait_until(lambda: settled(server), 15, 0.1)
    issue = client.get_issue(ticket)
    [journal] = [j for j in issue.journals if j.notes]
    assert journal.user_name == "Mail Gateway"
    assert without_marker(journal.notes).startswith("From: Sam Support <support@example.org>")
    assert issue.status_name == "Open" and not journal.status_change


def test_4_a_stranger_never_moves_a_ticket(config, client, ticket):
    # Before: under unknown_senders: accept, any address moved any open ticket to Answered.
    with RunningGateway(config, lmtp=False) as server:
        deliver(server, ticket, fixture("unknown-sender-reply.eml"), "stranger@elsewhere.test")
        assert wait_until(lambda: settled(server), 15, 0.1)
    issue = client.get_issue(ticket)
    assert issue.status_name == "Open"
    [journal] = [j for j in issue.journals if j.notes]
    assert journal.user_name == "Mail Gateway" and not journal.status_change


def test_4_a_verified_stranger_is_still_a_stranger(config, client, ticket):
    raw = b"Authentication-Results: mx.example.org; dkim=pass header.d=elsewhere.test\n" + \
        fixture("unknown-sender-reply.eml")
    with RunningGateway(config, lmtp=False) as server:
        deliver(server, ticket, raw, "stranger@elsewhere.test")
        assert wait_until(lambda: settled(server), 15, 0.1)
    assert client.get_issue(ticket).status_name == "Open"


def test_6_a_403_refuses_that_mail_and_the_ticket_goes_on(config, client, ticket, fake_redmine):
    # Before: ConfigError (403), retried for five days; every later mail to the ticket
    # waited behind it.
    with RunningGateway(config, lmtp=False) as server:
        fake_redmine.fail_next(403, path=f"/issues/{ticket}.json", method="PUT")
        deliver(server, ticket, fixture("owner-reply.eml"), "owner@example.org")
        assert wait_until(lambda: server.gateway.spool.counts().get("dead") == 1, 15, 0.1)
        deliver(server, ticket, fixture("admin-sets-invalid.eml"), "admin@example.org")
        assert wait_until(lambda: server.gateway.spool.counts().get("done") == 1, 15, 0.1)
        [dead] = server.gateway.spool.mails("dead")
    assert dead.last_error.startswith("Forbidden:") and "403" in dead.last_error
    assert dead.attempts == 1                                   # never retried
    assert client.get_issue(ticket).status_name == "Invalid"   # the admin's mail went on


def test_6_a_ticket_redmine_will_not_show_is_refused_at_rcpt_like_a_missing_one(
        config, ticket, fake_redmine):
    fake_redmine.hidden.add(ticket)          # 403 on its page, left out of lists
    with RunningGateway(config, lmtp=False) as server:
        with smtplib.SMTP("127.0.0.1", server.smtp_port) as smtp:
            smtp.ehlo()
            smtp.mail("owner@example.org")
            hidden = smtp.rcpt(f"ticket{ticket}@example.org")
            missing = smtp.rcpt("ticket999@example.org")
    assert hidden == (550, f"5.1.1 no such ticket #{ticket}".encode())
    assert missing == (550, b"5.1.1 no such ticket #999")


def test_6_the_pipe_answers_0_and_the_mail_is_a_dead_letter_not_a_retry(config, ticket,
                                                                        fake_redmine):
    fake_redmine.fail_next(403, path=f"/issues/{ticket}.json", method="PUT")
    raw = fixture("owner-reply.eml").replace(b"ticket1@", f"ticket{ticket}@".encode())
    result = run_mailgate("pipe", "--config", str(config), "--sender", "owner@example.org",
                          stdin=raw)
    assert result.returncode == 0, result.stderr            # taken: the MTA must not retry
    assert b"refused" in result.stderr and b"Forbidden" in result.stderr


def test_5_a_forged_marker_does_not_swallow_the_mail_it_names(config, client, ticket):
    # Before: the marker was sha256(Message-ID, route), so anyone could post the marker
    # of a mail not yet applied and make it a silent "duplicate".
    import hashlib

    owner_mail = fixture("owner-reply.eml")
    predicted = hashlib.sha256(f"owner-reply-1@mail.example.org\nticket:{ticket}".encode())
    forged = f"(mailgate:{predicted.hexdigest()[:16]})".encode()
    attack = unsigned(fixture("support-answer.eml")).replace(
        b"Message-ID: <", b"Message-ID: <attack-").rstrip() + b"\n\n" + forged + b"\n"
    with RunningGateway(config, lmtp=False) as server:
        deliver(server, ticket, attack, "support@example.org")
        assert wait_until(lambda: settled(server), 15, 0.1)
        deliver(server, ticket, owner_mail, "owner@example.org")
        assert wait_until(lambda: server.gateway.spool.counts().get("done") == 2, 15, 0.1)
        kinds = [m.outcome["kind"] for m in server.gateway.spool.mails("done")]
    assert kinds == ["applied", "applied"]
    notes = [j.notes for j in client.get_issue(ticket).journals if j.notes]
    assert forged.decode() not in notes[0]              # posted inert
    assert "It happens every evening" in notes[1]       # the owner's mail is there


def test_1_forged_results_from_an_smtp_client_that_is_not_our_mta_count_for_nothing(
        fake_redmine, client, ticket, tmp_path):
    # Before: "Authentication-Results: (relayed) mx.example.org; dkim=pass ..." at the
    # top of a mail sent straight to `serve` made anyone a verified admin.
    config = write_config(tmp_path / "m.yaml", fake_redmine.url, fake_redmine.admin_key,
                          trust={"trusted_authserv_ids": ["mx.example.org"],
                                 "trusted_relays": []})
    forged = b"Authentication-Results: (relayed) mx.example.org; dkim=pass header.d=example.org"
    raw = forged + b"\n" + unsigned(fixture("admin-sets-invalid.eml"))
    with RunningGateway(config, lmtp=False) as server:
        deliver(server, ticket, raw, "admin@example.org")
        assert wait_until(lambda: settled(server), 15, 0.1)
        [mail] = server.gateway.spool.mails("done")
    assert mail.via == "smtp 127.0.0.1"
    assert mail.outcome["plan"]["verified"] is False
    issue = client.get_issue(ticket)
    assert issue.status_name == "Open"                           # not Invalid
    assert [j.user_name for j in issue.journals if j.notes] == ["Mail Gateway"]


def test_2_a_forged_pass_below_our_mta_s_received_does_not_count(config, client, ticket):
    # What our MTA adds on top, then the mail as it came: a forged pass below Received:.
    came = b"Received: from evil.test by mx.example.org; Mon, 23 Nov 2026 10:00:00 +0000\n" + \
        b"Authentication-Results: mx.example.org; dkim=pass header.d=example.org\n" + \
        unsigned(fixture("admin-sets-invalid.eml"))
    ours_fail = b"Authentication-Results: mx.example.org; dkim=fail header.d=example.org\n"
    with RunningGateway(config, lmtp=True) as server:
        for top in (b"", ours_fail):
            raw = (top + came).replace(b"ticket1@", f"ticket{ticket}@".encode())
            with smtplib.LMTP("127.0.0.1", server.lmtp_port) as lmtp:
                lmtp.sendmail("admin@example.org", [f"ticket{ticket}@example.org"],
                              raw.replace(b"\n", b"\r\n").replace(b"Message-ID: <",
                                                                   b"Message-ID: <" + top[:8]))
        assert wait_until(lambda: server.gateway.spool.counts().get("done") == 2, 15, 0.1)
    assert client.get_issue(ticket).status_name == "Open"


def test_7_a_forged_envelope_sender_aims_no_notice_at_anyone(fake_redmine, ticket, tmp_path):
    from tests.test_notify import Relay, PortZeroController

    relay = Relay()
    controller = PortZeroController(relay, hostname="127.0.0.1", port=0)
    controller.start()
    try:
        config = write_config(tmp_path / "m.yaml", fake_redmine.url, fake_redmine.admin_key,
                              notify={"relay": f"127.0.0.1:{controller.port}",
                                      "from": "mailgate@example.org"})
        # A command the workflow refuses: a notice is due, to whoever sent the mail.
        raw = fixture("owner-confirms-unanswered.eml")
        with RunningGateway(config, lmtp=False) as server:
            deliver(server, ticket, raw, "victim@elsewhere.test")            # forged
            deliver(server, ticket, raw.replace(b"Message-ID: <", b"Message-ID: <own-"),
                    "owner@example.org")                                      # the owner's own
            assert wait_until(lambda: server.gateway.spool.counts().get("done") == 2, 15, 0.1)
            assert wait_until(lambda: relay.received, 15, 0.1)
    finally:
        controller.stop()
    assert [rcpts for _, rcpts, _ in relay.received] == [["owner@example.org"]]


def test_4_walking_ticket_numbers_ends_the_session(config, ticket):
    # Before: one Redmine GET per RCPT, no limit on refused ones: every ticket listed.
    with RunningGateway(config, lmtp=False) as server:
        with smtplib.SMTP("127.0.0.1", server.smtp_port) as smtp:
            smtp.ehlo()
            smtp.mail("walker@elsewhere.test")
            answers = [smtp.rcpt(f"ticket{n}@example.org")[0] for n in range(900, 911)]
            with pytest.raises(smtplib.SMTPServerDisconnected):
                smtp.rcpt(f"ticket{ticket}@example.org")
    assert answers == [550] * 10 + [421]
