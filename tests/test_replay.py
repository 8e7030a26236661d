"""`mailgate replay FILE|DIR|MBOX`: saved mail through the same intake, with a summary."""

from __future__ import annotations

from mailgate.clients.redmine import RedmineClient
from support.configs import write_config
from tests.helpers import MAIL, run_mailgate


def test_replay_a_directory(fake_redmine, tmp_path):
    client = RedmineClient(fake_redmine.url, fake_redmine.admin_key)
    ticket = client.create_issue("site-a", "Router", "Drops.", as_user="owner")
    assert ticket == 1     # the fixtures write to ticket1@
    config = write_config(tmp_path / "m.yaml", fake_redmine.url, fake_redmine.admin_key)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for name in ("support-answer.eml", "owner-reply.eml", "unknown-address.eml",
                 "site-a-new-ticket.eml", "empty.eml"):
        (inbox / name).write_bytes((MAIL / name).read_bytes())
    # Saved from our MTA's delivery: its Authentication-Results are believed.
    result = run_mailgate("replay", "--config", str(config), "--via", "pipe", str(inbox))
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().strip() == "2 applied, 1 created, 2 rejected"
    progress = result.stderr.decode()
    # Files go in name order: the owner writes first, then support answers.
    assert "owner-reply.eml: applied: applied #1 give-info: open -> open" in progress
    assert "support-answer.eml: applied: applied #1 answer: open -> answered" in progress
    assert "unknown-address.eml: rejected: 550 5.1.1" in progress
    assert "empty.eml: rejected: 554 5.6.0 empty message" in progress
    assert client.get_issue(ticket).status_name == "Answered"


def test_saved_mail_s_authentication_results_are_not_believed_by_default(fake_redmine,
                                                                          tmp_path):
    client = RedmineClient(fake_redmine.url, fake_redmine.admin_key)
    ticket = client.create_issue("site-a", "Router", "Drops.", as_user="owner")
    config = write_config(tmp_path / "m.yaml", fake_redmine.url, fake_redmine.admin_key)
    saved = tmp_path / "saved.eml"
    saved.write_bytes((MAIL / "admin-sets-invalid.eml").read_bytes().replace(
        b"ticket1@", f"ticket{ticket}@".encode()))
    result = run_mailgate("replay", "--config", str(config), str(saved))
    assert result.returncode == 0, result.stderr
    # Nothing says the saved mail came through our MTA: the admin is not verified.
    assert b"comment" in result.stderr and client.get_issue(ticket).status_name == "Open"


def test_replay_counts_n_of_m_on_a_terminal(fake_redmine, tmp_path):
    """Progress a person can follow: "[n of m]" when stderr is a terminal (issue 17)."""
    import mailbox
    import os
    import pty
    import subprocess
    import sys

    from support.processes import child_env

    config = write_config(tmp_path / "m.yaml", fake_redmine.url, fake_redmine.admin_key)
    box = tmp_path / "saved.mbox"
    saved = mailbox.mbox(box)
    for name in ("unknown-address.eml", "empty.eml", "garbage.eml"):
        saved.add((MAIL / name).read_bytes() or b"Subject: x\n\n")
    saved.flush()
    controller, terminal = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "mailgate", "replay", "--config",
                                str(config), str(box)], stdout=subprocess.PIPE,
                               stderr=terminal, env=child_env())
    os.close(terminal)
    process.communicate(timeout=60)
    said = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:
            break
        if not chunk:
            break
        said += chunk
    lines = said.decode().splitlines()
    assert [line.split("]")[0] for line in lines] == ["[1 of 3", "[2 of 3", "[3 of 3"], lines


def test_an_mbox_s_escaped_from_lines_are_unescaped_before_anything_reads_them(tmp_path):
    """mbox writers escape a body line "From ..." as ">From ..."; trimming then took it
    for a quote and cut it (issue 17, point 6)."""
    import json
    import mailbox

    box = mailbox.mbox(tmp_path / "saved.mbox")
    box.add(b"From: owner@example.org\nTo: ticket1@example.org\nSubject: x\n\n"
            b"From the start it dropped.\nNow it is fine.\n")
    box.flush()
    assert b"\n>From the start" in (tmp_path / "saved.mbox").read_bytes()
    config = write_config(tmp_path / "m.yaml", "http://127.0.0.1:9", "key")
    result = run_mailgate("explain", "--config", str(config), "--json", "--ticket-state",
                          "open", "--ticket-owner", "owner@example.org",
                          str(tmp_path / "saved.mbox"))
    assert result.returncode == 0, result.stderr.decode()
    body = json.loads(result.stdout)["body"]
    assert "\n\nFrom the start it dropped.\nNow it is fine." in body, body
