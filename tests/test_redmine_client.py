"""RedmineClient against the fake Redmine made to fail on purpose: what each failure becomes,
what goes over the wire, and what is cached.  (What Redmine itself does is in
test_redmine_contract.py.)"""

from __future__ import annotations

import time

import pytest

from mailgate.config import RedmineSettings
from mailgate.errors import (ConfigError, Forbidden, NoSuchTicket, RedmineRejected,
                             RedmineUnavailable, TemporaryError, UnknownUser)
from mailgate.clients import transport
from mailgate.clients.redmine import RedmineClient
from support.processes import closed_url


@pytest.fixture
def client(fake_redmine):
    with RedmineClient(fake_redmine.url, fake_redmine.admin_key, timeout=2) as client:
        yield client


@pytest.fixture
def issue_id(client):
    return client.create_issue("site-a", "A ticket", "It broke.", as_user="owner")


# ------------------------------------------------------------ the wire


@pytest.mark.skipif(transport.QUICKACK is None, reason="TCP_QUICKACK is Linux's")
def test_an_answer_written_in_two_parts_is_not_held_back(fake_redmine):
    """Redmine under WEBrick writes an answer's header and body apart, without
    TCP_NODELAY: Nagle's algorithm holds the body until the header is acknowledged,
    and Linux delays that ACK by 40 ms or more (issue 16: a GET Redmine served in
    15 ms reached us after 64 ms).  The client acknowledges each answer at once."""
    fake_redmine.nodelay = False
    with RedmineClient(fake_redmine.url, fake_redmine.admin_key) as client:
        client.status_names()                   # the connection is made
        times = []
        for _ in range(5):
            started = time.perf_counter()
            client.status_names()               # on the kept-alive connection
            times.append(time.perf_counter() - started)
    assert min(times) < 0.02, f"every answer was held back: {times}"


# ------------------------------------------------------ temporary failures


def test_connection_refused_is_unavailable():
    with RedmineClient(closed_url(), "k", connect_timeout=1) as client:
        with pytest.raises(RedmineUnavailable, match="cannot reach Redmine"):
            client.current_user()
        # An RCPT check must defer the mail, not say "no such ticket".
        with pytest.raises(RedmineUnavailable):
            client.issue_exists(1)


def test_a_slow_answer_is_unavailable(fake_redmine):
    fake_redmine.delay = 0.5
    with RedmineClient(fake_redmine.url, fake_redmine.admin_key, timeout=0.1) as client:
        with pytest.raises(RedmineUnavailable, match="in time"):
            client.current_user()


@pytest.mark.parametrize("code", [500, 502, 503, 504, 429])
def test_server_errors_and_throttling_are_unavailable(client, fake_redmine, issue_id, code):
    fake_redmine.fail_next(code)
    with pytest.raises(RedmineUnavailable, match=str(code)):
        client.add_note(issue_id, "hello", as_user="owner")


def test_a_422_without_messages_is_a_concurrent_edit_to_retry(client, fake_redmine, issue_id):
    client.current_user()
    fake_redmine.fail_next(422, body={"errors": []}, path="/issues/")
    with pytest.raises(RedmineUnavailable, match="concurrent edit"):
        client.add_note(issue_id, "hello")


def test_unavailable_is_temporary():
    assert issubclass(RedmineUnavailable, TemporaryError)


def test_no_retries_behind_the_callers_back(client, fake_redmine):
    fake_redmine.fail_next(503)
    with pytest.raises(RedmineUnavailable):
        client.current_user()
    assert fake_redmine.request_count == 1
    assert client.current_user().login == "admin"


# ----------------------------------------------- what the operator must fix


@pytest.mark.parametrize("code", [401, 403])
def test_refused_keys_are_config_errors(client, fake_redmine, code):
    fake_redmine.fail_next(code)
    with pytest.raises(ConfigError):
        client.current_user()


def test_a_403_on_a_ticket_refuses_that_mail_not_the_gateway(client, fake_redmine):
    # Issue 18: a 403 was a ConfigError, retried for five days while the ticket's
    # later mail waited behind it.
    fake_redmine.fail_next(403)
    with pytest.raises(Forbidden):
        client.get_issue(1)
    fake_redmine.fail_next(403)
    with pytest.raises(Forbidden, match="olive may not"):
        client.add_note(1, "hello", as_user="olive")


def test_a_non_admin_key_cannot_list_custom_fields(fake_redmine, issue_id):
    with RedmineClient(fake_redmine.url, fake_redmine.key("support")) as client:
        with pytest.raises(ConfigError, match="403"):
            client.set_custom_field(issue_id, "discord-thread", True)


