"""Limits Redmine has, met in the plan instead of by a dead letter (issue 18, finding 9).

* A note's text is capped at ``attachments.max_note_chars``; the whole text goes
  with it as message.txt, and the note says so.
* A file over Redmine's upload limit (``redmine.max_attachment_size``, Redmine's
  own default 5 MB) is left out and named, and the rest is posted; a file Redmine
  refuses anyway (its limit set lower than ours) is left out and named too.
* A Subject over Redmine's 255 characters opens the ticket with the subject cut
  (on a character, with an ellipsis), and the whole subject in the description.

Each through ``mailgate pipe``, against the fake Redmine and the real one.
"""

from __future__ import annotations

import gzip
import os
import uuid
from email.message import EmailMessage

import pytest
import requests

from mailgate.clients.redmine import RedmineClient
from support.configs import VERIFIED, write_config
from tests.helpers import run_mailgate

MB = 1024 * 1024


def mail(to: str, body: str, subject: str = "Re: limits", files=()) -> bytes:
    message = EmailMessage()
    message["From"] = "Olive Owner <owner@example.org>"
    message["To"] = to
    message["Subject"] = subject
    message["Message-ID"] = f"<limits-{uuid.uuid4().hex}@mail.example.org>"
    message.set_content(body)
    for name, data in files:
        message.add_attachment(data, maintype="application", subtype="octet-stream",
                               filename=name)
    return f"{VERIFIED}\n".encode() + bytes(message)


def pipe(config, recipient: str, raw: bytes):
    done = run_mailgate("pipe", "--config", str(config), "--recipient", recipient,
                        stdin=raw, env={"MAILGATE_LOG_LEVEL": "WARNING"}, timeout=120)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    return done


def configured(tmp_path, where, **overrides):
    return write_config(tmp_path / "mailgate.yaml", where.url, where.admin_key,
                        server={"max_message_size": 30 * MB}, **overrides)


def new_ticket(client: RedmineClient) -> int:
    return client.create_issue("site-a", "limits", "Limits test.", as_user="owner")


def download(redmine, attachment) -> bytes:
    answer = requests.get(f"{redmine.url}/attachments/download/{attachment.id}", timeout=30,
                          headers={"X-Redmine-API-Key": redmine.admin_key})
    assert answer.status_code == 200, answer.status_code
    return answer.content


# -- (a) the note's text is capped ----------------------------------------------------------

def test_a_long_text_is_cut_and_attached_whole(tmp_path, redmine):
    config = configured(tmp_path, redmine, attachments={"max_note_chars": 2_000})
    client = RedmineClient(redmine.url, redmine.admin_key)
    ticket = new_ticket(client)
    body = "".join(f"Line {n} of the router's log, as pasted.\n" for n in range(1_000))
    pipe(config, f"ticket{ticket}@example.org", mail(f"ticket{ticket}@example.org", body))
    issue = client.get_issue(ticket)
    [journal] = issue.journals
    assert journal.notes.startswith("Line 0 of the router's log")
    assert "Line 48 of" in journal.notes and "Line 60 of" not in journal.notes
    shown = journal.notes.partition("\n\n(Only")[0]
    assert f"(Only the first {len(shown):,} of {len(body.strip()):,} characters are here:" \
           " the whole message is attached as message.txt.)" in journal.notes
    assert 1_900 < len(shown) <= 2_000 and shown.endswith(" as pasted.")
    [attached] = issue.attachments
    assert (attached.filename, attached.filesize) == ("message.txt", len(body.strip()))
    if redmine.kind == "real":      # the fake serves no downloads
        assert download(redmine, attached).decode() == body.strip()


