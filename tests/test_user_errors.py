"""A user's mistake gets one line naming it and the right exit code, never a traceback
(issue 17, point 2), through the real command."""

from __future__ import annotations

import mailbox
import socket

import pytest

from mailgate.errors import EX_CONFIG, EX_NOINPUT, EX_TEMPFAIL
from support.configs import write_config
from support.processes import closed_url
from tests.helpers import MAIL, run_mailgate


@pytest.fixture
def config(tmp_path):
    return write_config(tmp_path / "m.yaml", closed_url(), "key")


def said(result) -> str:
    text = result.stderr.decode()
    assert "Traceback" not in text and "internal error" not in text, text
    return text


@pytest.fixture
def port_in_use():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


@pytest.mark.parametrize("option", ["--smtp", "--metrics"])
def test_a_port_in_use_ends_serve_with_one_line_and_exit_75(config, port_in_use, option):
    args = ["--smtp", f"127.0.0.1:{port_in_use}"] if option == "--smtp" else \
        ["--lmtp", "127.0.0.1:0", "--metrics", f"127.0.0.1:{port_in_use}"]
    result = run_mailgate("serve", "--config", str(config), *args,
                          env={"MAILGATE_LOG_LEVEL": "ERROR"}, timeout=60)
    assert result.returncode == EX_TEMPFAIL
    assert f"127.0.0.1:{port_in_use}" in said(result).strip().splitlines()[-1]


@pytest.mark.parametrize("value", ["localhost", "nonsense:xx", "127.0.0.1:0x19", ":99999"])
def test_a_listen_address_that_is_not_host_port_is_a_config_error(config, value):
    result = run_mailgate("serve", "--config", str(config), "--smtp", value)
    assert result.returncode == EX_CONFIG
    assert said(result).strip() == \
        f"mailgate: --smtp: {value!r} is not HOST:PORT (a port from 0 to 65535)"


def test_a_listen_address_in_the_config_is_checked_when_it_is_read(tmp_path):
    config = write_config(tmp_path / "m.yaml", closed_url(), "key",
                          listen={"smtp": "nonsense"})
    result = run_mailgate("check-config", str(config))
    assert result.returncode == EX_CONFIG
    assert "listen.smtp: 'nonsense' is not HOST:PORT" in said(result)


@pytest.mark.parametrize("command", ["replay", "explain"])
def test_a_missing_input_is_exit_66_naming_it(config, tmp_path, command):
    missing = tmp_path / "nowhere.eml"
    result = run_mailgate(command, "--config", str(config), str(missing))
    assert result.returncode == EX_NOINPUT
    assert said(result).strip() == f"mailgate: {missing}: no such file or directory"


def test_explain_takes_directories_and_mboxes_like_replay(config, tmp_path):
    box = mailbox.mbox(tmp_path / "saved.mbox")
    for name in ("owner-reply.eml", "support-answer.eml"):
        box.add((MAIL / name).read_bytes())
    box.flush()
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "one.eml").write_bytes((MAIL / "owner-confirms.eml").read_bytes())
    result = run_mailgate("explain", "--config", str(config), "--ticket-state", "open",
                          "--ticket-owner", "owner@example.org", str(tmp_path / "saved.mbox"),
                          str(folder))
    assert result.returncode == 0, said(result)
    out = result.stdout.decode()
    assert f"{tmp_path / 'saved.mbox'}[0]" in out and f"{tmp_path / 'saved.mbox'}[1]" in out
    assert f"{folder / 'one.eml'}" in out
    assert "give-info" in out and "answer" in out


def test_serve_says_where_it_is_and_is_red_at_once_without_redmine(tmp_path, fake_redmine):
    """/healthz is red from the start when Redmine cannot be reached (not only after the
    ten-minute alarm), and green once it answers; the log says which spool and which
    Redmine (issue 17, point 3)."""
    import requests

    from support.processes import ServeProcess, free_port, wait_port

    down = write_config(tmp_path / "down.yaml", closed_url(), "key")
    smtp, http = free_port(), free_port()
    with ServeProcess(down, smtp, tmp_path / "down.log", "--metrics",
                      f"127.0.0.1:{http}") as server:
        wait_port(http)
        answer = requests.get(f"http://127.0.0.1:{http}/healthz", timeout=5)
        assert answer.status_code == 503
        assert answer.text.startswith("Redmine not reached since start-up:"), answer.text
        server.stop()
    log = (tmp_path / "down.log").read_text()
    assert f"spool: SQLite {tmp_path / 'spool.db'}" in log and "Redmine: http://127.0.0.1:" in log

    up = write_config(tmp_path / "up.yaml", fake_redmine.url, fake_redmine.admin_key)
    with ServeProcess(up, smtp, tmp_path / "up.log", "--metrics", f"127.0.0.1:{http}") as server:
        wait_port(http)
        assert requests.get(f"http://127.0.0.1:{http}/healthz", timeout=5).text == "ok\n"
        server.stop()
