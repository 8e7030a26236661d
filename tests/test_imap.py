"""The IMAP source against a real Dovecot (scripts/dovecot-local) and the real Redmine:
mail APPENDed to a fresh mailbox, taken by ``mailgate fetch`` (a child process, as
cron runs it) or by ``serve`` (IDLE, polling), and checked in Redmine and in the
mailbox's folders.  Exactly once: kill -9 in the middle of a batch, a Dovecot
restart under IDLE, and a UIDVALIDITY change lose nothing and double nothing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import uuid
from email.message import EmailMessage
from pathlib import Path

import pytest
import requests
from imapclient import SEEN

from mailgate.clients.redmine import RedmineClient
from mailgate.config import load_config
from mailgate.errors import ConfigError
from mailgate.store import open_spool
from support.configs import write_config
from support.processes import child_env
from tests.helpers import ROOT, run_mailgate, without_marker
from tests.load import make_mails, wait_until
from tests.servers import RunningGateway

pytestmark = pytest.mark.real_redmine


# -- helpers ---------------------------------------------------------------------------

def config_for(tmp_path: Path, redmine, mailbox, imap: dict | None = None, **box) -> Path:
    return write_config(tmp_path / "mailgate.yaml", redmine.url, redmine.admin_key,
                        imap={**(imap or {}), "mailboxes": [mailbox.settings(tmp_path, **box)]})


def fetch(config: Path, *args: str) -> subprocess.CompletedProcess:
    return run_mailgate("fetch", "--config", str(config), *args, timeout=180)


def said(done: subprocess.CompletedProcess) -> str:
    return done.stderr.decode(errors="replace")


def notes(redmine, ticket: int) -> list[str]:
    issue = RedmineClient(redmine.url, redmine.admin_key).get_issue(ticket)
    return [without_marker(j.notes) for j in issue.journals if j.notes]


def new_ticket(redmine, subject: str = "IMAP test") -> int:
    client = RedmineClient(redmine.url, redmine.admin_key)
    return client.create_issue("site-a", subject, "IMAP source test.", as_user="owner")


def mail(to: str, body: str, subject: str = "Hello") -> bytes:
    msg = EmailMessage()
    msg["From"] = "Olive Owner <owner@example.org>"
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = f"<imap-{uuid.uuid4().hex[:12]}@client.test>"
    msg.set_content(body)
    return bytes(msg)


def message_id(raw: bytes) -> str:
    from mailgate.mail.message import parse_mail

    return parse_mail(raw, headers_only=True).message_id


# -- mailgate fetch ----------------------------------------------------------------------

def test_fetch_posts_notes_opens_tickets_and_files_each_mail(tmp_path, real_redmine,
                                                            mailbox, dovecot):
    ticket = new_ticket(real_redmine)
    replies = make_mails([ticket], 2)
    run = uuid.uuid4().hex[:8]
    opening = mail("Site A <site-a@example.org>", f"A new question {run}", f"Question {run}")
    stranger = mail("nobody@elsewhere.example", "for nobody here")
    mailbox.append(*[m.raw for m in replies], opening, stranger)
    # STARTTLS, the certificate verified against the instance's own CA.
    config = config_for(tmp_path, real_redmine, mailbox, tls="starttls",
                        ca_file=dovecot.ca_file)

    done = fetch(config)

    assert done.returncode == 0, said(done)
    assert notes(real_redmine, ticket) == [m.body for m in replies]
    client = RedmineClient(real_redmine.url, real_redmine.admin_key)
    assert client.find_issue_with_text("site-a", f"A new question {run}") is not None
    assert mailbox.message_ids("INBOX") == []
    assert sorted(mailbox.message_ids("processed")) == sorted(
        message_id(raw) for raw in [*[m.raw for m in replies], opening])
    assert mailbox.message_ids("rejected") == [message_id(stranger)]
    # The refusal and its reason are in the log.
    assert f"{message_id(stranger)}) refused, to rejected: no recipient given" in said(done)
    assert "Traceback" not in said(done)

    again = fetch(config)                   # nothing waits: nothing happens
    assert again.returncode == 0 and "imap support: no mail" in said(again), said(again)
    assert len(notes(real_redmine, ticket)) == 2


def test_after_seen_flags_the_mail_and_a_uidvalidity_change_applies_nothing_again(
        tmp_path, real_redmine, mailbox, dovecot):
    ticket = new_ticket(real_redmine)
    first, second, third = make_mails([ticket], 3)
    mailbox.append(first.raw, second.raw)
    # Implicit TLS on the IMAPS port; the mail stays in INBOX, flagged \Seen.
    config = config_for(tmp_path, real_redmine, mailbox, tls="implicit",
                        port=dovecot.imaps_port, ca_file=dovecot.ca_file, after="seen")
    done = fetch(config)
    assert done.returncode == 0, said(done)
    assert notes(real_redmine, ticket) == [first.body, second.body]
    assert all(SEEN in flags for flags in mailbox.flags().values())
    assert len(mailbox.message_ids("INBOX")) == 2

    # The server renumbers the folder (a restored backup, a rebuilt index) and the
    # flags are lost with it: every UID is new, and every mail looks unread.
    before = mailbox.uidvalidity()
    dovecot.run("doveadm", dovecot.dir, "mailbox", "update", "-u", mailbox.user,
                "--uid-validity", str(before + 1000), "INBOX")
    assert mailbox.uidvalidity() == before + 1000
    with mailbox.client() as client:
        client.select_folder("INBOX")
        client.remove_flags(client.search(["ALL"]), [SEEN])
    mailbox.append(third.raw)

    again = fetch(config)

    assert again.returncode == 0, said(again)
    assert "imap support: 2 filed, 1 spooled" in said(again)
    assert notes(real_redmine, ticket) == [first.body, second.body, third.body]
    assert all(SEEN in flags for flags in mailbox.flags().values())


def test_a_wrong_password_is_one_line_and_exit_78(tmp_path, real_redmine, mailbox):
    raw = mail("site-a@example.org", "never taken")
    mailbox.append(raw)
    config = config_for(tmp_path, real_redmine, mailbox)
    (tmp_path / f"{mailbox.user}.password").write_text("not the password\n")

    done = fetch(config)

    assert done.returncode == 78, said(done)
    last = said(done).strip().splitlines()[-1]
    assert last == (f"mailgate: imap mailbox support: 127.0.0.1 refused the login of"
                    f" {mailbox.user}: [AUTHENTICATIONFAILED] Authentication failed."), said(done)
    assert "Traceback" not in said(done)
    assert mailbox.message_ids("INBOX") == [message_id(raw)]


#: ``mailgate fetch``, killed with SIGKILL right after the spool committed its 7th mail:
#: batch 2 (of 5) has two mails committed and none moved, batch 3 is untouched.
KILLED_FETCH = textwrap.dedent("""
    import os, signal, sys
    from mailgate.store import spool
    from mailgate.cli import main

    add, count = spool.SqliteSpool.add, [0]

    def add_then_die(self, *args, **kwargs):
        ids = add(self, *args, **kwargs)
        count[0] += 1
        if count[0] == 7:
            os.kill(os.getpid(), signal.SIGKILL)
        return ids

    spool.SqliteSpool.add = add_then_die
    sys.exit(main(["fetch", "--config", sys.argv[1]]))
