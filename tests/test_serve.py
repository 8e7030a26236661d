"""`mailgate serve` as its own process: start-up checks and graceful shutdown on SIGTERM."""

from __future__ import annotations

import signal
import socket
import sqlite3
import time

from support.configs import write_config
from support.processes import ServeProcess, free_port
from tests.helpers import fixture, run_mailgate


def reply(sock_file) -> str:
    lines = []
    while True:
        line = sock_file.readline().decode()
        lines.append(line)
        if line[3:4] != "-":
            return "".join(lines)


def test_sigterm_finishes_the_transaction_in_flight(fake_redmine, tmp_path):
    config = write_config(tmp_path / "m.yaml", fake_redmine.url, fake_redmine.admin_key)
    server = ServeProcess(config, free_port(), tmp_path / "serve.log").start()
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        stream = sock.makefile("rb")
        assert reply(stream).startswith("220")
        for command in (b"EHLO client.test", b"MAIL FROM:<owner@example.org>",
                        b"RCPT TO:<site-a@example.org>", b"DATA"):
            sock.sendall(command + b"\r\n")
            reply(stream)
        sock.sendall(fixture("site-a-new-ticket.eml").replace(b"\n", b"\r\n"))
        # The operator stops the service in the middle of our DATA.
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert server.process.poll() is None, "exited before the transaction ended"
        sock.sendall(b".\r\n")
        assert reply(stream).startswith("250 2.0.0")
    assert server.process.wait(30) == 0
    rows = sqlite3.connect(tmp_path / "spool.db").execute("SELECT rcpt FROM messages")
    assert rows.fetchall() == [("site-a@example.org",)]


def test_no_new_connections_after_sigterm(fake_redmine, tmp_path):
    config = write_config(tmp_path / "m.yaml", fake_redmine.url, fake_redmine.admin_key)
    server = ServeProcess(config, free_port(), tmp_path / "serve.log").start()
    assert server.stop() == 0
    try:
        socket.create_connection(("127.0.0.1", server.port), timeout=2).close()
        refused = False
    except OSError:
        refused = True
    assert refused


def test_a_wrong_api_key_stops_serve_with_exit_78(fake_redmine, tmp_path):
    config = write_config(tmp_path / "m.yaml", fake_redmine.url, "0" * 40)
    result = run_mailgate("serve", "--config", str(config), "--smtp", f"127.0.0.1:{free_port()}",
                          timeout=30)
    assert result.returncode == 78
    assert "API key" in result.stderr.decode()


def test_a_missing_status_stops_serve_naming_it(fake_redmine, tmp_path):
    config = write_config(tmp_path / "m.yaml", fake_redmine.url, fake_redmine.admin_key,
                          redmine={"statuses": {"solved": "Resolved"}})
    result = run_mailgate("serve", "--config", str(config), "--smtp", f"127.0.0.1:{free_port()}",
                          timeout=30)
    assert result.returncode == 78
    assert "Resolved" in result.stderr.decode()