def test_a_whole_text_over_redmines_limit_is_attached_compressed(tmp_path, redmine):
    # A 25 MB mail's text is 5 times Redmine's default upload limit; text compresses.
    config = configured(tmp_path, redmine, attachments={"max_note_chars": 2_000},
                        redmine={"max_attachment_size": 10_000})
    client = RedmineClient(redmine.url, redmine.admin_key)
    ticket = new_ticket(client)
    body = "".join(f"{n:05d} kernel: eth0: link down, retrying\n" for n in range(1_000))
    pipe(config, f"ticket{ticket}@example.org", mail(f"ticket{ticket}@example.org", body))
    issue = client.get_issue(ticket)
    [journal] = issue.journals
    assert "characters are here: the whole message is attached as message.txt.gz.)" \
        in journal.notes
    [attached] = issue.attachments
    assert attached.filename == "message.txt.gz" and attached.filesize < 10_000
    if redmine.kind == "real":
        assert gzip.decompress(download(redmine, attached)).decode() == body.strip()


# -- (b) files over Redmine's limit -----------------------------------------------------------

def test_a_file_over_redmines_limit_is_named_and_the_rest_posted(tmp_path, redmine):
    config = configured(tmp_path, redmine)          # Redmine's default limit: 5 MB
    client = RedmineClient(redmine.url, redmine.admin_key)
    ticket = new_ticket(client)
    raw = mail(f"ticket{ticket}@example.org", "The dump and the log.",
               files=[("core.dump", os.urandom(9 * MB)), ("small.log", b"ok\n")])
    pipe(config, f"ticket{ticket}@example.org", raw)
    issue = client.get_issue(ticket)
    [journal] = issue.journals
    assert journal.notes.startswith("The dump and the log.")
    assert "(not attached: core.dump (larger than 5 MB, Redmine's limit))" in journal.notes
    assert [a.filename for a in issue.attachments] == ["small.log"]


def test_a_file_redmine_refuses_is_named_not_a_dead_letter(tmp_path, redmine):
    # Configured above Redmine's real limit: the plan keeps the file, Redmine says 422.
    config = configured(tmp_path, redmine, redmine={"max_attachment_size": 20 * MB})
    client = RedmineClient(redmine.url, redmine.admin_key)
    ticket = new_ticket(client)
    raw = mail(f"ticket{ticket}@example.org", "The dump and the log.",
               files=[("core.dump", os.urandom(6 * MB)), ("small.log", b"ok\n")])
    pipe(config, f"ticket{ticket}@example.org", raw)
    issue = client.get_issue(ticket)
    [journal] = issue.journals
    assert journal.notes.startswith("The dump and the log.")
    assert "(not attached: core.dump (refused by Redmine: This file cannot be uploaded" \
           " because it exceeds the maximum allowed file size (5242880)))" in journal.notes
    assert [a.filename for a in issue.attachments] == ["small.log"]


# -- (c) a subject over 255 characters ---------------------------------------------------------

def test_a_long_subject_opens_the_ticket_cut_with_the_whole_subject_in_it(tmp_path, redmine):
    config = configured(tmp_path, redmine)
    client = RedmineClient(redmine.url, redmine.admin_key)
    stamp = uuid.uuid4().hex
    subject = f"Printer {stamp} " + "on the third floor jams again " * 12
    done = pipe(config, "site-a@example.org",
                mail("site-a@example.org", "It jams.", subject=subject))
    found = requests.get(f"{redmine.url}/issues.json", timeout=10, params={
        "project_id": "site-a", "status_id": "*", "subject": f"~{stamp}"},
        headers={"X-Redmine-API-Key": redmine.admin_key}).json()["issues"]
    assert len(found) == 1, done.stderr.decode()
    issue = client.get_issue(found[0]["id"])
    assert len(issue.subject) == 255 and issue.subject.endswith("…")
    assert subject.startswith(issue.subject[:-1])
    # Redmine keeps a description's line ends as CRLF.
    assert issue.description.replace("\r\n", "\n").startswith(
        f"Subject: {subject.strip()}\n\nIt jams.")


