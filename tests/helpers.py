"""Small helpers shared by the tests: run the real `mailgate` command, read fixtures."""

from __future__ import annotations

import json
import smtplib
import subprocess
import sys
from pathlib import Path

from support.processes import child_env

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
MAIL = FIXTURES / "mail"
DEMO_CONFIG = FIXTURES / "config" / "demo.yaml"


def fixture(name: str) -> bytes:
    return (MAIL / name).read_bytes()


def smtp(server) -> smtplib.SMTP:
    """A client of a RunningGateway's SMTP listener."""
    return smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=30)


def rcpt(conn: smtplib.SMTP, address: str, sender: str = "owner@example.org"):
    """EHLO, MAIL FROM ``sender``, RCPT TO ``address``: the RCPT's (code, text)."""
    conn.ehlo()
    conn.mail(sender)
    return conn.rcpt(address)


def run_mailgate(*args: str, stdin: bytes | None = None, env: dict | None = None,
                 timeout: float = 60) -> subprocess.CompletedProcess:
    """Run the installed entry point in a child process, as an MTA or a person would."""
    return subprocess.run([sys.executable, "-m", "mailgate", *args], input=stdin,
                          capture_output=True, env=child_env(env), timeout=timeout)


def explain_json(*files: str, state: str = "open", owner: str = "owner@example.org",
                 config: Path = DEMO_CONFIG, extra: tuple = ()) -> list[dict]:
    result = run_mailgate("explain", "--config", str(config), "--ticket-state", state,
                          "--ticket-owner", owner, "--json", *extra,
                          *[str(MAIL / f) for f in files])
    assert result.returncode == 0, result.stderr.decode()
    return [json.loads(line) for line in result.stdout.decode().splitlines()]


def without_marker(text: str) -> str:
    """A note's text without the idempotency marker line every note ends with."""
    body, sep, rest = (text or "").rpartition("\n\n(mailgate:")
    if sep and rest.endswith(")") and "\n" not in rest:
        return body.strip()
    return (text or "").strip() if not (text or "").startswith("(mailgate:") else ""
