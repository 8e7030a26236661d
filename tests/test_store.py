"""Every part of the store on both backends: Discord's queue and thread registry, the
notice outbox and its once-a-day record, the rate buckets, retention; and the
versioned migrations that open a spool written by the previous layout in place."""

from __future__ import annotations

import sqlite3
import threading
import time
from types import SimpleNamespace

import psycopg
import pytest

from mailgate.intake.ratelimit import Limit, StoreRateLimiter
from mailgate.store import Location, open_spool
from mailgate.store import postgres_schema, sqlite_schema
from mailgate.store.connect import connect
from mailgate.store.discord import PostQueue
from mailgate.store.discord_reads import ThreadReads
from mailgate.store.migrations import migrate, version
from mailgate.store.notices import NoticeStore, utc_day
from mailgate.store.ratebuckets import RateBuckets
from mailgate.store.spool import INLINE_BELOW, SqliteSpool
from mailgate.store.watch import WatchStore

T0 = 1_795_000_000.0            # 2026-11-18, mid-morning UTC
DAY = 86400.0


@pytest.fixture(params=["sqlite", "postgres"])
def where(request, tmp_path) -> str:
    """The store's location on each backend: a SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "postgres":
        return request.getfixturevalue("pg_url")
    return str(tmp_path / "spool.db")


@pytest.fixture
def opened():
    """Open parts of the store, closed after the test."""
    parts = []

    def open_(part):
        parts.append(part)
        return part

    yield open_
    for part in parts:
        part.close()


def post(text: str = "hello", name: str = "#1 Printer"):
    return SimpleNamespace(content=text, thread_name=name)


def posted(message_id: str, channel_id: str):
    return SimpleNamespace(message_id=message_id, channel_id=channel_id)


# ---------------------------------------------------------------- Discord


def test_posts_are_queued_once_and_go_out_in_ticket_order(where, opened):
    queue = opened(PostQueue(where))
    assert queue.add("<m1>", "site-a", 1, post("first"), T0)
    assert not queue.add("<m1>", "site-a", 1, post("again"), T0)      # same mail, same channel
    assert queue.add("<m2>", "site-a", 1, post("second"), T0)
    assert queue.add("<m3>", "site-a", 2, post("other ticket"), T0)
    first = queue.claim(T0, lease=60)
    assert (first.mail_key, first.content, first.failures) == ("<m1>", "first", 0)
    # Ticket 1's next post waits for the first; ticket 2 does not.
    assert queue.claim(T0, lease=60).mail_key == "<m3>"
    assert queue.claim(T0, lease=60) is None
    queue.defer(first, "DiscordUnavailable", until=T0 + 30, failed=True)
    assert queue.claim(T0 + 1, lease=60) is None                      # still in ticket order
    assert queue.next_due() == T0 + 30
    again = queue.claim(T0 + 30, lease=60)
    assert (again.id, again.failures) == (first.id, 1)
    queue.bury(again, "DiscordRejected: 400", T0 + 30)
    assert queue.claim(T0 + 30, lease=60).mail_key == "<m2>"         # the next one moves up
    assert queue.channel_of(1) == "site-a" and queue.channel_of(9) is None
    assert queue.counts() == {"queued": 2, "sent": 0, "dead": 1, "threads": 0,
                              "threads_unannounced": 0}


def test_a_leased_post_is_due_when_its_lease_ends(where, opened):
    queue = opened(PostQueue(where))
    queue.add("<m1>", "site-a", 1, post(), T0)
    assert queue.claim(T0, lease=60) is not None          # ... and its process died
    assert queue.next_due() == T0 + 60                    # not a busy loop meanwhile
    assert queue.claim(T0 + 59, lease=60) is None
    assert queue.claim(T0 + 60, lease=60) is not None


def test_the_thread_registry_and_its_redmine_announcement(where, opened):
    queue = opened(PostQueue(where))
    other_host = opened(PostQueue(where))
    queue.add("<m1>", "site-a", 7, post(), T0)
    first = queue.claim(T0, lease=60)
    queue.sent(first, posted("msg-1", "thread-7"), T0, new_thread=True, announced=False)
    assert other_host.thread("site-a", 7) == "thread-7"
    assert queue.counts()["threads_unannounced"] == 1

    pending = queue.due_thread(T0, lease=60)
    assert (pending.ticket, pending.thread_id) == (7, "thread-7")
    # Leased: another host does not write Redmine's fields a second time.
    assert other_host.due_thread(T0 + 1, lease=60) is None
    queue.announced(pending, 0, "RedmineUnavailable", until=T0 + 30)
    retried = other_host.due_thread(T0 + 30, lease=60)
    assert retried.failures == 1
    other_host.announced(retried)
    assert queue.due_thread(T0 + 999, lease=60) is None
    assert queue.counts() == {"queued": 0, "sent": 1, "dead": 0, "threads": 1,
                              "threads_unannounced": 0}


def test_a_deleted_thread_is_forgotten_and_replaced(where, opened):
    queue = opened(PostQueue(where))
    queue.add_thread("site-a", 3, "old", T0, announced=True)
    queue.forget_thread("site-a", 3, "someone-else's")      # not that thread: kept
    assert queue.thread("site-a", 3) == "old"
    queue.forget_thread("site-a", 3, "old")
    assert queue.thread("site-a", 3) is None
    queue.add_thread("site-a", 3, "new", T0, announced=False)
    queue.add_thread("site-a", 3, "newer", T0 + 1, announced=False)     # replaces
    assert queue.thread("site-a", 3) == "newer"
    assert queue.due_thread(T0 + 1, lease=60).thread_id == "newer"


# ---------------------------------------------------------------- notices


def notice(to: str = "Owner@example.org", kind: str = "command-refused"):
    return SimpleNamespace(to=to, reason_kind=kind)


def test_one_notice_per_recipient_kind_and_day(where, opened):
    store = opened(NoticeStore(where))
    other_host = opened(NoticeStore(where))
    assert store.add(notice(), b"mail 1", T0)
    assert not other_host.add(notice(to="owner@EXAMPLE.org"), b"mail 2", T0 + 60)
    assert other_host.add(notice(kind="rejected"), b"mail 3", T0 + 60)
    assert store.add(notice(), b"mail 4", T0 + DAY)                    # the next UTC day
    assert store.counts() == {"queued": 3}
    store.forget_before(utc_day(T0 + DAY))
    assert store.add(notice(), b"mail 5", T0 + 2)                      # that day forgotten


def test_the_outbox_claims_under_a_lease_and_records_the_end(where, opened):
    store = opened(NoticeStore(where))
    other_host = opened(NoticeStore(where))
    store.add(notice(), b"\x00bytes", T0)
    store.add(notice(kind="rejected"), b"second", T0)
    first = store.claim(T0, lease=60)
    assert (first.recipient, first.message, first.failures) == ("Owner@example.org",
                                                                b"\x00bytes", 0)
    second = other_host.claim(T0, lease=60)
    assert second.id != first.id and other_host.claim(T0, lease=60) is None
    store.defer(first, "SMTPServerDisconnected", T0 + 30)
    assert store.next_due() == T0 + 30
    assert store.claim(T0 + 30, lease=60).failures == 1
    store.sent(first, T0 + 30)
    other_host.bury(second, "550 no such user", T0 + 31)
    assert store.counts() == {"sent": 1, "dead": 1} and store.next_due() is None


# ---------------------------------------------------------------- rate buckets


class Clock:
    def __init__(self, now: float = T0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_rate_buckets_are_shared_by_everyone_on_the_store(where, opened):
    clock = Clock()
    serve = opened(StoreRateLimiter(where, 3, 60, clock=clock))
    pipe = opened(StoreRateLimiter(where, 3, 60, clock=clock))
    assert [serve.allow("flood@x"), pipe.allow("flood@x"), serve.allow("flood@x")] == [True] * 3
    assert not pipe.allow("flood@x") and not serve.allow("flood@x")    # refused: none taken
    clock.now += 20                                                    # one token back
    assert pipe.allow("flood@x") and not serve.allow("flood@x")
    clock.now += 61
    assert serve.allow("someone@x")
    assert len(serve) == 1                                             # the full one is gone


def test_rate_buckets_take_turns_across_connections(where, opened):
    """Many connections at once on one bucket: exactly ``mails`` get through."""
    import threading

    limit = Limit(10, 600)
    buckets = [opened(RateBuckets(where)) for _ in range(4)]
    results, start = [], threading.Barrier(4)

    def flood(bucket):
        start.wait()
        results.extend(bucket.take("flood@x", T0, limit) for _ in range(5))

    threads = [threading.Thread(target=flood, args=(b,)) for b in buckets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 10 + [True] * 10


# ---------------------------------------------------------------- retention


def test_retention_purges_what_finished_and_keeps_dead_mail(where, opened):
    spool = opened(open_spool(where))
    queue = opened(PostQueue(where))
    notices = opened(NoticeStore(where))
    watch = opened(WatchStore(where))
    reads = opened(ThreadReads(where))
    now = time.time()
    old, recent = now - 40 * DAY, now - 5 * DAY
    old_done, old_dead, new_done, waiting = spool.add(
        "a@x", [("w", None), ("x", None), ("y", None), ("z", None)], b"the mail")
    for _ in range(4):
        spool.claim(now=now)
    spool.finish(old_done, {"kind": "applied"})
    spool.bury(old_dead, "RedmineRejected")
    spool.finish(new_done, {"kind": "applied"})
    spool.defer(waiting, "RedmineUnavailable", until=0)
    _backdate(spool, [old_done, old_dead], 40 * DAY)

    for n, (end, when) in enumerate([("sent", old), ("sent", recent), ("dead", old)]):
        queue.add(f"<m{n}>", "site-a", n, post(), old)
        item = queue.claim(old, lease=60)
        if end == "sent":
            queue.sent(item, posted(f"msg{n}", f"thread{n}"), when, new_thread=True)
        else:
            queue.bury(item, "DiscordRejected", when)
    for n, end in enumerate(("sent", "dead", "queued", "sent")):
        notices.add(notice(kind=f"k{n}"), b"m", old)
        item = notices.claim(old, lease=60)
        if end == "sent":
            notices.sent(item, old if n == 0 else recent)
        elif end == "dead":
            notices.bury(item, "550", old)
        else:
            notices.defer(item, "421", old)
    for journal, end, when in ((1, "done", old), (2, "done", recent), (3, "dead", old)):
        watch.add(journal, 7, {"journal": journal}, old)
        watch.claim(old, lease=60)
        (watch.done if end == "done" else watch.bury)(
            journal, {"told": []} if end == "done" else "crash", when)
    for message, end, when in ((11, "done", old), (12, "done", recent), (13, "dead", old)):
        reads.add_page("thread", 7, [{"id": str(message)}], message, old)
        reads.claim(old, lease=60)
        (reads.done if end == "done" else reads.bury)(
            message, {"kind": "applied"} if end == "done" else "crash", when)

    assert spool.purge(now - 30 * DAY) == {"mails": 1, "bodies": 0, "posts": 1, "notices": 2,
                                           "journals": 1, "discord_messages": 1}
    assert spool.get(old_done) is None
    assert spool.counts() == {"dead": 1, "done": 1, "queued": 1}
    assert spool.get(waiting).raw == b"the mail"         # its body is still pointed at
    assert (queue.counts()["sent"], queue.counts()["dead"]) == (1, 1)
    assert queue.thread("site-a", 0) == "thread0"         # a ticket keeps its thread
    assert notices.counts() == {"queued": 1, "sent": 1}
    assert watch.counts() == {"queued": 0, "done": 1, "dead": 1}   # dead is kept, as mail
    assert not watch.add(2, 7, {}, now)                   # a journal told is never found again
    assert reads.counts()["done"] == reads.counts()["dead"] == 1
    assert spool.purge(now - 30 * DAY) == {"mails": 0, "bodies": 0, "posts": 0, "notices": 0,
                                           "journals": 0, "discord_messages": 0}


def test_retention_deletes_a_body_with_the_last_row_that_uses_it(tmp_path, opened):
    spool = opened(SqliteSpool(tmp_path / "spool.db"))
    # Big enough for the bodies table (a small mail is kept in its rows).
    mine, shared = b"mine" * INLINE_BELOW, b"shared" * INLINE_BELOW
    mine, shared_a, shared_b = (*spool.add("a@x", [("x", None)], mine),
                                *spool.add("b@x", [("y", None), ("z", None)], shared))
    for mail in (mine, shared_a, shared_b):
        spool.claim(now=time.time())
        spool.finish(mail, {"kind": "applied"})
    _backdate(spool, [mine, shared_a], 40 * DAY)
    assert spool.purge(time.time() - 30 * DAY) == {"mails": 2, "bodies": 1, "posts": 0,
                                                   "notices": 0, "journals": 0,
                                                   "discord_messages": 0}
    db = sqlite3.connect(tmp_path / "spool.db")
    assert db.execute("SELECT raw FROM bodies").fetchall() == [(shared,)]
    assert spool.get(shared_b).raw == shared


def test_retention_goes_in_batches(where, opened):
    from mailgate.store import retention

    spool = opened(open_spool(where))
    ids = spool.add("a@x", [(f"r{n}", None) for n in range(7)], b"m")
    for mail in ids:
        spool.claim(now=time.time())
        spool.finish(mail, {"kind": "applied"})
    assert retention.purge(spool.db, time.time() + 1, batch=3)["mails"] == 7
    assert spool.counts() == {}


def _backdate(spool, ids, seconds):
    sql = ("UPDATE messages SET finished_at = finished_at - ? WHERE id = ?"
           if spool.db.backend == "sqlite" else
           "UPDATE messages SET finished_at = finished_at - %s WHERE id = %s")
    for mail in ids:
        spool.db.change(sql, (seconds, mail))


def test_the_sweep_purges_after_keep_done_days(fake_redmine, tmp_path):
    from datetime import datetime, timedelta, timezone

    from mailgate.config import load_config
    from mailgate.gateway import build_gateway
    from mailgate.ops.sweep import sweep
    from support.configs import write_config

    config = write_config(tmp_path / "m.yaml", fake_redmine.url, fake_redmine.admin_key,
                          spool={"keep_done_days": 2})
    gateway = build_gateway(load_config(config, environ={}))
    assert load_config(config, environ={"MAILGATE_SPOOL_KEEP_DONE_DAYS": "9"}).keep_done_days \
        == 9
    try:
        done, dead = gateway.spool.add("a@x", [("x", None), ("y", None)], b"m")
        for mail in (done, dead):
            gateway.spool.claim()
        gateway.spool.finish(done, {"kind": "applied"})
        gateway.spool.bury(dead, "crash")
        now = datetime.now(timezone.utc)
        sweep(gateway, now=now + timedelta(days=1), dry_run=True)
        sweep(gateway, now=now + timedelta(days=1))
        assert gateway.spool.counts() == {"done": 1, "dead": 1}       # not 2 days yet
        sweep(gateway, now=now + timedelta(days=2, seconds=5))
        assert gateway.spool.counts() == {"dead": 1}
    finally:
        gateway.spool.close()


# ---------------------------------------------------------------- migrations

#: What the previous layout created in a spool file that had been upgraded from the
#: first release: the later columns of ``messages`` appended by ALTER, in that order,
#: and each part's tables as its own module created them.
PREVIOUS_SQLITE = """
CREATE TABLE messages (id INTEGER PRIMARY KEY, received_at REAL NOT NULL,
    mail_from TEXT NOT NULL, rcpt TEXT NOT NULL, raw BLOB NOT NULL,
    state TEXT NOT NULL DEFAULT 'queued', attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0, lease_until REAL NOT NULL DEFAULT 0,
    last_error TEXT, outcome TEXT, finished_at REAL);
