"""One log line per mail, /metrics in Prometheus format, and /healthz."""

from __future__ import annotations

import logging
import smtplib
import time

import requests

from mailgate.clients.redmine import RedmineClient
from support.configs import write_config
from tests.helpers import fixture
from tests.load import wait_until
from tests.servers import RunningGateway


def send(server, ticket: int, raw: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", server.smtp_port) as smtp:
        smtp.sendmail("support@example.org", [f"ticket{ticket}@example.org"], raw)


def test_metrics_health_and_the_log_line(fake_redmine, tmp_path, caplog):
    client = RedmineClient(fake_redmine.url, fake_redmine.admin_key)
    ticket = client.create_issue("site-a", "Router", "Drops.", as_user="owner")
    config = write_config(tmp_path / "m.yaml", fake_redmine.url, fake_redmine.admin_key,
                          server={"redmine_down_alarm": 1, "spool_stuck_alarm": 600},
                          spool={"retry_first_delay": 60})
    raw = fixture("support-answer.eml").replace(b"ticket1@", f"ticket{ticket}@".encode())
    with caplog.at_level(logging.INFO, logger="mailgate"), \
            RunningGateway(config, lmtp=False, metrics=True) as server:
        base = f"http://127.0.0.1:{server.metrics_port}"
        send(server, ticket, raw)
        assert wait_until(lambda: server.gateway.spool.counts().get("done") == 1, 10, 0.1)
        metrics = requests.get(f"{base}/metrics", timeout=5).text
        assert 'mailgate_mails_total{outcome="applied"} 1.0' in metrics
        assert 'mailgate_spool_mails{state="done"} 1.0' in metrics
        assert 'mailgate_redmine_request_seconds_count{method="PUT"} 1.0' in metrics
        # By kind, without the ids (bench B reports requests per note by kind).
        assert 'mailgate_redmine_requests_total{request="PUT /issues/:id.json"} 1.0' in metrics
        assert "mailgate_spool_oldest_age_seconds 0.0" in metrics
        assert requests.get(f"{base}/healthz", timeout=5).text == "ok\n"

        # Redmine goes away: the mail waits; after the alarm time /healthz fails.
        fake_redmine.fail_next(status=503, count=1000)
        send(server, ticket, raw.replace(b"<support-answer-1@", b"<support-answer-2@"))
        assert wait_until(lambda: server.gateway.metrics.redmine_down_since, 10, 0.1)
        time.sleep(1.2)
        answer = requests.get(f"{base}/healthz", timeout=5)
        assert answer.status_code == 503
        assert answer.text.startswith("Redmine unreachable for")
        assert 'mailgate_redmine_errors_total{error="RedmineUnavailable"} 1.0' in \
            requests.get(f"{base}/metrics", timeout=5).text
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("mail key="))
    assert line.startswith("mail key=support-answer-1@mail.example.org "
                           f"route=ticket:{ticket} role=other step=PostNote action=answer outcome=applied "
                           "duration_ms=")


def test_discord_latency_and_queue_in_metrics(fake_redmine, tmp_path):
    from tests.fakes.discord import FakeDiscord

    client = RedmineClient(fake_redmine.url, fake_redmine.admin_key)
    ticket = client.create_issue("site-a", "Router", "Drops.", as_user="owner")
    raw = fixture("support-answer.eml").replace(b"ticket1@", f"ticket{ticket}@".encode())
    with FakeDiscord() as discord:
        hook = discord.add_webhook(forum=True)
        config = write_config(tmp_path / "m.yaml", fake_redmine.url, fake_redmine.admin_key,
                              discord={"api_base": discord.api_base,
                                       "channels": {"site-a": hook}, "triage": hook})
        with RunningGateway(config, lmtp=False, metrics=True) as server:
            send(server, ticket, raw)
            assert wait_until(lambda: discord.threads(), 10, 0.1)
            metrics = requests.get(f"http://127.0.0.1:{server.metrics_port}/metrics",
                                   timeout=5).text
    assert 'mailgate_discord_request_seconds_count{status="2xx"} 1.0' in metrics
    # Every queue's runner shows the same way (mailgate.runner).
    assert 'mailgate_queue_items{kind="sent",queue="discord"} 1.0' in metrics
    assert 'mailgate_queue_items{kind="done",queue="spool"}' in metrics
    assert 'mailgate_runner_up{queue="discord"} 1.0' in metrics


def test_refusals_are_counted(fake_redmine, tmp_path):
    """What the gateway turned away at the door is in /metrics, by stage and error
    (issue 17, point 3)."""
    config = write_config(tmp_path / "m.yaml", fake_redmine.url, fake_redmine.admin_key,
                          server={"max_recipients": 1},
                          limits={"per_sender": {"mails": 1, "per_seconds": 3600}})
    with RunningGateway(config, lmtp=False, metrics=True) as server:
        base = f"http://127.0.0.1:{server.metrics_port}"
        with smtplib.SMTP("127.0.0.1", server.smtp_port) as smtp:
            smtp.ehlo()
            assert smtp.mail("flood@example.org")[0] == 250
            assert smtp.rcpt("nobody@example.org")[0] == 550
            assert smtp.rcpt("site-a@example.org")[0] == 250
            assert smtp.rcpt("site-b@example.org")[0] == 452
            smtp.rset()
            assert smtp.mail("flood@example.org")[0] == 450
        metrics = requests.get(f"{base}/metrics", timeout=5).text
    for stage, error in (("rcpt", "UnknownAddress"), ("rcpt", "TooManyRecipients"),
                         ("mail", "RateLimited")):
        assert f'mailgate_smtp_refusals_total{{error="{error}",stage="{stage}"}} 1.0' in \
            metrics, metrics

