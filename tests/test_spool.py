"""The durable spool: WAL + synchronous=FULL, claims under a lease, done/deferred/dead."""

import sqlite3

from mailgate.spool import SqliteSpool as Spool


def test_settings_that_make_a_commit_durable(tmp_path):
    Spool(tmp_path / "s.db")
    db = sqlite3.connect(tmp_path / "s.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_one_row_per_recipient_visible_to_another_process_connection(tmp_path):
    spool = Spool(tmp_path / "s.db")
    ids = spool.add("a@b.test", [("ticket1@example.org", None), ("ticket2@example.org", None)], b"raw")
    other = sqlite3.connect(tmp_path / "s.db")
    rows = other.execute("SELECT id, rcpt, raw, state FROM messages ORDER BY id").fetchall()
    assert rows == [(ids[0], "ticket1@example.org", b"raw", "queued"),
                    (ids[1], "ticket2@example.org", b"raw", "queued")]


def test_claim_takes_the_oldest_and_leases_it(tmp_path):
    spool = Spool(tmp_path / "s.db", lease_seconds=60)
    first, second = spool.add("a", [("x", None), ("y", None)], b"raw")
    claimed = spool.claim(now=1000.0)
    assert claimed.id == first and claimed.attempts == 1
    assert spool.claim(now=1000.0).id == second
    assert spool.claim(now=1000.0) is None
    # A worker that died holding the lease: the mail is taken up again later.
    assert spool.claim(now=10_000_000_000.0).id == first


def test_finish_defer_bury(tmp_path):
    spool = Spool(tmp_path / "s.db")
    a, b, c = spool.add("s", [("a", None), ("b", None), ("c", None)], b"raw")
    for _ in range(3):
        spool.claim()
    spool.finish(a, {"kind": "applied"})
    spool.defer(b, "RedmineUnavailable: down", delay=3600)
    spool.bury(c, "RedmineRejected: Subject cannot be blank")
    assert spool.get(a).outcome == {"kind": "applied"}
    assert spool.get(b).state == "queued" and spool.get(b).last_error.endswith("down")
    assert spool.claim() is None   # b is not due for an hour
    assert spool.get(c).state == "dead"
    assert spool.counts() == {"done": 1, "queued": 1, "dead": 1}
