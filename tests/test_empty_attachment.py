"""A 0-byte attachment is named in the note, never dropped silently (issue 18).

There is nothing in it to upload, but the sender sent a file by that name
and whoever reads the ticket should know it.
"""

from __future__ import annotations

from handlers.attachments import AttachmentLimits, apply_limits
from mailgate.mail.message import parse_mail
from mailgate.clients.redmine import RedmineClient
from support.configs import VERIFIED, write_config
from tests.helpers import run_mailgate

MAIL = (VERIFIED + """
From: Olive Owner <owner@example.org>
To: ticket1@example.org
Subject: Re: The router drops the connection
Message-ID: <empty-attachment-1@mail.example.org>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="b"

--b
Content-Type: text/plain; charset="utf-8"

The log you asked for is attached.

--b
Content-Type: text/plain
Content-Transfer-Encoding: base64
Content-Disposition: attachment; filename="router.log"

--b
Content-Type: application/octet-stream
Content-Disposition: attachment

--b
Content-Type: text/plain; charset="utf-8"

--b--
""").encode()


def test_parse_mail_keeps_each_empty_file():
    mail = parse_mail(MAIL)
    assert mail.body == "The log you asked for is attached."
    # The empty inline text part is no file: only the two attachments count.
    assert [(a.filename, a.data) for a in mail.attachments] == \
        [("router.log", b""), ("attachment-2.bin", b"")]


def test_the_limits_name_an_empty_file():
    kept, dropped = apply_limits(parse_mail(MAIL).attachments, AttachmentLimits())
    assert kept == ()
    assert dropped == ["router.log (empty file)", "attachment-2.bin (empty file)"]


def test_the_pipe_names_the_empty_file_in_the_note(tmp_path, fake_redmine):
    config = write_config(tmp_path / "mailgate.yaml", fake_redmine.url, fake_redmine.admin_key)
    client = RedmineClient(fake_redmine.url, fake_redmine.admin_key)
    ticket = client.create_issue("site-a", "empty file", "The router drops.", as_user="owner")
    result = run_mailgate("pipe", "--config", str(config), "--recipient",
                          f"ticket{ticket}@example.org", stdin=MAIL,
                          env={"MAILGATE_LOG_LEVEL": "WARNING"})
    assert result.returncode == 0, result.stderr
    [journal] = client.get_issue(ticket).journals
    assert "(not attached: router.log (empty file), attachment-2.bin (empty file))" \
        in journal.notes
