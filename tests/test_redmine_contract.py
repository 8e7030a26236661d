"""What mailgate relies on Redmine to do, checked against the fake and the real Redmine.

Every test runs twice (``redmine`` is "fake" and "real"): when the real one
behaves differently, the fake is wrong and this file says how.  Tests make
their own issues, with unique subjects, so they need no order and no reset.
The first half goes through ``RedmineClient``; the second half sends raw HTTP
to pin the quirks the client works around.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest
import requests

from mailgate.errors import (ConfigError, NoSuchTicket, RedmineRejected, UnknownUser)
from mailgate.clients.redmine import STATUS_REFUSED, RedmineClient
from tests.fakes import FakeRedmine
from workflow import load_default_table

NO_SUCH_ISSUE = 10_000_000


@pytest.fixture
def client(redmine):
    with RedmineClient(redmine.url, redmine.admin_key, timeout=10) as client:
        yield client


@pytest.fixture
def status(client):
    """Workflow state id -> Redmine status id, from the states' display names."""
    return client.status_ids(load_default_table().states)


def unique(what: str = "contract") -> str:
    return f"{what} {uuid.uuid4().hex[:12]}"


def new_issue(client, as_user="owner", project="site-a", **kwargs) -> int:
    return client.create_issue(project, unique(), "Something is broken.", as_user=as_user,
                               **kwargs)


# ------------------------------------------------------------ start-up checks


def test_the_admin_key_is_the_admin(client):
    user = client.current_user()
    assert (user.login, user.email, user.name) == ("admin", "admin@example.org", "Redmine Admin")


def test_a_bad_key_is_a_config_error_that_says_so(redmine):
    with RedmineClient(redmine.url, "0" * 39 + "f") as client:
        with pytest.raises(ConfigError, match="API key rejected by Redmine"):
            client.current_user()


def test_every_workflow_state_has_a_status(status):
    assert set(status) == {"open", "needs-info", "answered", "solved", "expired", "invalid"}
    assert len(set(status.values())) == 6


def test_a_missing_status_is_a_config_error_naming_it(client):
    with pytest.raises(ConfigError, match="'Waiting for Godot'"):
        client.status_ids({"open": "Open", "limbo": "Waiting for Godot"})


def test_tracker_by_name(client):
    assert client.tracker_id("Support") > 0
    with pytest.raises(ConfigError, match="'Bug'"):
        client.tracker_id("Bug")


# --------------------------------------------------------------- new issues


def test_a_new_issue_as_the_owner_is_theirs_and_open(client, status):
    subject = unique("new issue")
    issue_id = client.create_issue("site-a", subject, "It broke.", as_user="owner",
                                   tracker_id=client.tracker_id("Support"))
    issue = client.get_issue(issue_id)
    assert (issue.subject, issue.description, issue.project_name) == (subject, "It broke.",
                                                                      "site-a")
    assert (issue.author_name, issue.author_email) == ("Olive Owner", "owner@example.org")
    assert (issue.status_id, issue.status_name, issue.status_closed) == (status["open"], "Open",
                                                                         False)
    assert issue.tracker_id == client.tracker_id("Support")
    assert issue.journals == ()


def test_a_new_issue_with_custom_fields_by_name(client):
    issue_id = new_issue(client, custom_fields={"discord-thread": True,
                                                "discord-thread-id": "4242"})
    fields = client.get_issue(issue_id).custom_fields
    assert (fields["discord-thread"], fields["discord-thread-id"]) == ("1", "4242")


def test_custom_fields_from_extra_are_by_name_too(client):
    issue_id = new_issue(client, extra={"custom_fields": {"discord-thread-id": "7"},
                                        "priority_id": 2})
    assert client.get_issue(issue_id).custom_fields["discord-thread-id"] == "7"


def test_a_new_issue_takes_the_workflow_to_the_status_asked_for(client, status):
    # Redmine starts it Open whatever it is told; the client then moves it.
    issue_id = new_issue(client, status_id=status["solved"])
    assert client.get_issue(issue_id).status_id == status["solved"]


def test_a_new_issue_stays_open_when_the_workflow_refuses_and_says_so(client, status, caplog):
    with caplog.at_level(logging.WARNING, logger="mailgate.clients.redmine"):
        issue_id = new_issue(client, status_id=status["answered"])
    assert client.get_issue(issue_id).status_id == status["open"]
    assert STATUS_REFUSED in caplog.text


