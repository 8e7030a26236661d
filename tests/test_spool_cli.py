"""`mailgate spool`: an operator sees what is stuck and why, and fixes it."""

from __future__ import annotations

import pytest

from support.configs import write_config
from support.processes import free_port
from tests.helpers import fixture, run_mailgate


@pytest.fixture
def stuck(tmp_path):
    """Two mails spooled while Redmine was down: deferred, with the reason."""
    config = write_config(tmp_path / "m.yaml", f"http://127.0.0.1:{free_port()}", "key",
                          triage={"project": "triage"})
    for _ in range(2):
        # Mail to a site address needs no ticket check, so it is spooled and then deferred.
        result = run_mailgate("pipe", "--config", str(config), stdin=fixture("site-a-new-ticket.eml"))
        assert result.returncode == 0, result.stderr
    return config


def spool(config, *args, stdin=None):
    result = run_mailgate("spool", *args, "--config", str(config), stdin=stdin)
    return result.returncode, result.stdout.decode()


def test_list_shows_what_waits_and_why(stuck):
    status, out = spool(stuck, "list")
    assert status == 0 and out.strip().endswith("2 mail(s)")
    assert "<site-a@example.org> owner@example.org 'The router drops the connection'" in out
    assert "RedmineUnavailable" in out and "tries 1" in out


def test_show_and_show_raw(stuck):
    status, out = spool(stuck, "show", "1")
    assert status == 0 and "state: queued" in out and "RedmineUnavailable" in out
    status, out = spool(stuck, "show", "1", "--raw")
    assert out.encode() == fixture("site-a-new-ticket.eml")
    assert spool(stuck, "show", "99")[0] == 1


def test_stats(stuck):
    status, out = spool(stuck, "stats")
    assert status == 0 and "queued: 2" in out and "dead: 0" in out


def test_retry_makes_them_due_now(stuck):
    status, out = spool(stuck, "list")
    assert "next now" not in out
    assert spool(stuck, "retry", "--all") == (0, "2 mail(s) due now\n")
    assert "next now" in spool(stuck, "list")[1]


def test_drop_asks_first(stuck):
    assert spool(stuck, "drop", "1", stdin=b"n\n")[0] == 1
    assert "2 mail(s)" in spool(stuck, "list")[1]
    status, out = spool(stuck, "drop", "1", stdin=b"y\n")
    assert status == 0 and "dropped 1" in out
    assert spool(stuck, "drop", "2", "--yes") == (0, "dropped 2\n")
    assert "0 mail(s)" in spool(stuck, "list")[1]


def test_a_reader_that_stops_early_is_no_error(tmp_path):
    """`mailgate spool list | head -1` said "internal error: BrokenPipeError"."""
    import subprocess
    import sys

    from mailgate.store import open_spool
    from support.processes import child_env

    config = write_config(tmp_path / "m.yaml", "http://127.0.0.1:9", "key")
    store = open_spool(tmp_path / "spool.db")
    # Enough lines that the reader's pipe fills (64 kB) while the list is still printing.
    store.add_many([("o@example.org", [(f"ticket{n}@example.org", None)], b"Subject: x\r\n\r\nx",
                     None, None) for n in range(3000)])
    shell = (f"{sys.executable} -m mailgate spool list --config {config} | head -1;"
             " echo status=${PIPESTATUS[0]}")
    result = subprocess.run(["bash", "-c", shell], capture_output=True, env=child_env())
    assert result.stdout.decode().splitlines()[-1] == "status=0", result.stderr.decode()
    assert b"internal error" not in result.stderr and b"Traceback" not in result.stderr


def test_a_list_of_none_waiting_says_how_many_are_dead(stuck):
    """'0 mail(s)' read as all is well while mail lay dead-lettered (issue 17, point 3)."""
    from mailgate.config import load_config
    from mailgate.store import open_spool

    store = open_spool(load_config(stuck, need_redmine=False).store)
    for mail in store.mails("queued"):
        store.bury(mail.id, "refused for the test")
    status, out = spool(stuck, "list")
    assert status == 0 and out.splitlines()[-2:] == [
        "0 mail(s)", "and 2 dead: mailgate spool list --state dead"]
