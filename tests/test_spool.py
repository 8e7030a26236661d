"""The durable spool and state store, on both backends (SQLite default, PostgreSQL)."""

import sqlite3
import time

from mailgate.store.spool import INLINE_BELOW, SqliteSpool


def test_sqlite_settings_that_make_a_commit_durable(tmp_path):
    spool = SqliteSpool(tmp_path / "s.db")
    assert spool._db.execute("PRAGMA synchronous").fetchone()[0] == 2      # FULL
    db = sqlite3.connect(tmp_path / "s.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_one_row_per_recipient(spool_backend):
    spool = spool_backend
    ids = spool.add("a@b.test", [("ticket1@example.org", "ticket:1"),
                                 ("site-a@example.org", None)], b"raw\x00\xff")
    rows = [spool.get(i) for i in ids]
    assert [(r.rcpt, r.raw, r.state, r.order_key) for r in rows] == [
        ("ticket1@example.org", b"raw\x00\xff", "queued", "ticket:1"),
        ("site-a@example.org", b"raw\x00\xff", "queued", None)]


def test_claim_takes_the_oldest_and_leases_it(spool_backend):
    spool = spool_backend
    first, second = spool.add("a", [("x", None), ("y", None)], b"raw")
    claimed = spool.claim(now=1000.0)
    assert claimed.id == first and claimed.attempts == 1
    assert spool.claim(now=1000.0).id == second
    assert spool.claim(now=1000.0) is None
    # A worker that died holding the lease: the mail is taken up again later.
    again = spool.claim(now=1000.0 + 61)
    assert again.id == first and again.attempts == 2


def test_claim_keeps_ticket_order(spool_backend):
    spool = spool_backend
    a1, a2, b1 = spool.add("s", [("x", "ticket:1"), ("x", "ticket:1"), ("y", "ticket:2")],
                           b"raw")
    assert spool.claim().id == a1
    # a2 must wait while a1 is leased; ticket 2 goes on.
    assert spool.claim().id == b1
    assert spool.claim() is None
    spool.defer(a1, "RedmineUnavailable", until=time.time() + 3600)
    assert spool.claim() is None              # a1 waits for its retry: so does a2
    spool.retry(a1)
    assert spool.claim().id == a1
    spool.finish(a1, {"kind": "applied"})
    assert spool.claim().id == a2


def test_finish_defer_bury(spool_backend):
    spool = spool_backend
    a, b, c = spool.add("s", [("a", None), ("b", None), ("c", None)], b"raw")
    for _ in range(3):
        spool.claim()
    spool.finish(a, {"kind": "applied"})
    spool.defer(b, "RedmineUnavailable: down", until=time.time() + 3600)
    spool.bury(c, "RedmineRejected: Subject cannot be blank")
    assert spool.get(a).outcome == {"kind": "applied"}
    assert spool.get(b).state == "queued" and spool.get(b).last_error.endswith("down")
    assert spool.claim() is None   # b is not due for an hour
    assert spool.get(c).state == "dead"
    assert spool.counts() == {"done": 1, "queued": 1, "dead": 1}
    assert spool.retry() == 2 and spool.counts() == {"done": 1, "queued": 2}
    assert spool.drop(a) == 0 and spool.drop(c) == 1


def test_processed_is_unique_per_mail_and_route(spool_backend):
    spool = spool_backend
    assert spool.seen("m@x", "ticket:1") is None
    assert spool.remember("m@x", "ticket:1", {"kind": "applied", "ticket": 1, "journal_id": 9})
    assert not spool.remember("m@x", "ticket:1", {"kind": "applied", "ticket": 1})
    assert spool.remember("m@x", "ticket:2", {"kind": "applied", "ticket": 2})
    assert spool.seen("m@x", "ticket:1") == {"kind": "applied", "ticket": 1, "journal_id": 9}


def test_a_spool_from_the_first_release_is_upgraded_in_place(tmp_path):
    old = sqlite3.connect(tmp_path / "s.db")
    old.executescript("""CREATE TABLE messages (id INTEGER PRIMARY KEY, received_at REAL NOT NULL,
        mail_from TEXT NOT NULL, rcpt TEXT NOT NULL, raw BLOB NOT NULL,
        state TEXT NOT NULL DEFAULT 'queued', attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL DEFAULT 0, lease_until REAL NOT NULL DEFAULT 0,
        last_error TEXT, outcome TEXT, finished_at REAL);
        INSERT INTO messages (received_at, mail_from, rcpt, raw) VALUES (1, 'a', 'b', x'00');""")
    old.commit()
    old.close()
    spool = SqliteSpool(tmp_path / "s.db")
    waiting = spool.claim(now=10.0)
    assert (waiting.rcpt, waiting.raw, waiting.order_key) == ("b", b"\x00", None)


def test_group_commit_many_mails_per_commit_each_returns_after_its_own(tmp_path):
    import threading

    class Counting(SqliteSpool):
        commits: list[int] = []

        def add_many(self, mails):
            self.commits.append(len(mails))
            return super().add_many(mails)

    spool = Counting(tmp_path / "s.db")
    results, start = [], threading.Barrier(20)

    def deliver(n):
        start.wait()
        ids = spool.add("s", [(f"ticket{n}@example.org", f"ticket:{n}")], b"raw")
        # Back from add(): the row is committed, visible to another connection.
        other = sqlite3.connect(tmp_path / "s.db")
        assert other.execute("SELECT rcpt FROM messages WHERE id=?", ids).fetchone() == \
            (f"ticket{n}@example.org",)
        results.append(ids[0])

    threads = [threading.Thread(target=deliver, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == list(range(1, 21))
    assert sum(Counting.commits) == 20 and len(Counting.commits) < 20   # shared commits


def test_a_failed_group_commit_fails_every_mail_in_it(tmp_path):
    spool = SqliteSpool(tmp_path / "s.db")
    spool.close()
    try:
        spool.add("s", [("x", None)], b"raw")
        raised = False
    except Exception:
        raised = True
    assert raised       # never a silent "accepted"


def test_the_mail_is_stored_once_for_all_its_recipients_and_read_back_whole(tmp_path):
    import os

    spool = SqliteSpool(tmp_path / "s.db")
    raw = os.urandom(3 * 1024 * 1024 + 17)          # more than one blob chunk
    first, second = spool.add("s", [("ticket1@example.org", "ticket:1"),
                                    ("site-a@example.org", None)], raw)
    db = sqlite3.connect(tmp_path / "s.db")
    assert db.execute("SELECT count(*), sum(length(raw)) FROM bodies").fetchone() == \
        (1, len(raw))
    assert spool.claim(now=1.0).raw == raw
    assert spool.get(second).raw == raw and [m.raw for m in spool.mails()] == [raw, raw]
    spool.drop(second)
    assert db.execute("SELECT count(*) FROM bodies").fetchone() == (1,)   # still used
    spool.retry(first)
    spool.drop(first)
    assert db.execute("SELECT count(*) FROM bodies").fetchone() == (0,)


def test_a_small_mail_is_kept_in_its_rows_a_bigger_one_once_in_bodies(tmp_path):
    spool = SqliteSpool(tmp_path / "s.db")
    small = b"Subject: small\r\n\r\n" + b"x" * 1000
    # Its copies, one a recipient, would pass the bound: one copy in bodies.
    shared = b"Subject: shared\r\n\r\n" + b"y" * (INLINE_BELOW // 2)
    [alone] = spool.add("s", [("site-a@example.org", None)], small)
    both = spool.add("s", [("ticket1@example.org", "ticket:1"), ("site-b@example.org", None)],
                     shared)
    db = sqlite3.connect(tmp_path / "s.db")
    assert db.execute("SELECT length(raw), body_id FROM messages WHERE id=?",
                      (alone,)).fetchone() == (len(small), None)
    assert db.execute("SELECT count(*), sum(length(raw)) FROM bodies").fetchone() == \
        (1, len(shared))
    assert [spool.get(i).raw for i in (alone, *both)] == [small, shared, shared]
    assert [m.raw for m in spool.mails()] == [small, shared, shared]


def test_a_second_process_never_takes_the_wal_from_under_this_one(tmp_path):
    """open_durable runs several times in one process (spool, Discord queue, notices);
    it must not open and close a descriptor of the file: that drops every POSIX lock the
    process's SQLite connections hold, and a `mailgate pipe` exiting beside `serve` then
    checkpointed and deleted the WAL under them (found by tests/test_deployment.py)."""
    import subprocess
    import sys

    from mailgate.store.sqlite import open_durable

    path = tmp_path / "spool.db"
    spool = SqliteSpool(path)
    spool.add("a@example.org", [("x", None)], b"Subject: first\r\n\r\nx")
    open_durable(path)                                     # the next store in this process
    child = ("import sys; from mailgate.store.spool import SqliteSpool;"
             "SqliteSpool(sys.argv[1]).add('b@example.org', [('y', None)], b'Subject: 2\\r\\n\\r\\ny')")
    subprocess.run([sys.executable, "-c", child, str(path)], check=True)
    spool.add("c@example.org", [("z", None)], b"Subject: third\r\n\r\nz")
    assert (tmp_path / "spool.db-wal").exists()            # still ours: nobody deleted it
    fresh = sqlite3.connect(path)
    assert fresh.execute("SELECT count(*) FROM messages").fetchone()[0] == 3