ALTER TABLE messages ADD COLUMN order_key TEXT;
ALTER TABLE messages ADD COLUMN body_id INTEGER;
ALTER TABLE messages ADD COLUMN claimed_by TEXT;
CREATE TABLE bodies (id INTEGER PRIMARY KEY, raw BLOB NOT NULL);
CREATE TABLE processed (mail_key TEXT NOT NULL, route_key TEXT NOT NULL, ticket INTEGER,
    journal_id INTEGER, outcome TEXT NOT NULL, created_at REAL NOT NULL,
    PRIMARY KEY (mail_key, route_key));
CREATE INDEX messages_due ON messages (state, next_attempt_at);
CREATE INDEX messages_order ON messages (order_key, state, id);
CREATE TABLE discord_posts (id INTEGER PRIMARY KEY, mail_key TEXT NOT NULL,
    channel TEXT NOT NULL, ticket INTEGER NOT NULL, content TEXT NOT NULL,
    thread_name TEXT NOT NULL, state TEXT NOT NULL DEFAULT 'queued', created_at REAL NOT NULL,
    failures INTEGER NOT NULL DEFAULT 0, next_attempt_at REAL NOT NULL DEFAULT 0,
    lease_until REAL NOT NULL DEFAULT 0, last_error TEXT, finished_at REAL, message_id TEXT,
    thread_id TEXT, UNIQUE (mail_key, channel));