def test_a_url_that_is_not_redmine_is_a_config_error(fake_redmine):
    with RedmineClient(fake_redmine.url + "/not-redmine", fake_redmine.admin_key) as client:
        with pytest.raises(ConfigError, match="Redmine URL"):
            client.status_ids({"open": "Open"})


def test_an_answer_that_is_not_json_is_a_config_error(client, fake_redmine):
    fake_redmine.fail_next(200, body=b"<html>It works!</html>")
    with pytest.raises(ConfigError, match="JSON"):
        client.tracker_id("Support")


# --------------------------------------------------- what refuses the mail


def test_404_on_an_issue_is_no_such_ticket(client, fake_redmine):
    with pytest.raises(NoSuchTicket, match="#77"):
        client.get_issue(77)


def test_412_is_unknown_user(client, fake_redmine):
    fake_redmine.fail_next(412)
    with pytest.raises(UnknownUser):
        client.current_user()


def test_422_with_messages_carries_them(client, fake_redmine, issue_id):
    client.current_user()
    fake_redmine.fail_next(422, body={"errors": ["Subject cannot be blank", "Nope"]},
                           path="/issues/")
    with pytest.raises(RedmineRejected) as rejected:
        client.add_note(issue_id, "hello")
    assert rejected.value.messages == ["Subject cannot be blank", "Nope"]
    assert "Subject cannot be blank; Nope" in str(rejected.value)


def test_other_client_errors_are_rejected(client, fake_redmine):
    fake_redmine.fail_next(400)
    with pytest.raises(RedmineRejected, match="400"):
        client.tracker_id("Support")


def test_a_note_redmine_did_not_keep_is_not_a_success(client, fake_redmine, issue_id):
    client.current_user()
    # The PUT is answered 204 and nothing is written, as with a wrong Content-Type.
    fake_redmine.fail_next(204, path=f"/issues/{issue_id}.json")
    with pytest.raises(RedmineRejected, match="kept no note"):
        client.add_note(issue_id, "into the void")


# ------------------------------------------------------------- on the wire


def test_writes_are_json_with_the_key_and_the_sender(client, fake_redmine):
    issue_id = client.create_issue("site-a", "Hi", "There.", as_user="owner")
    client.add_note(issue_id, "hello", as_user="support")
    writes = [r for r in fake_redmine.requests if r.method in ("POST", "PUT")]
    assert [(r.method, r.path) for r in writes] == [("POST", "/issues.json"),
                                                    ("PUT", f"/issues/{issue_id}.json")]
    for request, login in zip(writes, ["owner", "support"]):
        assert request.headers["content-type"] == "application/json"
        assert request.headers["x-redmine-api-key"] == fake_redmine.admin_key
        assert request.headers["x-redmine-switch-user"] == login


def test_an_upload_is_octet_stream_with_its_filename(client, fake_redmine):
    client.upload(b"\x00\x01", "dump.bin", "application/x-dump")
    [request] = fake_redmine.requests
    assert (request.method, request.path, request.query) == ("POST", "/uploads.json",
                                                             {"filename": "dump.bin"})
    assert request.headers["content-type"] == "application/octet-stream"
    assert request.body == b"\x00\x01"


def test_no_switch_user_header_without_a_sender(client, fake_redmine):
    client.issue_exists(1)
    assert "x-redmine-switch-user" not in fake_redmine.requests[0].headers


def test_from_settings_uses_the_url_key_and_timeout(fake_redmine):
    settings = RedmineSettings(url=fake_redmine.url, api_key=fake_redmine.admin_key, timeout=4)
    client = RedmineClient.from_settings(settings)
    assert (client.url, client.timeout[1]) == (fake_redmine.url, 4)
    assert client.current_user().login == "admin"


# ------------------------------------------------------------------ caching


def paths(fake_redmine) -> list[str]:
    return [r.path for r in fake_redmine.requests]


def test_authors_are_looked_up_once(client, fake_redmine):
    first = client.create_issue("site-a", "one", "x", as_user="owner")
    second = client.create_issue("site-a", "two", "x", as_user="owner")
    client.get_issue(first)
    client.get_issue(second)
    assert sum(p.startswith("/users/") and p[7].isdigit() for p in paths(fake_redmine)) == 1


def test_users_by_address_are_looked_up_once(client, fake_redmine):
    assert client.find_user_by_email("owner@example.org").login == "owner"
    assert client.find_user_by_email("OWNER@example.org").login == "owner"
    assert client.find_user_by_email("nobody@example.org") is None
    assert client.find_user_by_email("nobody@example.org") is None
    assert paths(fake_redmine).count("/users.json") == 2
    client.clear_caches()
    client.find_user_by_email("owner@example.org")
    assert paths(fake_redmine).count("/users.json") == 3