def test_an_empty_subject_is_rejected_with_redmines_message(client):
    with pytest.raises(RedmineRejected) as refused:
        client.create_issue("site-a", "", "no subject", as_user="owner")
    assert refused.value.messages == ["Subject cannot be blank"]


def test_a_subject_over_255_characters_is_rejected_with_redmines_message(client):
    # Characters, not bytes: 255 accented letters are 510 bytes and pass.
    assert client.get_issue(client.create_issue("site-a", "é" * 254 + unique()[-1], "long",
                                                as_user="owner")).subject.startswith("é")
    with pytest.raises(RedmineRejected) as refused:
        client.create_issue("site-a", "x" * 256, "too long", as_user="owner")
    assert refused.value.messages == ["Subject is too long (maximum is 255 characters)"]


def test_an_unknown_project_is_rejected_with_redmines_messages(client):
    with pytest.raises(RedmineRejected) as refused:
        client.create_issue("no-such-project", unique(), "where?", as_user="owner")
    assert "Project cannot be blank" in refused.value.messages


def test_an_unknown_custom_field_is_a_config_error(client):
    with pytest.raises(ConfigError, match="'no-such-field'"):
        new_issue(client, custom_fields={"no-such-field": 1})


# ----------------------------------------------------------------- uploads


def test_an_upload_is_attached_to_a_new_issue(client):
    upload = client.upload(b"%PDF-1.4 not really", "report.pdf", "application/pdf")
    assert set(upload) == {"token", "filename", "content_type"}
    issue = client.get_issue(new_issue(client, uploads=[upload]))
    [attachment] = issue.attachments
    assert (attachment.filename, attachment.filesize, attachment.content_type) == (
        "report.pdf", 19, "application/pdf")


def test_an_upload_is_attached_with_a_note(client):
    issue_id = new_issue(client)
    data = "Grüße\n".encode()
    upload = client.upload(data, "log.txt", "text/plain")
    result = client.add_note(issue_id, "The log.", uploads=[upload], as_user="owner")
    [attachment] = result.issue.attachments
    assert (attachment.filename, attachment.filesize) == ("log.txt", len(data))
    [journal] = result.issue.journals
    assert {"property": "attachment", "name": str(attachment.id), "old_value": None,
            "new_value": "log.txt"} in journal.details


def test_an_upload_over_redmines_attachment_max_size_is_rejected_with_its_message(client):
    # Redmine's default attachment_max_size: 5120 kB, the limit itself allowed.
    assert client.upload(b"x" * (5 * 1024 * 1024), "at-the-limit.bin",
                         "application/octet-stream")["token"]
    with pytest.raises(RedmineRejected) as refused:
        client.upload(b"x" * (5 * 1024 * 1024 + 1), "over.bin", "application/octet-stream")
    assert refused.value.messages == ["This file cannot be uploaded because it exceeds the"
                                      " maximum allowed file size (5242880)"]


# ------------------------------------------------------------------- notes


def test_a_note_as_the_owner_is_by_the_owner_word_for_word(client):
    issue_id = new_issue(client)
    text = "First line\r\nsecond line with trailing space \n\n-- \nOlive"
    result = client.add_note(issue_id, text, as_user="owner")
    [journal] = result.issue.journals
    assert (journal.user_name, journal.notes, journal.status_change) == ("Olive Owner", text,
                                                                         None)
    assert journal.user_id == client.find_user_by_email("owner@example.org").id
    assert (result.journal_id, result.status_requested, result.status_applied) == (
        journal.id, None, True)
    assert result.outcome == "note added"


def test_the_journal_found_is_the_newest_of_the_same_text(client):
    issue_id = new_issue(client)
    first = client.add_note(issue_id, "+1", as_user="owner").journal_id
    second = client.add_note(issue_id, "+1", as_user="owner").journal_id
    assert second > first


def test_an_allowed_status_change_is_applied(client, status):
    issue_id = new_issue(client)
    result = client.add_note(issue_id, "Try turning it off and on.", status_id=status["answered"],
                             as_user="support")
    assert result.status_applied and result.outcome == "status changed"
    assert result.issue.status_id == status["answered"]
    [journal] = result.issue.journals
    assert journal.status_change == (status["open"], status["answered"])
    assert journal.id == result.journal_id