CREATE TABLE discord_threads (channel TEXT NOT NULL, ticket INTEGER NOT NULL,
    thread_id TEXT NOT NULL, created_at REAL NOT NULL, announced INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0, next_attempt_at REAL NOT NULL DEFAULT 0,
    last_error TEXT, PRIMARY KEY (channel, ticket));
CREATE TABLE notices (sender TEXT NOT NULL, reason_kind TEXT NOT NULL, day TEXT NOT NULL,
    sent_at REAL NOT NULL, PRIMARY KEY (sender, reason_kind, day));
CREATE TABLE notice_outbox (id INTEGER PRIMARY KEY, recipient TEXT NOT NULL,
    reason_kind TEXT NOT NULL, message BLOB NOT NULL, created_at REAL NOT NULL,
    state TEXT NOT NULL DEFAULT 'queued', failures INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0, lease_until REAL NOT NULL DEFAULT 0,
    last_error TEXT, finished_at REAL);
CREATE TABLE rate_buckets (key TEXT PRIMARY KEY, tokens REAL NOT NULL,
    updated_at REAL NOT NULL);
-- What was waiting: a mail from before the bodies table (its bytes inline), one with
-- its body, one done; a thread Redmine has not heard of; a post; a notice.
INSERT INTO messages (received_at, mail_from, rcpt, raw, order_key)
    VALUES (1, 'a@x', 'ticket1@x', x'00ff', 'ticket:1');
