"""A real Postfix in front of mailgate, both ways docs/deploy.md sets it up, end to end
against the real Redmine (scripts/redmine-local) on 127.0.0.1 only:

* pipe(8) -> ``mailgate pipe``: a reply lands as a note and an unknown address
  bounces (exit 67); with Redmine stopped the pipe exits 75, Postfix defers the
  mail, and delivers it once Redmine is back and the queue is flushed.
* LMTP -> ``mailgate serve --lmtp``: a reply lands as a note, and an unknown
  address in the same mail is refused for that recipient only (550 5.1.1 at RCPT,
  then bounced by Postfix).

scripts/postfix-local runs a private Postfix instance whose mailgate settings are
docs/postfix/*, as the docs show them (only the paths are replaced).  pipe(8)
runs mailgate as the user ``mailgate`` (it refuses root) with an empty
environment, so the pipe's config file holds the Redmine URL and key, and the
Python it runs must be one that user can execute: see ``mailgate_python``.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import tomllib
import uuid
from contextlib import contextmanager
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from mailgate.errors import RedmineUnavailable
from mailgate.clients.redmine import RedmineClient
from support.configs import write_config
from support.processes import child_env, free_port
from tests.helpers import ROOT, without_marker
from tests.load import wait_until

POSTFIX_LOCAL = ROOT / "scripts" / "postfix-local"
REDMINE_LOCAL = ROOT / "scripts" / "redmine-local"
SENDER = "support@example.org"
USER = "mailgate"


def _missing(reason: str) -> None:
    # As for the real Redmine: on CI a test that could not run is a failure.
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI is set, so Postfix is required", pytrace=False)
    pytest.skip(reason)


# -- the Postfix instance -------------------------------------------------------------

def postfix_local(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([str(POSTFIX_LOCAL), *args], capture_output=True, text=True,
                            timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"scripts/postfix-local {' '.join(args)}: exit "
                             f"{result.returncode}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def instance():
    """A directory for the private instance that the users postfix and mailgate can reach
    (pytest's own tmp directories are 0700 root); stopped and removed afterwards."""
    if os.geteuid() != 0:
        _missing("Postfix tests need root (apt-get, useradd, postfix start)")
    installed = postfix_local("install", check=False)
    if installed.returncode != 0:
        _missing(f"scripts/postfix-local install failed:\n{installed.stderr}")
    path = Path(tempfile.mkdtemp(prefix="mailgate-postfix-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    postfix_local("stop", str(path), check=False)
    shutil.rmtree(path, ignore_errors=True)


def postfix_log(instance: Path) -> str:
    return (instance / "postfix.log").read_text(errors="replace")


def deliveries(instance: Path, queue_id: str) -> dict[str, str]:
    """Recipient -> the last delivery line Postfix logged for it in this mail."""
    found = {}
    for line in postfix_log(instance).splitlines():
        match = re.search(rf" {queue_id}: to=<([^>]+)>", line)
        if match:
            found[match.group(1)] = line
    return found


def wait_for_status(instance: Path, queue_id: str, recipient: str, status: str,
                    timeout: float = 30) -> str:
    def logged():
        return f"status={status}" in deliveries(instance, queue_id).get(recipient, "")
    assert wait_until(logged, timeout, 0.2), (
        f"no status={status} for <{recipient}> ({queue_id}) in {timeout} s:\n"
        + postfix_log(instance)[-4000:])
    return deliveries(instance, queue_id)[recipient]


def send(port: int, recipients: list[str], raw: bytes) -> str:
    """Hand one mail to Postfix's smtpd; returns its queue id."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.ehlo("client.test")
        smtp.mail(SENDER)
        for recipient in recipients:
            code, text = smtp.rcpt(recipient)
            assert code == 250, f"Postfix refused <{recipient}>: {code} {text!r}"
        code, text = smtp.data(raw)
    assert code == 250, f"Postfix refused the mail: {code} {text!r}"
    return re.search(r"queued as (\w+)", text.decode()).group(1)


# -- the Python pipe(8) runs as user mailgate -----------------------------------------

def _runs_as_mailgate(python: str, code: str = "import mailgate.cli") -> str | None:
    """What ``python -c code`` prints when run as user mailgate, or None if it fails."""
    try:
        result = subprocess.run([python, "-c", code], user=USER, group=USER, extra_groups=[],
                                cwd="/", env={"PATH": "/usr/bin:/bin"}, capture_output=True,
                                text=True, timeout=60)
    except OSError:
        return None
    return result.stdout if result.returncode == 0 else None


def mailgate_python(state: Path) -> str:
    """A Python that user mailgate can run, with this checkout's mailgate importable.

    This test's own interpreter, when everyone may run it and read the checkout
    (a .venv made from /usr/bin/python3, as scripts/bootstrap makes on CI).  Under
    /root (pyenv) it is not; then a venv is made from a Python of the same version
    that user can run, holding copies of this checkout's packages and of mailgate's
    installed dependencies (offline: nothing is downloaded).
    """
    if _runs_as_mailgate(sys.executable) is not None:
        return sys.executable
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    want = f"{sys.version_info.major} {sys.version_info.minor}\n"
    bases = [f"/usr/bin/python{version}", f"/usr/local/bin/python{version}"]
    base = next((b for b in bases if os.path.exists(b) and _runs_as_mailgate(
        b, "import sys; print(*sys.version_info[:2])") == want), None)
    if base is None:
        _missing(f"user {USER} can run neither {sys.executable} nor any of {bases}")
    venv = state / "python"
    subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = venv / "lib" / f"python{version}" / "site-packages"
    for dist in _dependencies("mailgate"):
        _copy_distribution(dist, site)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    # The top-level packages, from the include patterns ("mailgate*" -> mailgate).
    for package in [p.rstrip("*") for p in
                    project["tool"]["setuptools"]["packages"]["find"]["include"]]:
        shutil.copytree(ROOT / package, site / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    python = str(venv / "bin" / "python")
    assert _runs_as_mailgate(python) is not None, f"{python} cannot import mailgate"
    return python


def _dependencies(name: str) -> list[importlib.metadata.Distribution]:
    """The installed distributions ``name`` needs, recursively (extras left out)."""
    found: dict[str, importlib.metadata.Distribution] = {}
    todo = list(importlib.metadata.requires(name) or [])
    while todo:
        requirement = todo.pop()
        if "extra ==" in requirement:
            continue
        wanted = re.match(r"[A-Za-z0-9_.\-]+", requirement).group()
        key = re.sub(r"[-_.]+", "-", wanted).lower()
        if key in found:
            continue
        try:
            found[key] = importlib.metadata.distribution(wanted)
        except importlib.metadata.PackageNotFoundError:
            continue      # a marker for another platform or Python: not needed here
        todo.extend(found[key].requires or [])
    return list(found.values())


def _copy_distribution(dist: importlib.metadata.Distribution, site: Path) -> None:
    assert dist.files, f"{dist.metadata['Name']} lists no files (no RECORD): cannot copy it"
    for file in dist.files:
        if ".." in file.parts or "__pycache__" in file.parts:
            continue      # console scripts outside site-packages; bytecode is rebuilt
        target = site / file
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(dist.locate_file(file), target)


def chown_to_mailgate(path: Path) -> None:
    for each in [path, *path.rglob("*")]:
        shutil.chown(each, USER, USER)


# -- Redmine --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def client(real_redmine):
    return RedmineClient(real_redmine.url, real_redmine.admin_key)


@contextmanager
def redmine_stopped(url: str):
    """The local Redmine taken down, and started again however the block ends."""
    port = str(urlsplit(url).port or 3000)
    subprocess.run([str(REDMINE_LOCAL), "stop", port], check=True, capture_output=True,
                   timeout=60)
    restarted = False

    def start():
        nonlocal restarted
        subprocess.run([str(REDMINE_LOCAL), "start", port], check=True, capture_output=True,
                       timeout=300)
        restarted = True

    try:
        yield start
    finally:
        if not restarted:
            start()


def new_ticket(client) -> int:
    return client.create_issue("site-a", f"postfix {uuid.uuid4().hex[:8]}",
                               "The router drops the connection.", as_user="owner")


def reply(ticket: int, body: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Sam Support <{SENDER}>"
    msg["To"] = f"ticket{ticket}@example.org"
    msg["Subject"] = f"Re: ticket {ticket}"
    msg["Message-ID"] = f"<{uuid.uuid4().hex}@postfix.test>"
    msg.set_content(body)
    return bytes(msg)


def notes(client, ticket: int) -> list[str]:
    """The notes' texts, without the marker line and the gateway user's "From:" line."""
    try:
        return [without_marker(j.notes).split("\n\n", 1)[-1]
                for j in client.get_issue(ticket).journals]
    except RedmineUnavailable:
        return []


def wait_for_note(client, ticket: int, body: str, timeout: float = 30) -> None:
    # Without a DKIM milter in this Postfix nothing verifies the sender, so the
    # note is the gateway user's, naming them above the text (docs/trust.md).
    assert wait_until(lambda: body in notes(client, ticket), timeout, 0.3), (
        f"no note {body!r} on #{ticket} after {timeout} s")


# -- the tests ------------------------------------------------------------------------

def test_the_deploy_guide_shows_the_settings_the_test_runs():
    guide = (ROOT / "docs" / "deploy.md").read_text()
    for path in sorted((ROOT / "docs" / "postfix").iterdir()):
        settings = [line for line in path.read_text().splitlines()
                    if line.strip() and not line.startswith("#")]
        block = "\n".join(f"    {line}" for line in settings)
        assert settings and f"\n{block}\n" in guide, f"docs/deploy.md lacks {path.name}:\n{block}"


@pytest.mark.real_redmine
@pytest.mark.slow
def test_pipe_transport_delivers_bounces_and_defers_while_redmine_is_down(
        real_redmine, client, instance):
    home = instance / "mailgate"
    home.mkdir()
    # pipe(8) passes no environment: the Redmine URL and key are in the file.
    config = write_config(home / "mailgate.yaml", real_redmine.url, real_redmine.admin_key)
    python = mailgate_python(instance)
    chown_to_mailgate(home)
    port = free_port()
    postfix_local("start", str(instance), str(port), "--pipe", f"{python} -m mailgate",
                  str(config))

    ticket = new_ticket(client)
    first = f"through Postfix's pipe {uuid.uuid4().hex[:6]}"
    good, nobody = f"ticket{ticket}@example.org", "nobody@example.org"
    queue_id = send(port, [good, nobody], reply(ticket, first))
    wait_for_note(client, ticket, first)
    assert "status=sent" in wait_for_status(instance, queue_id, good, "sent")
    bounced = wait_for_status(instance, queue_id, nobody, "bounced")
    assert "dsn=5.1.1" in bounced and "mailgate: " in bounced   # exit 67, our reason
    # The pipe ran as mailgate: the spool it wrote is that user's.
    assert (home / "spool.db").owner() == USER

    second = f"held by Postfix while Redmine is down {uuid.uuid4().hex[:6]}"
    with redmine_stopped(real_redmine.url) as start_redmine:
        queue_id = send(port, [good], reply(ticket, second))
        deferred = wait_for_status(instance, queue_id, good, "deferred")
        assert "dsn=4.3.0" in deferred and "Redmine" in deferred  # exit 75, our reason
        assert queue_id in postfix_local("queue", str(instance)).stdout
        start_redmine()
    postfix_local("flush", str(instance))
    wait_for_note(client, ticket, second)
    wait_for_status(instance, queue_id, good, "sent")
    assert notes(client, ticket).count(first) == notes(client, ticket).count(second) == 1
    assert wait_until(lambda: queue_id not in postfix_local("queue", str(instance)).stdout,
                      10, 0.3)


@contextmanager
def serve_lmtp(config: Path, port: int, log: Path):
    """``mailgate serve --lmtp`` as its own process, as systemd would run it."""
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "mailgate", "serve", "--config", str(config),
             "--lmtp", f"127.0.0.1:{port}"], stdout=out, stderr=out, env=child_env())
    try:
        assert wait_until(lambda: _answers(port), 20, 0.1), log.read_text()
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        status = process.wait(40)
    assert status == 0, log.read_text()   # SIGTERM is a clean stop


def _answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.mark.real_redmine
@pytest.mark.slow
def test_lmtp_delivers_and_refuses_an_unknown_recipient_alone(real_redmine, client, instance,
                                                              tmp_path):
    config = write_config(tmp_path / "mailgate.yaml", real_redmine.url, real_redmine.admin_key)
    lmtp_port, port = free_port(), free_port()
    with serve_lmtp(config, lmtp_port, tmp_path / "serve.log"):
        postfix_local("start", str(instance), str(port), "--lmtp", f"127.0.0.1:{lmtp_port}")
        ticket = new_ticket(client)
        body = f"through Postfix's LMTP {uuid.uuid4().hex[:6]}"
        good, nobody = f"ticket{ticket}@example.org", "nobody@example.org"
        queue_id = send(port, [good, nobody], reply(ticket, body))
        wait_for_note(client, ticket, body)
        sent = wait_for_status(instance, queue_id, good, "sent")
        assert "250 2.0.0" in sent
        bounced = wait_for_status(instance, queue_id, nobody, "bounced")
        assert "said: 550 5.1.1" in bounced and "in reply to RCPT TO" in bounced
    # One line per recipient for this mail, nothing deferred or retried.
    assert sorted(deliveries(instance, queue_id)) == sorted([good, nobody])
    assert postfix_log(instance).count(f"{queue_id}: to=<") == 2


# Every form in which a forged field passed itself off as our MTA's (issue 18, finding 1):
# comments before the authserv-id, nested comments, quoting, quoted-pairs, case, folding,
# and the obsolete space before the colon.
FORGED_RESULTS = [
    "Authentication-Results: mx.example.org; dkim=pass header.d=example.org",
    "Authentication-Results: (relayed) mx.example.org; dkim=pass header.d=example.org",
    "Authentication-Results: (x)mx.example.org; dkim=pass header.d=example.org",
    'Authentication-Results: "mx.example.org"; dkim=pass header.d=example.org',
    'Authentication-Results: "mx\\.example\\.org"; dkim=pass header.d=example.org',
    "Authentication-Results: (a (nested) one) mx.example.org; dmarc=pass header.from=example.org",
    "authentication-results: MX.Example.ORG; dkim=pass header.d=example.org",
    "Authentication-Results:\r\n\t(folded)\r\n mx.example.org;\r\n dkim=pass header.d=example.org",
    "Authentication-Results : mx.example.org; dkim=pass header.d=example.org",
]


def forged_admin_reply(ticket: int, body: str) -> bytes:
    """The admin's address, no signature, and our MTA's verdict forged in every form."""
    head = [*FORGED_RESULTS,
            "From: Redmine Admin <admin@example.org>",
            f"To: ticket{ticket}@example.org",
            f"Subject: Re: ticket {ticket}",
            f"Message-ID: <{uuid.uuid4().hex}@forged.test>",
            "X-Kept: this field is not Authentication-Results"]
    return ("\r\n".join(head) + f"\r\n\r\nStatus: invalid\r\n\r\n{body}\r\n").encode()


def spooled_raw(config: Path) -> list[bytes]:
    """Every mail in the spool, as mailgate received it (its own CLI)."""
    def cli(*args: str) -> str:
        return subprocess.run([sys.executable, "-m", "mailgate", "spool", *args,
                               "--config", str(config)], capture_output=True, check=True,
                              env=child_env(), timeout=60).stdout.decode()
    ids = re.findall(r"^\s*(\d+) (?:queued|dead|done) ", cli("list", "--state", "all"), re.MULTILINE)
    assert ids, "nothing in the spool"
    return [cli("show", "--raw", mail_id).encode() for mail_id in ids]


@pytest.mark.real_redmine
@pytest.mark.slow
def test_the_shipped_header_checks_remove_forged_authentication_results(
        real_redmine, client, instance, tmp_path):
    # mailgate believes mx.example.org, as it would behind this Postfix with a DKIM milter.
    config = write_config(tmp_path / "mailgate.yaml", real_redmine.url, real_redmine.admin_key,
                          trust={"trusted_authserv_ids": ["mx.example.org"],
                                 "trusted_relays": []})
    lmtp_port, port = free_port(), free_port()
    with serve_lmtp(config, lmtp_port, tmp_path / "serve.log"):
        postfix_local("start", str(instance), str(port), "--lmtp", f"127.0.0.1:{lmtp_port}")
        ticket = new_ticket(client)
        before = client.get_issue(ticket).status_name
        body = f"forged admin {uuid.uuid4().hex[:6]}"
        queue_id = send(port, [f"ticket{ticket}@example.org"], forged_admin_reply(ticket, body))
        wait_for_status(instance, queue_id, f"ticket{ticket}@example.org", "sent")
        wait_for_note(client, ticket, body)
    [raw] = spooled_raw(config)
    header = raw.split(b"\n\n", 1)[0].split(b"\r\n\r\n", 1)[0]
    assert b"X-Kept: this field is not Authentication-Results" in header
    assert not re.search(rb"(?im)^authentication-results", header), header.decode()
    # And so the admin's address alone acted as nobody: the gateway wrote, nothing moved.
    issue = client.get_issue(ticket)
    [journal] = [j for j in issue.journals if body in j.notes]
    assert journal.user_name != "Redmine Admin" and journal.status_change is None
    assert issue.status_name == before