def test_a_disallowed_status_change_is_dropped_and_reported(client, status):
    # "other" is a Requester, and Requesters may only move their own tickets.
    issue_id = new_issue(client)
    result = client.add_note(issue_id, "Solved for me too.", status_id=status["solved"],
                             as_user="other")
    assert (result.status_requested, result.status_applied) == (status["solved"], False)
    assert result.outcome == STATUS_REFUSED
    assert result.issue.status_id == status["open"]
    [journal] = result.issue.journals
    assert (journal.notes, journal.user_name, journal.status_change) == (
        "Solved for me too.", "Oscar Other", None)
    assert result.journal_id == journal.id


def test_only_admin_may_expire_or_invalidate(client, status):
    issue_id = new_issue(client)
    assert not client.add_note(issue_id, "x", status_id=status["expired"],
                               as_user="owner").status_applied
    assert not client.add_note(issue_id, "x", status_id=status["invalid"],
                               as_user="gateway").status_applied
    assert client.add_note(issue_id, "Spam.", status_id=status["invalid"]).status_applied


def test_an_unknown_status_id_is_dropped_like_a_disallowed_one(client, status):
    issue_id = new_issue(client)
    result = client.add_note(issue_id, "?", status_id=999_999, as_user="support")
    assert not result.status_applied and result.issue.status_id == status["open"]
    assert result.journal_id is not None


def test_the_owner_confirms_and_reopens_their_own_ticket(client, status):
    issue_id = new_issue(client)
    assert client.add_note(issue_id, "Fixed it.", status_id=status["solved"],
                           as_user="owner").status_applied
    reopened = client.add_note(issue_id, "Broken again.", status_id=status["open"],
                               as_user="owner")
    assert reopened.status_applied and reopened.issue.status_id == status["open"]


def test_a_status_change_without_a_note(client, status):
    issue_id = new_issue(client)
    result = client.add_note(issue_id, "", status_id=status["needs-info"], as_user="support")
    assert result.status_applied and result.journal_id is not None


@pytest.mark.parametrize("login", ["nobody-at-all", "locked"])
def test_writing_as_an_unknown_or_locked_user_is_unknown_user(client, login):
    issue_id = new_issue(client)
    with pytest.raises(UnknownUser, match=login):
        client.add_note(issue_id, "hello", as_user=login)
    with pytest.raises(UnknownUser):
        new_issue(client, as_user=login)
    assert client.get_issue(issue_id).journals == ()


def test_a_key_that_cannot_switch_user_does_not_write_as_itself(redmine, client):
    issue_id = new_issue(client)
    with RedmineClient(redmine.url, redmine.key("support")) as support:
        with pytest.raises(ConfigError, match="not an admin"):
            support.add_note(issue_id, "as someone else", as_user="owner")
    assert client.get_issue(issue_id).journals == ()


# ------------------------------------- what Redmine keeps, known before the write
# add_note(read_back=False) skips the read-back when Redmine's own answers say what it
# keeps (mailgate.clients.knowledge); these pin the answers it relies on.


def test_allowed_statuses_are_the_workflow_of_the_writer(client, status):
    issue_id = new_issue(client)
    assert client.allowed_statuses(issue_id, "support") == {
        status["open"], status["needs-info"], status["answered"]}
    assert client.allowed_statuses(issue_id, "owner") == {status["open"], status["solved"]}
    client.add_note(issue_id, "Answered.", status_id=status["answered"], as_user="support")
    assert client.allowed_statuses(issue_id, "support") == {
        status["answered"], status["needs-info"]}


def test_allowed_statuses_are_offered_to_a_writer_whose_change_redmine_drops(client, status):
    """The workflow's offer only: "other" (a Requester, not the author, so not allowed
    to edit) is offered Solved, and a PUT of theirs drops it.  What a writer may edit
    is learnt from a read-back instead."""
    issue_id = new_issue(client)
    assert status["solved"] in client.allowed_statuses(issue_id, "other")
    result = client.add_note(issue_id, "Done?", status_id=status["solved"], as_user="other")
    assert result.status_refused


