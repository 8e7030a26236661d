"""Through the real entry points: senders are told once when their mail could not do
what they meant, and a flood from one sender is slowed down with 4xx answers."""

from __future__ import annotations

import smtplib

from mailgate.clients.redmine import RedmineClient
from support.configs import write_config
from tests.helpers import fixture, run_mailgate
from tests.load import wait_until
from tests.servers import RunningGateway
from tests.test_notify import relay  # noqa: F401  (the aiosmtpd relay fixture)


def test_a_refused_command_is_answered_once_per_day(fake_redmine, relay, tmp_path):  # noqa: F811
    client = RedmineClient(fake_redmine.url, fake_redmine.admin_key)
    ticket = client.create_issue("site-a", "Router", "Drops.", as_user="owner")
    config = write_config(tmp_path / "m.yaml", fake_redmine.url, fake_redmine.admin_key,
                          notify={"relay": f"127.0.0.1:{relay.controller.port}",
                                  "from": "mailgate@example.org"})
    raw = fixture("owner-confirms-unanswered.eml").replace(b"ticket1@",
                                                           f"ticket{ticket}@".encode())
    with RunningGateway(config, lmtp=False) as server:
        with smtplib.SMTP("127.0.0.1", server.smtp_port) as smtp:
            smtp.sendmail("owner@example.org", [f"ticket{ticket}@example.org"], raw)
            smtp.sendmail("owner@example.org", [f"ticket{ticket}@example.org"],
                          raw.replace(b"<owner-confirms-unanswered-1@", b"<again-1@"))
        assert wait_until(lambda: relay.received, 15, 0.1)
        assert wait_until(lambda: server.gateway.spool.counts().get("done") == 2, 15, 0.1)
    [(mail_from, rcpts, data)] = relay.received
    notice = relay.messages()[0]
    assert (mail_from, rcpts) == ("<>", ["owner@example.org"])     # the null sender
    assert notice["Auto-Submitted"] == "auto-replied"
    assert notice["In-Reply-To"] == "<owner-confirms-unanswered-1@mail.example.org>"
    assert "the ticket has not been answered yet" in " ".join(notice.get_content().split())
    # The mail itself still became a comment.
    assert client.get_issue(ticket).status_name == "Open"


def test_a_flood_from_one_sender_gets_450_over_smtp(fake_redmine, tmp_path):
    config = write_config(tmp_path / "m.yaml", fake_redmine.url, fake_redmine.admin_key,
                          limits={"per_sender": {"mails": 3, "per_seconds": 600}})
    raw = fixture("site-a-new-ticket.eml")
    with RunningGateway(config, lmtp=False) as server:
        with smtplib.SMTP("127.0.0.1", server.smtp_port) as smtp:
            smtp.ehlo()
            answers = []
            for n in range(5):
                code, text = smtp.docmd("MAIL", "FROM:<owner@example.org>")
                answers.append(code)
                if code == 250:
                    smtp.rcpt("site-a@example.org")
                    smtp.data(raw.replace(b"<site-a-new-ticket-1@", f"<flood-{n}@".encode()))
                else:
                    assert text.startswith(b"4.7.1 too many messages from <owner@example.org>")
            code, _ = smtp.docmd("MAIL", "FROM:<other@example.org>")
    assert answers == [250, 250, 250, 450, 450]
    assert code == 250       # other senders are not held back


def test_a_flood_through_the_pipe_exits_75(fake_redmine, tmp_path):
    config = write_config(tmp_path / "m.yaml", fake_redmine.url, fake_redmine.admin_key,
                          limits={"per_sender": {"mails": 2, "per_seconds": 600}})
    codes = []
    for n in range(3):
        raw = fixture("site-a-new-ticket.eml").replace(b"<site-a-new-ticket-1@",
                                                       f"<pipe-flood-{n}@".encode())
        result = run_mailgate("pipe", "--config", str(config), "--sender", "owner@example.org",
                              stdin=raw)
        codes.append(result.returncode)
    assert codes == [0, 0, 75]
    assert b"too many messages" in result.stderr
