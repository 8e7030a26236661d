"""handlers/discord.py alone: a Discord message planned as the mail it stands for (issue 14).

No server at all: the facts are given, the plan is read.  The same rules as mail's
(tests/test_workflow_table.py, docs/workflow.txt) decide; these check that the
message reaches them as the right person, and what only Discord has to say.
"""

from __future__ import annotations

import pytest

from handlers.discord import (DiscordFile, DiscordMessage, Writer, files_to_fetch, message_of,
                              not_a_person, plan_message, safe_name, withheld)
from handlers.plans import Duplicate, Ignore, PostNote, TicketView
from mailgate.config import load_config
from mailgate.mail.idempotency import marker
from mailgate.mail.message import Attachment
from support.configs import write_config

SAM = Writer("support", "support@example.org", "Sam Support")
OLIVE = Writer("owner", "owner@example.org", "Olive Owner")
ADA = Writer("admin", "admin@example.org", "Redmine Admin")


@pytest.fixture
def config(tmp_path):
    def make(**discord):
        section = {"api_base": "http://127.0.0.1:9/api/v10", "bot_token": "t", "read": True,
                   "redmine_fields": True, "triage": "http://127.0.0.1:9/api/webhooks/1/t",
                   **discord}
        return load_config(write_config(tmp_path / "m.yaml", "http://127.0.0.1:9", "k",
                                        discord=section, watch={"poll_interval": 1}),
                           environ={})
    return make


def ticket(state: str = "open", **fields) -> TicketView:
    names = {"open": "Open", "answered": "Answered", "solved": "Solved"}
    return TicketView(id=12, state=state, status_name=names[state],
                      owner_address="owner@example.org", has_answer=state != "open",
                      subject="Printer on fire", project="site-a", **fields)


def said(content: str, **fields) -> DiscordMessage:
    return DiscordMessage(**{"id": "1100", "thread_id": "900", "author_id": "42",
                             "author_name": "Dana D", "content": content, **fields})


def plan(config, message, writer, state="open", files=(), **ticket_fields):
    config = config() if callable(config) else config
    return plan_message(message, ticket(state, **ticket_fields), writer, files,
                        config.sites["site-a"], config).step


def test_support_answers_and_the_owner_confirms_as_in_mail(config):
    answer = plan(config, said("Turn it off and on again."), SAM)
    assert isinstance(answer, PostNote) and answer.as_user == "support"
    assert (answer.decision.action, answer.decision.to_state) == ("answer", "answered")
    assert answer.sender.verified and answer.sender.role == "other"
    confirm = plan(config, said("Status: solved\n\nThat did it."), OLIVE, "answered")
    assert (confirm.sender.role, confirm.decision.action, confirm.decision.to_state) == (
        "owner", "confirm", "solved")
    assert confirm.text.startswith("That did it.")


def test_an_admin_may_reject_and_support_may_not(config):
    rejected = plan(config, said("Action: reject\n\nSpam."), ADA)
    assert (rejected.sender.role, rejected.decision.to_state) == ("admin", "invalid")
    refused = plan(config, said("Action: reject\n\nSpam."), SAM)
    assert refused.decision.to_state == "open" and refused.decision.refused


def test_an_unmapped_user_is_a_comment_by_the_gateway_naming_them(config):
    step = plan(config, said("Status: solved\n\nMe too!", author_name="@admin <x>"), None)
    assert step.as_user == "gateway" and step.decision.action == "comment"
    assert step.decision.refused and step.decision.to_state == "open"
    assert step.text.startswith("From: admin x <discord:42>\n\nMe too!")
    ignored = plan(config(unmapped="ignore"), said("Me too."), None)
    assert isinstance(ignored, Ignore)


def test_the_note_carries_the_messages_marker_and_a_second_time_is_a_duplicate(config):
    cfg = config()
    step = plan(cfg, said("Turn it off."), SAM)
    mark = marker("discord:1100", "ticket:12", cfg.redmine.marker_secret)
    assert step.text.endswith(mark)
    again = plan(cfg, said("Turn it off."), SAM, markers={mark: "support"})
    assert isinstance(again, Duplicate)
    # Anyone else's copy of the marker is not this message.
    assert isinstance(plan(cfg, said("Turn it off."), SAM, markers={mark: "other"}), PostNote)


def test_files_are_fetched_by_the_size_they_declare_and_named_when_left_out(config):
    cfg = config()
    files = (DiscordFile("log.txt", "text/plain", 10, "u1"),
             DiscordFile("huge.iso", "application/octet-stream", 10**9, "u2"),
             DiscordFile("run.exe", "application/octet-stream", 10, "u3"))
    decided = files_to_fetch(said("files", files=files), cfg)
    # The lower of our limit and Redmine's own (5 MB by default) counts.
    too_big = "larger than 5 MB, Redmine's limit"
    assert [why for _, why in decided] == [None, too_big, "blocked type"]
    fetched = (Attachment("log.txt", "text/plain", b"0123456789"),
               Attachment("huge.iso", "application/octet-stream", b"", problem=too_big))
    step = plan(cfg, said("files", files=files), SAM, files=fetched)
    assert [a.filename for a in step.attachments] == ["log.txt"]
    assert f"(not attached: huge.iso ({too_big}))" in step.text


def test_what_is_nobodys_words():
    assert not_a_person(said("x", webhook_id="5"), "1")
    assert not_a_person(said("x", author_id="1"), "1")
    assert not_a_person(said("x", author_is_bot=True), "1")
    assert not_a_person(said("", type=6), "1")                 # "pinned a message"
    assert not_a_person(said("x", type=19), "1") is None        # a reply is a person's
    assert withheld(said("")) and not withheld(said("", other_parts=True))


def test_a_message_as_discord_answers_it():
    raw = {"id": "1100", "type": 0, "content": "Ask <@7> or <@!8>",
           "author": {"id": "42", "username": "dana_d", "global_name": None},
           "mentions": [{"id": "7", "username": "sam", "global_name": "Sam S"}],
           "attachments": [{"id": "3", "filename": "a.png", "size": 5, "url": "u",
                            "content_type": "image/png"}]}
    message = message_of(raw, "900")
    assert (message.author_name, message.content) == ("dana_d", "Ask Sam S or someone")
    assert message.files == (DiscordFile("a.png", "image/png", 5, "u"),)
    assert safe_name("  @Sam\n<Support> ") == "Sam Support" and safe_name("@") == "someone"