def test_issues_by_id_in_one_request(client, status):
    first, second = new_issue(client), new_issue(client, project="site-b")
    client.add_note(second, "Answered.", status_id=status["answered"], as_user="support")
    found = client.read_issues([first, second, NO_SUCH_ISSUE])
    assert set(found) == {first, second}
    assert (found[first].status_id, found[second].status_id) == (status["open"],
                                                                  status["answered"])
    assert (found[second].project_name, found[second].author_email) == ("site-b",
                                                                         "owner@example.org")


def test_a_note_is_read_back_until_the_writer_was_seen_to_keep_notes(client):
    issue_id = new_issue(client)
    client.get_issue(issue_id)
    first = client.add_note(issue_id, "One.", as_user="owner", read_back=False)
    assert first.journal_id is not None                 # read back: nothing known yet
    client.get_issue(issue_id)
    second = client.add_note(issue_id, "Two.", as_user="owner", read_back=False)
    assert (second.journal_id, second.issue) == (None, None)
    assert [j.notes for j in client.get_issue(issue_id).journals] == ["One.", "Two."]


def test_a_status_change_redmine_offers_a_proven_writer_is_not_read_back(client, status):
    first, second = new_issue(client), new_issue(client)
    client.get_issue(first)
    proof = client.add_note(first, "Answer.", status_id=status["answered"], as_user="support",
                            read_back=False)
    assert proof.status_applied and proof.journal_id is not None
    client.get_issue(second)
    result = client.add_note(second, "Answer.", status_id=status["answered"],
                             as_user="support", read_back=False)
    assert (result.status_applied, result.journal_id) == (True, None)
    assert client.get_issue(second).status_id == status["answered"]


def test_a_writer_proven_on_their_own_ticket_is_read_back_on_anothers(client, status):
    """edit_own_issues: "other" may move their own ticket, not the owner's; the proof of
    the one is no proof of the other."""
    theirs, owners = new_issue(client, as_user="other"), new_issue(client)
    client.get_issue(theirs)
    assert client.add_note(theirs, "Fixed.", status_id=status["solved"], as_user="other",
                           read_back=False).status_applied
    client.add_note(theirs, "Broken again.", status_id=status["open"], as_user="other")
    client.get_issue(owners)
    client.add_note(owners, "Me too.", as_user="other")
    client.add_note(owners, "Info.", status_id=status["needs-info"], as_user="support")
    client.get_issue(owners)
    result = client.add_note(owners, "Back to you.", status_id=status["open"], as_user="other",
                             read_back=False)
    assert result.status_refused and result.journal_id is not None
    assert client.get_issue(owners).status_id == status["needs-info"]


def test_a_closing_status_is_always_read_back(client, status):
    """Whether an issue may close depends on its subtasks and blocking relations, which
    a read of the issue does not show."""
    first, second = new_issue(client), new_issue(client)
    for issue_id in (first, second):
        client.get_issue(issue_id)
        result = client.add_note(issue_id, "Works now.", status_id=status["solved"],
                                 as_user="owner", read_back=False)
        assert result.status_applied and result.journal_id is not None


# ------------------------------------------------------------------- reads


def test_a_missing_issue_is_no_such_ticket(client):
    with pytest.raises(NoSuchTicket):
        client.get_issue(NO_SUCH_ISSUE)
    with pytest.raises(NoSuchTicket):
        client.add_note(NO_SUCH_ISSUE, "hello?", as_user="owner")
    with pytest.raises(NoSuchTicket):
        client.set_custom_field(NO_SUCH_ISSUE, "discord-thread", True)


def test_issue_exists(client):
    assert client.issue_exists(new_issue(client))
    assert not client.issue_exists(NO_SUCH_ISSUE)


def test_find_user_by_email(client):
    owner = client.find_user_by_email("  Owner@EXAMPLE.org ")
    assert (owner.login, owner.email, owner.name) == ("owner", "owner@example.org",
                                                      "Olive Owner")
    assert client.find_user_by_email("mailgate@example.org").login == "gateway"
    assert client.find_user_by_email("locked@example.org") is None
    assert client.find_user_by_email("nobody@example.org") is None
    # Redmine's search also matches logins and names; only the address counts.
    assert client.find_user_by_email("owner@example") is None
    assert client.find_user_by_email("@example.org") is None
    assert client.find_user_by_email("owner") is None