def test_custom_field_ids_are_looked_up_once(client, fake_redmine, issue_id):
    client.set_custom_field(issue_id, "discord-thread", True)
    client.set_custom_field(issue_id, "discord-thread-id", "1")
    assert paths(fake_redmine).count("/custom_fields.json") == 1


def test_the_key_check_always_asks(client, fake_redmine):
    client.current_user()
    client.current_user()
    assert paths(fake_redmine).count("/users/current.json") == 2


# ------------------------------------------------------------------ listing


def test_issues_pages_through_everything(client, fake_redmine):
    for n in range(205):
        client.create_issue("site-b", f"ticket {n}", "x")
    fake_redmine.requests.clear()
    issues = client.issues(project="site-b")
    assert [i.id for i in issues] == sorted(i.id for i in issues)
    assert len(issues) == 205
    assert paths(fake_redmine).count("/issues.json") == 3


def test_issues_sends_redmines_filters(client, fake_redmine):
    from datetime import datetime, timedelta, timezone
    moment = datetime(2025, 3, 1, 12, 0, 0, 750000, tzinfo=timezone(timedelta(hours=1)))
    client.issues(status_id=7, updated_before=moment, project="triage")
    [request] = fake_redmine.requests
    assert request.query == {"status_id": "7", "updated_on": "<=2025-03-01T11:00:00Z",
                             "project_id": "triage", "sort": "id", "limit": "100",
                             "offset": "0"}


def test_issues_of_any_status_by_default(client, fake_redmine):
    client.issues()
    assert fake_redmine.requests[0].query["status_id"] == "*"


def test_a_fake_issue_can_be_made_old(client, fake_redmine, issue_id):
    from datetime import datetime, timezone
    fake_redmine.set_updated_on(issue_id, datetime(2020, 1, 1, tzinfo=timezone.utc))
    old = client.issues(updated_before=datetime(2021, 1, 1, tzinfo=timezone.utc))
    assert [i.id for i in old] == [issue_id]


# ------------------------------------------------------------ what it remembers


def test_a_read_stands_for_an_issue_only_after_our_last_write_and_briefly():
    """knowledge.Reads: a read asked for before a write finished (or during it) does not
    show it; an old read does not stand; a long-running gateway forgets old reads."""
    from types import SimpleNamespace

    from mailgate.clients import knowledge

    now = [100.0]
    reads = knowledge.Reads(clock=lambda: now[0])
    issue = SimpleNamespace(id=7)
    reads.saw(issue, asked_at=100.0)
    assert reads.current(7) is issue
    now[0] = 100.5
    reads.wrote(7)                                  # finished after the read was asked
    assert reads.current(7) is None
    reads.saw(issue, asked_at=100.6)
    assert reads.current(7) is issue
    now[0] = 100.6 + knowledge.FRESH_SECONDS + 0.1
    assert reads.current(7) is None and reads.seen_within(7, 300)
    now[0] += knowledge.KEEP_SECONDS
    for n in range(knowledge.KEEP_AT_MOST + 1):
        reads.saw(SimpleNamespace(id=1000 + n), asked_at=now[0])
    assert not reads.seen_within(7, 10 ** 6)


def test_a_read_brought_up_to_our_own_write_stands_until_it_is_old():
    """knowledge.Reads.wrote(..., becomes=): a write whose result is known turns the read
    it was decided on into the issue after it, dated when the read was asked; not when
    another read or write came in between."""
    from types import SimpleNamespace

    from mailgate.clients import knowledge

    now = [100.0]
    reads = knowledge.Reads(clock=lambda: now[0])
    read, after = SimpleNamespace(id=7), SimpleNamespace(id=7)
    reads.saw(read, asked_at=100.0)
    now[0] = 100.5
    reads.wrote(7, was=read, becomes=after)
    assert reads.current(7) is after
    now[0] = 100.0 + knowledge.FRESH_SECONDS + 0.1          # old: dated from the read
    assert reads.current(7) is None

    reads.saw(read, asked_at=now[0])
    now[0] += 0.1
    reads.wrote(7)                                          # a write of ours in between
    reads.wrote(7, was=read, becomes=after)
    assert reads.current(7) is None

    reads.saw(read, asked_at=now[0])
    other = SimpleNamespace(id=7)
    reads.saw(other, asked_at=now[0] + 0.01)                # another read in between
    now[0] += 0.1
    reads.wrote(7, was=read, becomes=after)
    assert reads.current(7) is None