""")


def test_kill_9_in_the_middle_of_a_batch_loses_nothing_and_doubles_nothing(
        tmp_path, real_redmine, mailbox):
    ticket = new_ticket(real_redmine)
    mails = make_mails([ticket], 12)
    mailbox.append(*[m.raw for m in mails])
    config = config_for(tmp_path, real_redmine, mailbox, batch_size=5)

    killed = subprocess.run([sys.executable, "-c", KILLED_FETCH, str(config)], cwd=ROOT,
                            env=child_env(), capture_output=True, timeout=180)

    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()
    # Batch 1 was committed and moved; two of batch 2 committed, not moved.
    assert len(mailbox.message_ids("processed")) == 5
    assert len(mailbox.message_ids("INBOX")) == 7
    spool = open_spool(tmp_path / "spool.db")
    assert len(spool.mails(state=None)) == 7
    spool.close()
    assert notes(real_redmine, ticket) == []                  # killed before applying

    done = fetch(config)

    assert done.returncode == 0, said(done)
    assert "imap support: 2 filed, 5 spooled" in said(done)
    assert notes(real_redmine, ticket) == [m.body for m in mails]   # each once, in order
    assert mailbox.message_ids("INBOX") == []
    assert sorted(mailbox.message_ids("processed")) == sorted(message_id(m.raw) for m in mails)
    spool = open_spool(tmp_path / "spool.db")
    assert [m.state for m in spool.mails(state=None)] == ["done"] * 12
    spool.close()


# -- serve -------------------------------------------------------------------------------

def metric(port: int, name: str, **labels) -> float:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{{wanted}}} "):
            return float(line.rpartition(" ")[2])
    return 0.0


def health(port: int) -> tuple[int, str]:
    answer = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
    return answer.status_code, answer.text


def test_serve_takes_mail_with_idle_and_outlives_a_dovecot_restart(tmp_path, real_redmine,
                                                                  mailbox, dovecot):
    ticket = new_ticket(real_redmine)
    first, second = make_mails([ticket], 2)
    config = config_for(tmp_path, real_redmine, mailbox, idle=True, poll_interval=600)
    with RunningGateway(config, lmtp=False, metrics=True) as server:
        port = server.metrics_port
        assert wait_until(lambda: metric(port, "mailgate_imap_logins_total",
                                         mailbox="support", result="ok") == 1, 20, 0.1)
        mailbox.append(first.raw)
        # poll_interval is 10 minutes: only IDLE can bring it this soon.
        assert wait_until(lambda: len(notes(real_redmine, ticket)) == 1, 20, 0.3)

        dovecot.restart()                   # the watcher is in IDLE: BYE, then refused
        mailbox.append(second.raw)

        assert wait_until(lambda: len(notes(real_redmine, ticket)) == 2, 60, 0.5)
        assert metric(port, "mailgate_imap_logins_total", mailbox="support",
                      result="ok") >= 2
        assert metric(port, "mailgate_imap_connection_errors_total", mailbox="support",
                      stage="connection") >= 1
        assert health(port) == (200, "ok\n")
        assert metric(port, "mailgate_runner_up", queue="imap support") == 1
    assert notes(real_redmine, ticket) == [first.body, second.body]
    assert len(mailbox.message_ids("processed")) == 2


def test_serve_polls_when_idle_is_off(tmp_path, real_redmine, mailbox):
    ticket = new_ticket(real_redmine)
    [reply] = make_mails([ticket], 1)
    config = config_for(tmp_path, real_redmine, mailbox, idle=False, poll_interval=1)
    with RunningGateway(config, lmtp=False):
        mailbox.append(reply.raw)
        assert wait_until(lambda: len(notes(real_redmine, ticket)) == 1, 20, 0.3)
    assert notes(real_redmine, ticket) == [reply.body]


def test_serve_healthz_fails_after_login_alarm_without_a_login(tmp_path, real_redmine,
                                                               mailbox):
    config = config_for(tmp_path, real_redmine, mailbox, imap={"login_alarm": 1})
    (tmp_path / f"{mailbox.user}.password").write_text("not the password\n")
    with RunningGateway(config, lmtp=False, metrics=True) as server:
        port = server.metrics_port
        # Dovecot answers a wrong password after a 2 s delay; the alarm is 1 s.
        assert wait_until(lambda: "refused the login" in health(port)[1], 20, 0.3)
        status, text = health(port)
        assert status == 503 and "imap support: no successful login for" in text, text
        assert metric(port, "mailgate_imap_logins_total", mailbox="support",
                      result="failed") >= 1
        assert metric(port, "mailgate_runner_up", queue="imap support") == 1


# -- memory ------------------------------------------------------------------------------

#: One pass over a mailbox holding one 25 MB mail, in a fresh process: its peak RSS
#: above the baseline taken just before (the mail was APPENDed by the test process).
MEASURE_PASS = textwrap.dedent("""
    import sys
    from mailgate.config import load_config
    from mailgate.gateway import build_gateway
    from mailgate.intake.imap import connect, sources

    config = load_config(sys.argv[1], environ={})
    gateway = build_gateway(config)
    [source] = sources(gateway, config.imap)
    client = connect(source.box)

    def status(key):
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) * 1024 for l in f if l.startswith(key))

    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = status("VmRSS")
    summary = source.run_pass(client)
    print(summary.spooled and status("VmHWM") - base)