def test_a_new_account_is_found_by_its_address_and_writes_on_its_own_tickets(client, status):
    """unknown_senders: create.  The made account is a member of no project: the seed
    gives Redmine's Non member role the Requester's rights, so it may open a ticket,
    write on it and close it, as the Requester does."""
    address = f"{uuid.uuid4().hex[:10]}@neighbours.example"
    made = client.create_user(address, address, "Nina", "Neighbour")
    assert (made.login, made.email, made.name) == (address, address, "Nina Neighbour")
    client.clear_caches()
    assert client.find_user_by_email(address.upper()).login == address
    issue_id = new_issue(client, as_user=address)
    assert client.get_issue(issue_id).author_email == address
    result = client.add_note(issue_id, "It works again.", status_id=status["solved"],
                             as_user=address)
    assert result.status_applied and result.journal_id is not None


def test_an_account_redmine_refuses_says_why(client):
    address = f"{uuid.uuid4().hex[:10]}@neighbours.example"
    with pytest.raises(RedmineRejected) as taken:
        client.create_user("owner", address, "Nina", "Neighbour")
    assert "Login has already been taken" in taken.value.messages
    with pytest.raises(RedmineRejected) as used:
        client.create_user(uuid.uuid4().hex[:10], "OWNER@example.org", "Nina", "Neighbour")
    assert "Email has already been taken" in used.value.messages
    with pytest.raises(RedmineRejected) as invalid:
        client.create_user("not a login!", address, "Nina", "Neighbour")
    assert "Login is invalid" in invalid.value.messages


def test_the_reporter_fields_are_kept_on_a_new_ticket(client):
    issue_id = new_issue(client, as_user="gateway", custom_fields={
        "reporter-email": "nina@neighbours.example",
        "participants": "a@neighbours.example\nb@neighbours.example"})
    fields = client.get_issue(issue_id).custom_fields
    assert fields["reporter-email"] == "nina@neighbours.example"
    assert fields["participants"].splitlines() == ["a@neighbours.example",
                                                   "b@neighbours.example"]


def test_set_custom_field_by_name(client):
    issue_id = new_issue(client)
    client.set_custom_field(issue_id, "discord-thread", True)
    assert client.get_issue(issue_id).custom_fields["discord-thread"] == "1"
    client.set_custom_field(issue_id, "discord-thread", False)
    client.set_custom_field(issue_id, "discord-thread-id", 123456789012345678)
    fields = client.get_issue(issue_id).custom_fields
    assert (fields["discord-thread"], fields["discord-thread-id"]) == ("0", "123456789012345678")


def test_issues_by_status_and_last_update(client, status):
    issue_id = new_issue(client, project="site-b")
    updated = datetime.strptime(client.get_issue(issue_id).updated_on, "%Y-%m-%dT%H:%M:%SZ")
    updated = updated.replace(tzinfo=timezone.utc)
    later, earlier = updated + timedelta(seconds=1), updated - timedelta(seconds=1)

    def found(**filters):
        return issue_id in {i.id for i in client.issues(**filters)}

    assert found(status_id=status["open"], updated_before=later, project="site-b")
    assert found(updated_before=later, project="site-b")
    assert not found(status_id=status["open"], updated_before=earlier, project="site-b")
    assert not found(status_id=status["solved"], project="site-b")
    assert not found(status_id=status["open"], project="site-a")
    listed = next(i for i in client.issues(status_id=status["open"], updated_before=later,
                                           project="site-b") if i.id == issue_id)
    assert (listed.author_email, listed.status_id) == ("owner@example.org", status["open"])


def test_find_issue_with_text_in_its_description(client):
    # How a ticket created before a crash is found again (mailgate.mail.idempotency).
    mark = f"(mailgate:{uuid.uuid4().hex[:16]})"
    issue_id = client.create_issue("triage", unique(), f"Help.\n\n{mark}", as_user="owner")
    assert client.find_issue_with_text("triage", mark) == issue_id
    assert client.find_issue_with_text("triage", mark.upper()) == issue_id
    assert client.find_issue_with_text("site-a", mark) is None
    assert client.find_issue_with_text("triage", f"(mailgate:{uuid.uuid4().hex[:16]})") is None


def test_issues_of_an_unknown_project_is_a_config_error(client):
    with pytest.raises(ConfigError, match="no project 'no-such-project'"):
        client.issues(project="no-such-project")
    with pytest.raises(ConfigError, match="no project 'no-such-project'"):
        client.find_issue_with_text("no-such-project", "x")


