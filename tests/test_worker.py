"""The spool worker: backoff, giving up after the maximum age, and poison mail."""

from __future__ import annotations

import logging

from mailgate.config import load_config
from mailgate.gateway import Envelope, build_gateway
from mailgate.errors import RedmineUnavailable
from mailgate.outcome import Outcome
from mailgate.clients.redmine import RedmineClient
from mailgate.runner import Backoff
from mailgate.worker import Worker
from support.configs import write_config
from tests.helpers import fixture


def gateway_for(fake_redmine, tmp_path, **spool):
    config = write_config(tmp_path / "m.yaml", fake_redmine.url, fake_redmine.admin_key,
                          spool=spool)
    return build_gateway(load_config(config, environ={}))


def test_backoff_doubles_with_jitter_up_to_the_maximum():
    policy = Backoff(first_delay=30, max_delay=3600)
    for attempt, base in [(1, 30), (2, 60), (3, 120), (8, 3600), (20, 3600)]:
        delays = [policy.delay(attempt) for _ in range(50)]
        assert all(base * 0.5 <= d <= base for d in delays)
        assert len(set(delays)) > 1          # jitter: not all the same


def test_temporary_failures_retry_then_dead_letter_after_max_age(fake_redmine, tmp_path):
    gateway = gateway_for(fake_redmine, tmp_path)
    [d] = gateway.receive(Envelope("o@x", ("site-a@example.org",),
                                   fixture("site-a-new-ticket.eml")))
    fake_redmine.fail_next(status=503, count=100)
    worker = Worker(gateway)
    _, error = worker.run_once()
    assert isinstance(error, RedmineUnavailable)
    mail = gateway.spool.get(d.spool_id)
    assert mail.state == "queued" and mail.next_attempt_at > mail.received_at + 10
    # An operator's retry makes it due now; past the maximum age it is given up.
    gateway.spool.retry(d.spool_id)
    Worker(gateway, Backoff(max_age=0.0)).run_once()
    mail = gateway.spool.get(d.spool_id)
    assert mail.state == "dead" and mail.last_error.startswith("gave up after 2 attempts")


def test_permanent_failure_is_dead_lettered_at_once(fake_redmine, tmp_path):
    gateway = gateway_for(fake_redmine, tmp_path)
    [d] = gateway.receive(Envelope("o@x", ("site-a@example.org",),
                                   fixture("site-a-new-ticket.eml")))
    fake_redmine.fail_next(status=422, count=1, body={"errors": ["Subject is too long"]},
                           path="/issues.json")
    Worker(gateway).run_once()
    mail = gateway.spool.get(d.spool_id)
    assert mail.state == "dead" and "Subject is too long" in mail.last_error


def test_a_poison_mail_is_dead_lettered_and_the_others_go_on(fake_redmine, tmp_path, caplog):
    client = RedmineClient(fake_redmine.url, fake_redmine.admin_key)
    first = client.create_issue("site-a", "One", "x", as_user="owner")
    second = client.create_issue("site-a", "Two", "x", as_user="owner")
    gateway = gateway_for(fake_redmine, tmp_path)
    for ticket in (first, second):
        raw = fixture("support-answer.eml").replace(b"ticket1@", f"ticket{ticket}@".encode())
        raw = raw.replace(b"<support-answer-1@", f"<support-answer-{ticket}@".encode())
        gateway.receive(Envelope("s@x", (f"ticket{ticket}@example.org",), raw, via="lmtp"))
    # Redmine answers the first read of the tickets with JSON that is not a list of
    # issues: the handler crashes.
    fake_redmine.fail_next(status=200, count=1, body={"not": "issues"}, path="/issues.json",
                           method="GET")
    with caplog.at_level(logging.ERROR, logger="mailgate.worker"):
        results = Worker(gateway).run_until_idle()
    assert [type(r[1]).__name__ for r in results] == ["KeyError", "Outcome"]
    assert isinstance(results[1][1], Outcome) and results[1][1].ticket == second
    dead = gateway.spool.mails("dead")
    assert len(dead) == 1 and dead[0].last_error.startswith("crash: KeyError")
    assert "Traceback" in caplog.text