@pytest.mark.parametrize("subject, expected", [
    ("short", "short"),
    ("x" * 255, "x" * 255),
    ("x" * 256, "x" * 254 + "…"),
    # A character and what joins it stay together: no stray accent, no half an emoji.
    ("x" * 253 + "e\u0301\u0301" + "y", "x" * 253 + "…"),
    ("x" * 252 + "👩\u200d💻" + "y", "x" * 252 + "…"),
    ("x" * 253 + "🇫🇷" + "y", "x" * 253 + "…"),
])
def test_the_subject_is_cut_on_a_character(subject, expected):
    from handlers.new_ticket import ticket_subject

    assert ticket_subject(subject) == expected
    assert len(ticket_subject(subject)) <= 255


# -- the settings ------------------------------------------------------------------------------

def test_the_limits_are_configured(tmp_path):
    from mailgate.config import load_config

    config = write_config(tmp_path / "m.yaml", "http://127.0.0.1:9", "key",
                          attachments={"max_note_chars": 1_000},
                          redmine={"max_attachment_size": 2 * MB})
    limits = load_config(config, {}).attachment_limits
    assert (limits.max_note_chars, limits.redmine_max_size) == (1_000, 2 * MB)
    defaults = load_config(write_config(tmp_path / "d.yaml", "http://127.0.0.1:9", "key"),
                           {}).attachment_limits
    assert (defaults.max_note_chars, defaults.redmine_max_size) == (60_000, 5 * MB)
    environ = {"MAILGATE_ATTACHMENTS_MAX_NOTE_CHARS": "500",
               "MAILGATE_REDMINE_MAX_ATTACHMENT_SIZE": "1048576"}
    limits = load_config(tmp_path / "d.yaml", environ).attachment_limits
    assert (limits.max_note_chars, limits.redmine_max_size) == (500, MB)


@pytest.mark.parametrize("section, value, message", [
    ("attachments", {"max_note_chars": 0}, "attachments.max_note_chars: expected a positive"),
    ("redmine", {"max_attachment_size": "5M"}, "redmine.max_attachment_size: expected a"),
    ("redmine", {"max_attachement_size": 1},
     "redmine.max_attachement_size: unknown key; did you mean 'max_attachment_size'"),
    ("attachments", {"max_notes_chars": 1},
     "attachments.max_notes_chars: unknown key; did you mean 'max_note_chars'"),
])
def test_a_wrong_limit_is_a_config_error_naming_it(tmp_path, section, value, message):
    from mailgate.config import load_config
    from mailgate.errors import ConfigError

    config = write_config(tmp_path / "m.yaml", "http://127.0.0.1:9", "key", **{section: value})
    with pytest.raises(ConfigError, match=message):
        load_config(config, {})


# -- a huge text is quick ----------------------------------------------------------------------

def test_a_huge_text_is_trimmed_only_as_far_as_the_note_shows(tmp_path, monkeypatch):
    """Trimming reads about 2 µs a character: 45 s for a 25 MB pasted text, which the
    note shows 60,000 characters of.  Only the beginning is trimmed; the whole text,
    as it came, is the attached file."""
    import handlers.reply
    from handlers.plans import TicketView
    from mailgate.config import load_config
    from mailgate.mail.message import parse_mail
    from mailgate.trust import Verdict

    config = load_config(write_config(tmp_path / "m.yaml", "http://127.0.0.1:9", "key",
                                      attachments={"max_note_chars": 1_000}), {})
    read = []
    trim = handlers.reply.trim_reply
    monkeypatch.setattr(handlers.reply, "trim_reply", lambda text: read.append(len(text))
                        or trim(text))
    body = "".join(f"{n:06d} The quick brown fox jumps over the lazy dog.\n"
                   for n in range(20_000))
    ticket = TicketView(1, "open", "Open", "owner@example.org", False, subject="limits")
    plan = handlers.reply.handle(parse_mail(mail("ticket1@example.org", body)), ticket,
                                 "owner", None, config, "", Verdict(True, "test"))
    assert read and max(read) <= 4 * 1_000
    assert plan.text.startswith("000000 The quick brown fox")
    assert f"of {len(body.strip()):,} characters are here: the whole message is attached" \
        " as message.txt.)" in plan.text
    [whole] = plan.attachments
    assert whole.data.decode() == body.strip()