# ------------------------------------------------ raw HTTP: Redmine's quirks


def http(redmine, method, path, key=None, **kwargs):
    headers = {"X-Redmine-API-Key": key or redmine.admin_key, **kwargs.pop("headers", {})}
    return requests.request(method, redmine.url + path, headers=headers, timeout=10, **kwargs)


def journals(redmine, issue_id):
    answer = http(redmine, "GET", f"/issues/{issue_id}.json", params={"include": "journals"})
    return answer.json()["issue"]["journals"]


@pytest.mark.parametrize("content_type", [None, "text/plain"])
def test_a_put_that_is_not_json_is_204_and_writes_nothing(redmine, client, content_type):
    issue_id = new_issue(client)
    headers = {"Content-Type": content_type} if content_type else {}
    answer = http(redmine, "PUT", f"/issues/{issue_id}.json", headers=headers,
                  data=json.dumps({"issue": {"notes": "lost"}}))
    assert answer.status_code == 204
    assert journals(redmine, issue_id) == []


def test_any_accepted_put_moves_updated_on_even_when_it_writes_nothing(redmine, client):
    # Matters for expiry by updated_on: a write Redmine drops still resets the clock.
    issue_id = new_issue(client)
    before = client.get_issue(issue_id).updated_on
    time.sleep(1.1)   # Redmine shows whole seconds
    answer = http(redmine, "PUT", f"/issues/{issue_id}.json",
                  data=json.dumps({"issue": {"notes": "lost"}}))
    assert answer.status_code == 204
    after = client.get_issue(issue_id)
    assert after.updated_on > before and after.journals == ()


def test_a_boolean_field_keeps_whatever_string_it_is_sent(redmine, client):
    # Why the client sends "1"/"0": JSON true would be stored as "true".
    issue_id = new_issue(client)
    fields = http(redmine, "GET", "/custom_fields.json").json()["custom_fields"]
    field_id = next(f["id"] for f in fields if f["name"] == "discord-thread")
    http(redmine, "PUT", f"/issues/{issue_id}.json",
         json={"issue": {"custom_fields": [{"id": field_id, "value": True}]}})
    assert client.get_issue(issue_id).custom_fields["discord-thread"] == "true"


def test_json_that_does_not_parse_is_400(redmine, client):
    issue_id = new_issue(client)
    answer = http(redmine, "PUT", f"/issues/{issue_id}.json", data='{"issue": {',
                  headers={"Content-Type": "application/json"})
    assert answer.status_code == 400


def test_an_upload_that_is_not_octet_stream_is_406(redmine):
    answer = http(redmine, "POST", "/uploads.json", params={"filename": "a.txt"}, data=b"hi",
                  headers={"Content-Type": "text/plain"})
    assert answer.status_code == 406


def test_a_bad_key_is_anonymous_on_public_reads_and_401_elsewhere(redmine, client):
    issue_id = new_issue(client)
    bad = "0" * 39 + "f"
    for path in ("/issue_statuses.json", "/trackers.json", f"/issues/{issue_id}.json",
                 "/issues.json"):
        assert http(redmine, "GET", path, key=bad).status_code == 200, path
    owner_id = client.find_user_by_email("owner@example.org").id
    user = http(redmine, "GET", f"/users/{owner_id}.json", key=bad)
    assert user.status_code == 200 and "mail" not in user.json()["user"]
    for path in ("/users/current.json", "/custom_fields.json", "/users.json"):
        assert http(redmine, "GET", path, key=bad).status_code == 401, path
    write = http(redmine, "PUT", f"/issues/{issue_id}.json", key=bad,
                 json={"issue": {"notes": "anonymous"}})
    assert write.status_code == 401


def test_admin_only_lists_are_403_for_other_keys(redmine):
    for path in ("/custom_fields.json", "/users.json"):
        assert http(redmine, "GET", path, key=redmine.key("support")).status_code == 403


