"""The spool holds every mail received: only its owner may read it (issue 18).

SQLite creates its file with the process's umask (0644 under most MTAs) and
gives the -wal and -shm files the main file's mode, so the main file must
be made 0600 before SQLite opens it.
"""

from __future__ import annotations

import os
import sqlite3
import stat

import pytest

from mailgate.store.sqlite import open_durable
from support.configs import write_config
from tests.helpers import fixture, run_mailgate


@pytest.fixture
def loose_umask():
    """The umask Postfix or a shell commonly gives: files 0644 unless made otherwise."""
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.fixture
def config(tmp_path, fake_redmine):
    return write_config(tmp_path / "mailgate.yaml", fake_redmine.url, fake_redmine.admin_key)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def spool_files(spool) -> list:
    return [spool, spool.with_name(spool.name + "-wal"), spool.with_name(spool.name + "-shm")]


def queue_one(config):
    result = run_mailgate("pipe", "--config", str(config), "--queue-only",
                          "--recipient", "site-a@example.org",
                          stdin=fixture("site-a-new-ticket.eml"),
                          env={"MAILGATE_LOG_LEVEL": "WARNING"})
    assert result.returncode == 0, result.stderr


def test_the_pipe_creates_the_spool_0600(loose_umask, config, tmp_path):
    spool = tmp_path / "spool.db"
    assert not spool.exists()
    queue_one(config)
    assert oct(mode(spool)) == oct(0o600)


def test_wal_and_shm_are_0600_too(loose_umask, config, tmp_path):
    spool = tmp_path / "spool.db"
    queue_one(config)
    # While a connection is open the -wal and -shm files stay (the last one to
    # close removes them): keep one open, as `mailgate serve` would, and write.
    watcher = sqlite3.connect(spool)
    watcher.execute("PRAGMA journal_mode=WAL")
    watcher.execute("SELECT count(*) FROM sqlite_master").fetchall()
    try:
        queue_one(config)
        assert {p.name: oct(mode(p)) for p in spool_files(spool)} == \
            {p.name: oct(0o600) for p in spool_files(spool)}
    finally:
        watcher.close()


def test_a_spool_made_world_readable_before_is_made_private(loose_umask, tmp_path):
    # A spool created by an earlier version (0644) is tightened on the next open.
    spool = tmp_path / "old.db"
    sqlite3.connect(spool).close()
    os.chmod(spool, 0o644)
    open_durable(spool, "CREATE TABLE IF NOT EXISTS t (x)").close()
    assert oct(mode(spool)) == oct(0o600)


def test_open_durable_creates_the_directory_and_a_private_file(loose_umask, tmp_path):
    spool = tmp_path / "state" / "spool.db"
    db = open_durable(spool, "CREATE TABLE IF NOT EXISTS t (x)")
    try:
        db.execute("INSERT INTO t VALUES (1)")
        assert [oct(mode(p)) for p in spool_files(spool)] == [oct(0o600)] * 3
    finally:
        db.close()
