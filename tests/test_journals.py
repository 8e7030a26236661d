"""handlers.journals: who hears of a journal written in Redmine, decided without I/O.

The watcher's tests (tests/test_watcher.py) run the same decisions against the
real Redmine; here each rule alone, with the facts stated.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import yaml

from handlers.journals import JournalFacts, participants, plan_journal, unsuitable
from handlers.senders import attributed
from handlers.plans import Sender
from mailgate.config import load_config
from mailgate.errors import ConfigError
from mailgate.mail.idempotency import marker, with_marker

REPORTER = "neighbour@elsewhere.test"


@pytest.fixture
def config(tmp_path):
    return _config(tmp_path)


def _config(tmp_path, **top):
    path = tmp_path / "mailgate.yaml"
    path.write_text(yaml.safe_dump({
        "domains": ["example.org"],
        "redmine": {"url": "http://127.0.0.1:9", "api_key": "x", "gateway_user": "gateway",
                    "notification_address": "redmine@example.org",
                    "reporter_field": "reporter-email", "participants_field": "participants"},
        "sites": {"site-a": {}},
        "notify": {"relay": "127.0.0.1:25", "from": "mailgate@example.org"},
        "watch": {"poll_interval": 30},
        "answers": {},
        "spool": {"path": str(tmp_path / "spool.db")},
        **top,
    }))
    return load_config(path, environ={})


def facts(**changes) -> JournalFacts:
    """Support typed a public note in Redmine's web UI on a stranger's ticket."""
    base = JournalFacts(
        ticket=12, journal_id=340, subject="No internet since Monday", project="site-a",
        author_name="Sam Support", author_login="support", author_email="support@example.org",
        notes="Please restart the router.", private=False, old_status="Open",
        new_status="Answered", reporter=REPORTER, participants=("friend@elsewhere.test",))
    return replace(base, **changes)


def test_a_public_note_by_support_goes_to_the_reporter_and_the_participants_and_discord(
        config):
    plan = plan_journal(facts(), config)
    assert plan.answer_to == (REPORTER, "friend@elsewhere.test")
    assert (plan.writer_name, plan.text, plan.new_status) == (
        "Sam Support", "Please restart the router.", "Answered")
    said = plan.announce
    assert (said.action, said.from_state, said.to_state, said.excerpt) == (
        "note", "Open", "Answered", "Please restart the router.")


def test_a_private_note_is_never_mailed_and_its_text_never_posted(config):
    plan = plan_journal(facts(private=True), config)
    assert plan.answer_to == () and plan.not_mailed == "a private note"
    # The status change is news for the team; the private words are not posted.
    assert (plan.announce.action, plan.announce.excerpt) == ("status change", "")
    assert plan_journal(facts(private=True, new_status="Open"), config).announce is None


def test_the_reporters_own_mail_written_by_the_gateway_is_not_mailed_back(config):
    # The reporter's reply, applied as a comment by the gateway's user.
    mine = Sender(REPORTER, "Nina Neighbour", "other", None)
    notes = with_marker(attributed("It works again, thanks!", mine),
                        marker("<r@elsewhere.test>", "ticket:12", b"k"))
    plan = plan_journal(facts(author_name="Mail Gateway", author_login="gateway",
                              author_email="mailgate@example.org", notes=notes,
                              old_status=None, new_status=None), config)
    assert plan.answer_to == ("friend@elsewhere.test",)
    assert plan.left_out == ((REPORTER, "wrote the note"),)
    assert (plan.writer_name, plan.text) == ("Nina Neighbour", "It works again, thanks!")
    # It came by mail: Discord heard of it when the mail was applied.
    assert plan.announce is None


def test_an_attribution_line_counts_only_from_the_gateways_user(config):
    # Support quoting a mail in the web UI does not make it the reporter's note.
    notes = f"From: Nina Neighbour <{REPORTER}>\n\nShe says it is fixed."
    assert plan_journal(facts(notes=notes), config).answer_to[0] == REPORTER


def test_a_reporter_with_a_redmine_account_hears_from_redmine_not_from_us(config):
    plan = plan_journal(facts(reporter_is_user=True), config)
    assert plan.answer_to == () and plan.not_mailed == "the reporter is a Redmine user"
    assert plan.announce is not None


@pytest.mark.parametrize("address, reason", [
    ("mailer-daemon@elsewhere.test", "a machine's address"),
    ("no-reply@shop.test", "a machine's address"),
    ("noreply@shop.test", "a machine's address"),
    ("DoNotReply@shop.test", "a machine's address"),
    ("bounces+123@lists.test", "a machine's address"),
    ("site-a@example.org", "the gateway's own address"),
    ("ticket12@example.org", "the gateway's own address"),
    ("redmine@example.org", "the gateway's own address"),
    ("mailgate@example.org", "the gateway's own address"),
    ("two@a.test, three@b.test", "not a single mail address"),
    (REPORTER, None),
])
def test_answers_never_go_to_machines_or_to_the_gateway(config, address, reason):
    assert unsuitable(address, config) == reason


def test_nothing_to_mail_without_a_note_or_a_reporter(config):
    assert plan_journal(facts(notes=""), config).not_mailed == \
        "no note (a change of fields only)"
    assert plan_journal(facts(reporter=None), config).not_mailed == \
        "the ticket records no reporter address"
    # A change of fields alone (the Discord thread's own id) is no news anywhere.
    assert plan_journal(facts(notes="", new_status=None, old_status=None), config) \
        .announce is None


def test_the_sweeps_expiry_is_mailed_but_not_posted_again(config):
    from mailgate.ops.sweep import expiry_note

    notes = with_marker(expiry_note(15), marker("expire:12:t", "ticket:12", b"k"))
    plan = plan_journal(facts(author_name="Redmine Admin", author_login="admin",
                              author_email="admin@example.org", notes=notes,
                              new_status="Expired"), config)
    assert plan.answer_to[0] == REPORTER and plan.new_status == "Expired"
    assert plan.announce is None            # the sweep told Discord itself


def test_participants_are_read_one_a_line():
    assert participants("a@x.test\nBee <B@Y.test>\n\nnot an address\n") == (
        "a@x.test", "b@y.test")
    assert participants(None) == ()


def test_answers_need_the_watcher_and_the_relay(tmp_path):
    with pytest.raises(ConfigError, match="answers: needs a watch: section"):
        _config_without(tmp_path, "watch")
    with pytest.raises(ConfigError, match="answers: needs"):
        _config_without(tmp_path, "notify")
    with pytest.raises(ConfigError, match=r"watch\.poll_intervall: unknown key; did you mean .poll_interval.\?"):
        _config(tmp_path, watch={"poll_intervall": 5})
    assert _config(tmp_path, watch={}).watch.poll_interval == 60.0
    assert _config(tmp_path).answers.max_per_hour == 10
    with pytest.raises(ConfigError, match="answers: needs redmine.reporter_field"):
        _config(tmp_path, redmine={"url": "http://x", "api_key": "x"})


def _config_without(tmp_path, section: str):
    path = tmp_path / "m.yaml"
    data = {"domains": ["example.org"],
            "redmine": {"url": "http://x", "api_key": "x", "reporter_field": "reporter-email"},
            "notify": {"from": "m@example.org"}, "watch": {}, "answers": {}}
    del data[section]
    path.write_text(yaml.safe_dump(data))
    return load_config(path, environ={})


def test_the_configuration_in_docs_reporters_md_loads(tmp_path):
    import re
    from pathlib import Path

    doc = Path(__file__).resolve().parent.parent / "docs" / "reporters.md"
    blocks = re.findall(r"```yaml\n(.*?)```", doc.read_text(), re.S)
    assert blocks
    for block in blocks:
        data = {"domains": ["example.org"], "sites": {"site-a": {}},
                "spool": {"path": str(tmp_path / "spool.db")}, **yaml.safe_load(block)}
        data["redmine"] = {"url": "http://x", "api_key": "x", **data.get("redmine", {})}
        path = tmp_path / "doc.yaml"
        path.write_text(yaml.safe_dump(data))
        config = load_config(path, environ={})
        assert config.watch is not None