def test_an_issue_a_user_may_not_see_is_403_alone_and_left_out_of_lists(redmine, client):
    """What RCPT's list of tickets relies on: an issue the key's user may not see is
    not in the list, as it is 403 on its own page.  Real: an issue in a private project
    support has no role in; the fake: its ``hidden`` set."""
    shown = new_issue(client)
    if isinstance(redmine, FakeRedmine):
        hidden = new_issue(client)
        redmine.hidden.add(hidden)
        key = redmine.admin_key
    else:
        ident = f"private-{uuid.uuid4().hex[:8]}"
        made = http(redmine, "POST", "/projects.json", json={"project": {
            "name": ident, "identifier": ident, "is_public": False,
            "enabled_module_names": ["issue_tracking"],
            "tracker_ids": [client.tracker_id("Support")]}})
        assert made.status_code == 201, made.text
        hidden = new_issue(client, as_user=None, project=ident)   # the admin: no member there
        key = redmine.key("support")
    alone = http(redmine, "GET", f"/issues/{hidden}.json", key=key)
    assert alone.status_code == 403
    listed = http(redmine, "GET", "/issues.json", key=key,
                  params={"issue_id": f"{shown},{hidden}", "status_id": "*"})
    assert [i["id"] for i in listed.json()["issues"]] == [shown]


def test_switch_user_is_ignored_for_a_key_that_is_not_an_admins(redmine, client):
    me = http(redmine, "GET", "/users/current.json", key=redmine.key("owner"),
              headers={"X-Redmine-Switch-User": "support"})
    assert me.json()["user"]["login"] == "owner"
    issue_id = new_issue(client)
    http(redmine, "PUT", f"/issues/{issue_id}.json", key=redmine.key("owner"),
         headers={"X-Redmine-Switch-User": "support"}, json={"issue": {"notes": "who?"}})
    assert [j["user"]["name"] for j in journals(redmine, issue_id)] == ["Olive Owner"]


@pytest.mark.parametrize("login", ["nobody-at-all", "locked"])
def test_switch_user_to_an_unknown_or_locked_login_is_412(redmine, login):
    answer = http(redmine, "GET", "/users/current.json",
                  headers={"X-Redmine-Switch-User": login})
    assert answer.status_code == 412


def test_a_disallowed_status_is_204_and_the_note_is_kept(redmine, client, status):
    issue_id = new_issue(client)
    answer = http(redmine, "PUT", f"/issues/{issue_id}.json",
                  headers={"X-Redmine-Switch-User": "other"},
                  json={"issue": {"notes": "kept", "status_id": status["solved"]}})
    assert answer.status_code == 204
    [journal] = journals(redmine, issue_id)
    assert (journal["notes"], journal["details"]) == ("kept", [])


def test_a_new_issue_ignores_the_status_it_is_given(redmine, status):
    answer = http(redmine, "POST", "/issues.json", json={"issue": {
        "project_id": "site-a", "subject": unique(), "status_id": status["answered"]}})
    assert answer.status_code == 201
    assert answer.json()["issue"]["status"]["id"] == status["open"]


def test_a_stale_lock_version_is_422_without_a_message(redmine, client):
    issue_id = new_issue(client)
    client.add_note(issue_id, "someone else saved", as_user="support")
    answer = http(redmine, "PUT", f"/issues/{issue_id}.json",
                  json={"issue": {"notes": "stale", "lock_version": 0}})
    assert (answer.status_code, answer.json()) == (422, {"errors": []})


def test_an_unknown_upload_token_is_422(redmine, client):
    issue_id = new_issue(client)
    answer = http(redmine, "PUT", f"/issues/{issue_id}.json", json={"issue": {
        "notes": "x", "uploads": [{"token": "999999.abc", "filename": "x.txt"}]}})
    assert (answer.status_code, answer.json()) == (
        422, {"errors": ["1 file(s) could not be saved."]})


def test_missing_issues_are_404(redmine):
    assert http(redmine, "GET", f"/issues/{NO_SUCH_ISSUE}.json").status_code == 404
    assert http(redmine, "PUT", f"/issues/{NO_SUCH_ISSUE}.json",
                json={"issue": {"notes": "x"}}).status_code == 404


def test_only_an_admin_sees_addresses(redmine):
    owner = http(redmine, "GET", "/users/current.json", key=redmine.key("owner")).json()["user"]
    as_support = http(redmine, "GET", f"/users/{owner['id']}.json", key=redmine.key("support"))
    assert "mail" not in as_support.json()["user"]
    as_admin = http(redmine, "GET", f"/users/{owner['id']}.json")
    assert as_admin.json()["user"]["mail"] == "owner@example.org"
