"""`mailgate pipe`: the MTA pipe transport's exit codes (sysexits), through the real command."""

from __future__ import annotations

import pytest

from mailgate.clients.redmine import RedmineClient
from support.configs import write_config
from support.processes import free_port
from tests.helpers import fixture, run_mailgate


@pytest.fixture
def config(tmp_path, redmine):
    return write_config(tmp_path / "mailgate.yaml", redmine.url, redmine.admin_key)


@pytest.fixture
def ticket(redmine):
    client = RedmineClient(redmine.url, redmine.admin_key)
    return client.create_issue("site-a", "pipe test", "The router drops.", as_user="owner")


def pipe(config, raw: bytes, *args: str):
    result = run_mailgate("pipe", "--config", str(config), *args, stdin=raw,
                          env={"MAILGATE_LOG_LEVEL": "WARNING"})
    return result.returncode, result.stderr.decode().strip().splitlines()


def test_processed_mail_exits_0_and_says_what_it_did(config, ticket):
    status, lines = pipe(config, fixture("support-answer.eml"), "--recipient",
                         f"ticket{ticket}@example.org")
    assert status == 0
    assert lines[-1] == f"mailgate: applied #{ticket} answer: open -> answered"


def test_recipient_from_headers_when_not_given(config, ticket):
    raw = fixture("owner-reply.eml").replace(b"ticket1@", f"ticket{ticket}@".encode())
    status, lines = pipe(config, raw)
    assert status == 0 and f"#{ticket} give-info" in lines[-1]


def test_delivered_to_wins_over_to(config, ticket):
    raw = f"Delivered-To: ticket{ticket}@example.org\n".encode() + fixture("owner-reply.eml")
    status, lines = pipe(config, raw)
    assert status == 0 and f"#{ticket}" in lines[-1]


@pytest.mark.parametrize("raw, why", [(b"", "empty"), (b"\n\n  \n", "empty"),
                                      (fixture("garbage.eml"), "unparseable")])
def test_empty_or_unparseable_input_is_65(config, raw, why):
    status, lines = pipe(config, raw, "--recipient", "ticket1@example.org")
    assert status == 65 and why in lines[-1]


def test_unknown_address_is_67(config):
    status, lines = pipe(config, fixture("unknown-address.eml"))
    assert status == 67 and "served here" in lines[-1]
    status, lines = pipe(config, fixture("owner-reply.eml"), "--recipient", "nobody@example.org")
    assert status == 67 and "no such mailbox" in lines[-1]


def test_no_such_ticket_is_67(config):
    status, lines = pipe(config, fixture("owner-reply.eml"), "--recipient",
                         "ticket999999@example.org")
    assert status == 67 and lines[-1] == "mailgate: no such ticket #999999"


def test_sender_not_permitted_is_77(config):
    # site-b rejects senders Redmine does not know.
    status, lines = pipe(config, fixture("unknown-sender-reply.eml"), "--recipient",
                         "site-b@example.org")
    assert status == 77 and "stranger@elsewhere.test" in lines[-1]


def test_redmine_unreachable_is_75(tmp_path):
    config = write_config(tmp_path / "m.yaml", f"http://127.0.0.1:{free_port()}", "key")
    status, lines = pipe(config, fixture("owner-reply.eml"))
    assert status == 75 and "Redmine" in lines[-1]


def test_configuration_error_is_78(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("domains: [example.org]\nredmine: {url: http://127.0.0.1:9}\n")
    status, lines = pipe(bad, fixture("owner-reply.eml"))
    assert status == 78 and "redmine.api_key" in lines[-1]


def test_too_big_is_65(config):
    raw = fixture("owner-reply.eml") + b"x" * 250_000   # the test config allows 200 kB
    status, lines = pipe(config, raw)
    assert status == 65 and "exceeds" in lines[-1]


def test_queue_only_spools_and_exits_and_the_worker_applies_it(config, ticket, redmine):
    raw = fixture("support-answer.eml")
    status, lines = pipe(config, raw, "--queue-only", "--recipient", f"ticket{ticket}@example.org")
    assert status == 0 and lines[-1] == "mailgate: spooled as 1"
    client = RedmineClient(redmine.url, redmine.admin_key)
    assert client.get_issue(ticket).journals == ()        # not applied yet
    result = run_mailgate("worker", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert client.get_issue(ticket).status_name == "Answered"


def test_queue_only_still_refuses_what_it_can_know(config):
    status, lines = pipe(config, fixture("owner-reply.eml"), "--queue-only", "--recipient",
                         "nobody@example.org")
    assert status == 67
    assert pipe(config, b"", "--queue-only")[0] == 65
