"""MIME nesting is bounded: 1,000 nested multiparts (56 KB) crashed the worker (issue 18).

The stdlib parser descends once per level and met Python's recursion limit
near 1,000.  Past MAX_MIME_DEPTH nothing is parsed further: the part there
keeps its subtree as unparsed bytes and is named in the note, not attached.
"""

from __future__ import annotations

import pytest

from handlers.attachments import AttachmentLimits, apply_limits
from mailgate.mail.message import MAX_MIME_DEPTH, parse_mail
from mailgate.clients.redmine import RedmineClient
from support.configs import VERIFIED, write_config
from tests.helpers import run_mailgate

HEADER = (VERIFIED + "\nFrom: Olive Owner <owner@example.org>\nTo: ticket1@example.org\n"
          "Subject: Re: The router drops the connection\n"
          "Message-ID: <deep-{depth}@mail.example.org>\nMIME-Version: 1.0\n").encode()
TOO_DEEP = f"MIME nesting deeper than {MAX_MIME_DEPTH}"


def nested_multiparts(depth: int) -> bytes:
    """A mail of ``depth`` multiparts, one inside the other, with a text at the bottom."""
    opening = b"".join(b'Content-Type: multipart/mixed; boundary="b%d"\n\n--b%d\n' % (i, i)
                       for i in range(depth))
    closing = b"".join(b"--b%d--\n" % i for i in reversed(range(depth)))
    return (HEADER.replace(b"{depth}", b"m%d" % depth) + opening
            + b"Content-Type: text/plain\n\nThe router is at the bottom.\n" + closing)


def nested_messages(depth: int) -> bytes:
    """A mail forwarded as an attachment ``depth`` times (message/rfc822 in message/rfc822)."""
    inner = b"Subject: bottom\nContent-Type: text/plain\n\nThe router is at the bottom.\n"
    for _ in range(depth):
        inner = b"Subject: fwd\nContent-Type: message/rfc822\n\n" + inner
    return HEADER.replace(b"{depth}", b"r%d" % depth) + b"Content-Type: message/rfc822\n\n" + inner


def test_the_finding_is_a_small_mail():
    assert len(nested_multiparts(1000)) < 64 * 1024


def test_a_thousand_nested_multiparts_parse_without_recursion_error():
    mail = parse_mail(nested_multiparts(1000))
    [deep] = mail.attachments
    assert deep.problem == TOO_DEEP and deep.data == b""


def test_a_mail_forwarded_a_thousand_times_is_attached_whole():
    # An attached mail is one leaf (an .eml): past the limit its inside stays
    # unparsed, so it is written back byte for byte and nothing is lost.
    raw = nested_messages(1000)
    [forwarded] = parse_mail(raw).attachments
    assert forwarded.problem == "" and forwarded.content_type == "message/rfc822"
    assert forwarded.data == raw.split(b"Content-Type: message/rfc822\n\n", 1)[1]


def test_up_to_the_limit_everything_is_read():
    mail = parse_mail(nested_multiparts(MAX_MIME_DEPTH))
    assert mail.body == "The router is at the bottom." and mail.attachments == ()


def test_one_level_past_the_limit_is_named_not_read():
    mail = parse_mail(nested_multiparts(MAX_MIME_DEPTH + 1))
    assert mail.body == ""
    [deep] = mail.attachments
    assert deep.problem == TOO_DEEP
    kept, dropped = apply_limits(mail.attachments, AttachmentLimits())
    assert kept == () and dropped == [f"{deep.filename} ({TOO_DEEP})"]


def test_the_header_only_parse_at_data_time_is_untroubled():
    mail = parse_mail(nested_multiparts(1000), headers_only=True)
    assert mail.subject == "Re: The router drops the connection"


@pytest.fixture
def config(tmp_path, fake_redmine):
    return write_config(tmp_path / "mailgate.yaml", fake_redmine.url, fake_redmine.admin_key)


@pytest.fixture
def client(fake_redmine):
    return RedmineClient(fake_redmine.url, fake_redmine.admin_key)


def pipe_to_a_ticket(config, client, raw: bytes):
    ticket = client.create_issue("site-a", "deep", "The router drops.", as_user="owner")
    result = run_mailgate("pipe", "--config", str(config), "--recipient",
                          f"ticket{ticket}@example.org", stdin=raw,
                          env={"MAILGATE_LOG_LEVEL": "WARNING"})
    said = result.stderr.decode()
    assert result.returncode == 0 and "RecursionError" not in said, said
    assert f"applied #{ticket}" in said.splitlines()[-1]
    [journal] = client.get_issue(ticket).journals
    return journal


def test_the_pipe_applies_deep_multiparts_and_names_what_it_could_not_read(config, client):
    journal = pipe_to_a_ticket(config, client, nested_multiparts(1000))
    assert journal.notes.startswith(f"(not attached: attachment-1.bin ({TOO_DEEP}))")


def test_the_pipe_applies_a_mail_forwarded_a_thousand_times(config, client):
    pipe_to_a_ticket(config, client, nested_messages(1000))