""")


def test_a_25_mb_mail_is_spooled_with_peak_rss_under_3x_its_size(tmp_path, real_redmine,
                                                                  mailbox):
    msg = EmailMessage()
    msg["From"] = "Olive Owner <owner@example.org>"
    msg["To"] = "site-a@example.org"
    msg["Subject"] = "The router's full log"
    msg["Message-ID"] = f"<imap-25mb-{uuid.uuid4().hex[:8]}@client.test>"
    msg.set_content("The whole log of last night is attached.\n")
    msg.add_attachment(os.urandom(18_200_000), maintype="application",
                       subtype="octet-stream", filename="router.log")
    raw = bytes(msg).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    size = len(raw)
    mailbox.append(raw)
    del raw, msg
    config = write_config(tmp_path / "mailgate.yaml", real_redmine.url, real_redmine.admin_key,
                          server={"max_message_size": 30_000_000},
                          imap={"mailboxes": [mailbox.settings(tmp_path)]})

    done = subprocess.run([sys.executable, "-c", MEASURE_PASS, str(config)], cwd=ROOT,
                          env=child_env(), capture_output=True, timeout=180)

    assert done.returncode == 0, done.stderr.decode()
    peak = int(done.stdout.decode().split()[-1])
    assert peak, "the mail was not spooled:\n" + done.stderr.decode()
    assert peak <= 3 * size, f"peak {peak / size:.2f}x the mail's {size} bytes"
    assert mailbox.message_ids("processed") != []


# -- the imap: section -----------------------------------------------------------------

@pytest.mark.parametrize("box, error", [
    ({"tls": "none", "host": "imap.example.org"}, "tls: 'none' is only allowed for"),
    ({"tls": "smtps"}, "tls: 'smtps' is not one of implicit, starttls, none"),
    ({"password_env": "X"}, "give exactly one of password_env, password_file"),
    ({"after": "delete"}, "after: 'delete' is not one of move, seen"),
    ({"site": "site-z"}, "site: no such site 'site-z'"),
    ({"folders": "x"}, "folders: unknown key; did you mean .folder.?"),
])
def test_the_imap_section_names_what_is_wrong(tmp_path, box, error):
    (tmp_path / "pw").write_text("secret\n")
    spec = {"name": "support", "host": "127.0.0.1", "user": "u", "password_file": "pw", **box}
    config = write_config(tmp_path / "mailgate.yaml", "http://127.0.0.1:9", "key",
                          imap={"mailboxes": [spec]})
    with pytest.raises(ConfigError, match=error.replace("(", r"\(")):
        load_config(config, environ={})


def test_every_mailbox_inherits_the_section_and_the_environment_overrides(tmp_path):
    (tmp_path / "pw").write_text("secret\n")
    config = write_config(tmp_path / "mailgate.yaml", "http://127.0.0.1:9", "key",
                          imap={"poll_interval": 60, "mailboxes": [
                              {"host": "127.0.0.1", "user": "a", "password_file": "pw"},
                              {"host": "127.0.0.1", "user": "b", "password_file": "pw",
                               "poll_interval": 5, "site": "site-a"}]})
    imap = load_config(config, environ={"MAILGATE_IMAP_LOGIN_ALARM": "30"}).imap
    assert [b.poll_interval for b in imap.mailboxes] == [60, 5]
    assert imap.login_alarm == 30
    assert [b.name for b in imap.mailboxes] == ["a@127.0.0.1", "b@127.0.0.1"]
    assert imap.mailboxes[0].tls == "implicit" and imap.mailboxes[0].port == 993
    assert imap.mailboxes[0].recipient_headers == ("delivered-to", "x-original-to", "to", "cc")
    assert imap.mailboxes[1].password() == "secret"