INSERT INTO bodies (id, raw) VALUES (1, CAST('second mail' AS BLOB));
INSERT INTO messages (received_at, mail_from, rcpt, raw, order_key, body_id)
    VALUES (2, 'b@x', 'ticket2@x', x'', 'ticket:2', 1);
INSERT INTO messages (received_at, mail_from, rcpt, raw, state, finished_at)
    VALUES (0, 'c@x', 'site-a@x', x'01', 'done', 0);
INSERT INTO discord_threads (channel, ticket, thread_id, created_at) VALUES ('site-a', 1, 't1', 1);
INSERT INTO discord_posts (mail_key, channel, ticket, content, thread_name, created_at)
    VALUES ('<m>', 'site-a', 1, 'hello', '#1 x', 1);
INSERT INTO notices VALUES ('owner@x', 'rejected', '2026-11-18', 1);
INSERT INTO notice_outbox (recipient, reason_kind, message, created_at)
    VALUES ('owner@x', 'rejected', x'6d', 1);
"""


def test_a_spool_of_the_previous_layout_opens_with_its_mail_and_reaches_the_latest(tmp_path,
                                                                                  opened):
    path = tmp_path / "spool.db"
    old = sqlite3.connect(path)
    old.executescript(PREVIOUS_SQLITE)
    old.close()

    spool = opened(SqliteSpool(path))
    assert version(spool.db, sqlite_schema.SCHEMA) == sqlite_schema.SCHEMA.latest
    first, second = spool.claim(now=10.0), spool.claim(now=10.0)
    assert (first.rcpt, first.raw, first.order_key) == ("ticket1@x", b"\x00\xff", "ticket:1")
    assert (second.rcpt, second.raw) == ("ticket2@x", b"second mail")
    queue = opened(PostQueue(path))
    assert queue.claim(10.0, lease=60).content == "hello"
    assert queue.due_thread(10.0, lease=60).thread_id == "t1"     # the new lease column
    notices = opened(NoticeStore(path))
    assert notices.claim(10.0, lease=60).message == b"m"
    assert not notices.add(notice("owner@x", "rejected"), b"x", T0)  # same day: still told
    assert spool.purge(5.0)["mails"] == 1                          # the new indexes serve

    # Opening again migrates nothing.
    assert migrate(connect(path), sqlite_schema.SCHEMA) == []
    db = sqlite3.connect(path)
    assert [v for v, in db.execute("SELECT version FROM schema_version")] == \
        [m.version for m in sqlite_schema.MIGRATIONS]


def test_a_new_file_and_an_upgraded_one_have_the_same_tables(tmp_path):
    fresh = tmp_path / "fresh.db"
    SqliteSpool(fresh).close()
    upgraded = tmp_path / "old.db"
    old = sqlite3.connect(upgraded)
    old.executescript(PREVIOUS_SQLITE)
    old.close()
    SqliteSpool(upgraded).close()
    assert _sqlite_columns(fresh) == _sqlite_columns(upgraded)


def _sqlite_columns(path) -> dict[str, set[str]]:
    db = sqlite3.connect(path)
    tables = [t for t, in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    return {t: {row[1] for row in db.execute(f"PRAGMA table_info({t})")} for t in tables}


#: The PostgreSQL spool as the previous layout created it (only the spool lived there).
PREVIOUS_POSTGRES = [
    """CREATE TABLE IF NOT EXISTS messages (id BIGSERIAL PRIMARY KEY,
        received_at DOUBLE PRECISION NOT NULL, mail_from TEXT NOT NULL, rcpt TEXT NOT NULL,
        raw BYTEA NOT NULL, order_key TEXT, body_id BIGINT, state TEXT NOT NULL DEFAULT 'queued',
        attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at DOUBLE PRECISION NOT NULL DEFAULT 0,
        lease_until DOUBLE PRECISION NOT NULL DEFAULT 0, claimed_by TEXT, last_error TEXT,
        outcome TEXT, finished_at DOUBLE PRECISION)""",
    "CREATE INDEX IF NOT EXISTS messages_due ON messages (state, next_attempt_at)",
    "CREATE INDEX IF NOT EXISTS messages_order ON messages (order_key, state, id)",
    """CREATE TABLE IF NOT EXISTS processed (mail_key TEXT NOT NULL, route_key TEXT NOT NULL,
        ticket INTEGER, journal_id INTEGER, outcome TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (mail_key, route_key))""",
    "INSERT INTO messages (received_at, mail_from, rcpt, raw, order_key)"
    " VALUES (1, 'a@x', 'ticket1@x', '\\x00ff'::bytea, 'ticket:1')",
    "INSERT INTO processed VALUES ('<m>', 'ticket:1', 1, 5, '{\"kind\": \"applied\"}', 1)",
]


def test_a_postgresql_spool_of_the_previous_layout_is_migrated_in_place(pg_url, opened):
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for statement in PREVIOUS_POSTGRES:
            conn.execute(statement)
    spool = opened(open_spool(pg_url))
    assert version(spool.db, postgres_schema.SCHEMA) == postgres_schema.SCHEMA.latest
    mail = spool.claim(now=10.0)
    assert (mail.rcpt, mail.raw) == ("ticket1@x", b"\x00\xff")
    assert spool.seen("<m>", "ticket:1") == {"kind": "applied"}
    assert opened(PostQueue(pg_url)).counts()["queued"] == 0           # the new tables
    assert migrate(connect(pg_url), postgres_schema.SCHEMA) == []


def test_hosts_starting_at_once_migrate_once(pg_url):
    import threading

    results, start = [], threading.Barrier(4)

    def open_():
        start.wait()
        db = connect(pg_url)
        results.append(version(db, postgres_schema.SCHEMA))
        db.close()

    threads = [threading.Thread(target=open_) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [postgres_schema.SCHEMA.latest] * 4
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT count(*) FROM schema_version").fetchone()[0] == \
            postgres_schema.SCHEMA.latest


def test_migrations_are_numbered_in_order():
    from mailgate.store.migrations import Migration, check_order

    for schema in (sqlite_schema.SCHEMA, postgres_schema.SCHEMA):
        assert [m.version for m in schema.migrations] == \
            list(range(1, schema.latest + 1))
    with pytest.raises(ValueError):
        check_order([Migration(1, "a", []), Migration(3, "b", [])])


def test_a_location_is_a_path_or_a_postgresql_url_and_never_shows_a_password():
    assert Location.of("var/spool.db").path is not None
    url = "postgresql://mailgate:secret@db.example.org:5433/mailgate?sslmode=require"
    assert Location.of(url).url == url and Location.configured("x.db", url).url == url
    assert str(Location.of(url)) == "postgresql://mailgate@db.example.org:5433/mailgate"


# ---------------------------------------------------------------- the Redmine watcher


def test_the_watchers_poll_is_leased_and_its_watermark_moves_only_when_it_went_through(
        where, opened):
    from mailgate.store.watch import PollState

    first, second = opened(WatchStore(where)), opened(WatchStore(where))
    now = 1000.0
    assert first.claim_poll(now, lease=60) == PollState(None, None, {}, 0)
    # Held: another host neither polls nor forces a poll meanwhile.
    assert second.claim_poll(now, lease=60) is None
    assert second.claim_poll(now, lease=60, force=True) is None
    first.polled("2026-12-04T05:00:00Z", {7: "2026-12-04T04:59:59Z"}, now + 30, now)
    assert second.claim_poll(now + 1, lease=60) is None            # not due yet
    state = second.claim_poll(now + 1, lease=60, force=True)       # the one-shot worker
    assert (state.watermark, state.handled) == ("2026-12-04T05:00:00Z",
                                                {7: "2026-12-04T04:59:59Z"})
    second.poll_failed("RedmineUnavailable: down", now + 100)
    held = first.state()
    assert (held["watermark"], held["started"], held["failures"]) == (
        "2026-12-04T05:00:00Z", "2026-12-04T05:00:00Z", 1)
    assert first.next_due() == now + 100
    first.claim_poll(now + 100, lease=60)
    first.polled("2026-12-04T06:00:00Z", {}, now + 130, now + 100)
    # The first watermark stays where history ends.
    assert (first.state()["started"], first.state()["failures"]) == ("2026-12-04T05:00:00Z", 0)


def test_each_journal_is_queued_once_and_claimed_by_one_host(where, opened):
    hosts = [opened(WatchStore(where)) for _ in range(4)]
    now = time.time()
    found = [host.add(n, n % 3, {"n": n}, now) for n in range(20) for host in hosts]
    assert found.count(True) == 20
    claimed: list[int] = []
    lock = threading.Lock()

    def work(host):
        while (item := host.claim(time.time(), lease=60)) is not None:
            with lock:
                claimed.append(item.id)
            host.done(item.id, {"told": item.snapshot["n"]}, time.time())

    threads = [threading.Thread(target=work, args=(host,)) for host in hosts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claimed) == list(range(20))
    assert hosts[0].counts() == {"queued": 0, "done": 20, "dead": 0}
    assert hosts[0].journal(7)["outcome"] == {"told": 7}
