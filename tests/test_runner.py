"""The one queue runner (mailgate.runner): what it does with each kind of failure, that
it outlives its database, renews leases, and shows in /healthz when it is not running.

The queue here is the real SQLite spool wherever a database is part of the
story; a database that breaks is broken for real (an exclusive lock held by
another connection).
"""

from __future__ import annotations

import logging
import smtplib
import sqlite3
import threading
import time

import requests

from mailgate.errors import BadMessage, RedmineUnavailable
from mailgate.outcome import Outcome
from mailgate.runner import Backoff, Disposition, Runner
from mailgate.store.spool import SqliteSpool
from mailgate.worker import SpoolQueue
from support.configs import write_config
from tests.helpers import fixture
from tests.load import wait_until
from tests.servers import RunningGateway


APPLIED = Outcome("applied")


def spool_with(tmp_path, count: int = 1) -> SqliteSpool:
    spool = SqliteSpool(tmp_path / "spool.db", lease_seconds=60)
    for n in range(count):
        spool.add("o@example.org", [(f"ticket{n + 1}@example.org", None)], b"Subject: x\r\n\r\nx")
    return spool


def runner_for(spool, work, **options) -> Runner:
    options.setdefault("backoff", Backoff(first_delay=30, max_delay=60, max_age=3600))
    options.setdefault("lease", 60.0)
    return Runner(SpoolQueue(spool), work, **options)


def test_temporary_errors_are_retried_later_and_permanent_ones_dead_lettered(tmp_path):
    spool = spool_with(tmp_path, 2)
    errors = iter([RedmineUnavailable("down"), BadMessage("unreadable")])

    def work(mail):
        raise next(errors)

    runner = runner_for(spool, work)
    first, second = runner.run_once(), runner.run_once()
    assert isinstance(first.error, RedmineUnavailable) and isinstance(second.error, BadMessage)
    waiting, dead = spool.get(first.item.id), spool.get(second.item.id)
    assert waiting.state == "queued" and waiting.next_attempt_at >= time.time() + 14
    assert dead.state == "dead" and dead.last_error == "BadMessage: unreadable"
    assert runner.run_once() is None                     # nothing else due
    assert (runner.counts["retries"], runner.counts["dead"]) == (1, 1)


def test_a_crash_is_one_item_s_dead_letter_with_its_traceback(tmp_path, caplog):
    spool = spool_with(tmp_path, 2)
    seen = []

    def work(mail):
        seen.append(mail.id)
        if len(seen) == 1:
            raise KeyError("a bug")
        return APPLIED

    runner = Runner(_Recording(spool), work, backoff=Backoff(), lease=60)
    with caplog.at_level(logging.ERROR):
        assert runner.drain(max_wait=0) and len(seen) == 2
    assert spool.get(seen[0]).last_error.startswith("crash: KeyError")
    assert "Traceback" in caplog.text
    # Counted apart from other dead letters (/metrics: run_crashes).
    assert (runner.counts["crashes"], runner.counts["dead"]) == (1, 1)


def test_drain_works_in_as_many_threads_as_the_runner_runs(tmp_path):
    """The one-shot drain (``mailgate worker``, ``fetch``) has ``concurrency`` mails in
    hand at once, as ``serve`` does: two tickets' mail meet at the barrier."""
    spool = spool_with(tmp_path, 4)
    together = threading.Barrier(2, timeout=5)
    seen = []

    def work(mail):
        if len(seen) < 2:
            seen.append(mail.id)
            together.wait()         # broken (BrokenBarrierError) if only one thread works
        return APPLIED

    handled = runner_for(spool, work, concurrency=2).drain(max_wait=0)
    assert sorted(h.item.id for h in handled if h.error is None) == sorted(
        m.id for m in spool.mails(state=None))
    assert len(handled) == 4 and not together.broken


def test_a_wait_is_not_a_failure_and_can_hold_the_whole_queue(tmp_path):
    spool = spool_with(tmp_path, 2)
    until = time.time() + 0.3

    def classify(exc):
        return Disposition("wait", "rate limited", until=until, hold=True)

    def work(mail):
        raise RuntimeError("429")

    runner = runner_for(spool, work, classify=classify)
    handled = runner.run_once()
    assert spool.get(handled.item.id).attempts == 1 and runner.counts["waits"] == 1
    assert runner.run_once() is None                     # held: the other mail waits too
    time.sleep(0.35)
    assert runner.run_once() is not None


def test_giving_up_after_the_maximum_age(tmp_path):
    spool = spool_with(tmp_path)

    def work(mail):
        raise RedmineUnavailable("down")

    runner = runner_for(spool, work, backoff=Backoff(max_age=0.0))
    handled = runner.run_once()
    assert spool.get(handled.item.id).last_error.startswith("gave up after 1 attempts")


def test_the_lease_is_renewed_while_the_work_is_in_hand(tmp_path):
    spool = spool_with(tmp_path)
    other = SqliteSpool(tmp_path / "spool.db", lease_seconds=60)     # another worker
    taken_by_other = []

    def slow(mail):
        deadline = time.monotonic() + 1.2
        while time.monotonic() < deadline:
            taken_by_other.append(other.claim(lease=0.3))
            time.sleep(0.1)
        return APPLIED

    runner = runner_for(spool, slow, lease=0.3)
    assert runner.run_once().error is None
    # A 0.3 s lease held for 1.2 s of work: never free for the other worker.
    assert taken_by_other and not any(taken_by_other)


def test_the_runner_outlives_a_locked_database_and_health_says_when_it_is_gone(tmp_path,
                                                                              caplog):
    spool = spool_with(tmp_path, 0)
    spool._db.execute("PRAGMA busy_timeout = 50")        # fail fast while locked
    done = []
    runner = runner_for(spool, lambda mail: done.append(mail.id) or APPLIED)
    lock = sqlite3.connect(tmp_path / "spool.db", isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")                      # another process holds the file
    stop = threading.Event()
    with caplog.at_level(logging.ERROR, "mailgate.runner"):
        runner.start(stop, poll=0.05)
        assert wait_until(lambda: runner.counts["loop_errors"] >= 2, 10, 0.02)
        assert runner.alive and runner.health(time.time(), 60) is None
        lock.execute("ROLLBACK")
        spool.add("o@example.org", [("ticket1@example.org", None)], b"Subject: x\r\n\r\nx")
        runner.wake.set()
        assert wait_until(lambda: done, 10, 0.02)
    assert "spool: queue failed" in caplog.text
    stop.set()
    runner.wake.set()
    runner.join(5)
    assert runner.health(time.time(), 60) == "spool runner is not running"


def test_serve_outlives_a_locked_spool_under_every_runner(fake_redmine, fake_discord, tmp_path):
    """Through `serve`: the spool file locked by another process for a while; the spool,
    Discord and notice runners all survive it, /healthz stays ok, and the next mail is
    applied and told to Discord."""
    hook = fake_discord.add_webhook(forum=True)
    config = write_config(tmp_path / "m.yaml", fake_redmine.url, fake_redmine.admin_key,
                          discord={"api_base": fake_discord.api_base,
                                   "channels": {"site-a": hook}, "triage": hook},
                          notify={"relay": "127.0.0.1:9", "from": "mailgate@example.org"})
    with RunningGateway(config, lmtp=False, metrics=True) as server:
        runners = server.gateway.runners()
        assert [r.name for r in runners] == ["spool", "discord", "notices"]
        lock = sqlite3.connect(tmp_path / "spool.db", isolation_level=None, timeout=10)
        lock.execute("BEGIN EXCLUSIVE")
        assert wait_until(lambda: all(r.counts["loop_errors"] for r in runners), 30, 0.1)
        lock.execute("ROLLBACK")
        lock.close()
        with smtplib.SMTP("127.0.0.1", server.smtp_port) as smtp:
            smtp.sendmail("support@example.org", ["site-a@example.org"],
                          fixture("site-a-new-ticket.eml"))
        assert wait_until(lambda: fake_discord.messages, 30, 0.1)
        assert all(r.alive for r in runners)
        health = requests.get(f"http://127.0.0.1:{server.metrics_port}/healthz", timeout=5)
        assert (health.status_code, health.text) == (200, "ok\n")


class _Recording(SpoolQueue):
    """The spool queue, unchanged: named so the crash test reads as the runner's."""


def test_serve_outlives_lost_postgresql_connections_under_every_runner(
        fake_redmine, fake_discord, pg_url, tmp_path):
    """Through `serve` on PostgreSQL: every connection of the store killed by the server
    (as a failover or a restart does); the three runners log it, reconnect, and the
    next mail is applied and told to Discord."""
    import uuid

    import psycopg

    # Only this gateway's connections are killed: they carry a name of their own.
    name = f"mailgate-test-{uuid.uuid4().hex[:8]}"
    hook = fake_discord.add_webhook(forum=True)
    config = write_config(tmp_path / "m.yaml", fake_redmine.url, fake_redmine.admin_key,
                          spool={"url": f"{pg_url}&application_name={name}"},
                          discord={"api_base": fake_discord.api_base,
                                   "channels": {"site-a": hook}, "triage": hook},
                          notify={"relay": "127.0.0.1:9", "from": "mailgate@example.org"})
    with RunningGateway(config, lmtp=False, metrics=True) as server:
        runners = server.gateway.runners()
        with psycopg.connect(pg_url, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = %s", (name,)).fetchone()[0]
        assert killed >= 3
        assert wait_until(lambda: all(r.counts["loop_errors"] for r in runners), 30, 0.1)
        with smtplib.SMTP("127.0.0.1", server.smtp_port) as smtp:
            smtp.sendmail("owner@example.org", ["site-a@example.org"],
                          fixture("site-a-new-ticket.eml"))
        assert wait_until(lambda: fake_discord.messages, 30, 0.1)
        assert all(r.alive for r in runners)
        health = requests.get(f"http://127.0.0.1:{server.metrics_port}/healthz", timeout=5)
        assert (health.status_code, health.text) == (200, "ok\n")


def test_health_is_never_red_while_the_runner_is_being_started(tmp_path):
    """/healthz asked while serve starts the runners: a thread not yet started is not a
    runner that stopped (it once answered "spool runner is not running" at start-up)."""
    spool = spool_with(tmp_path, 0)
    seen, done = [], threading.Event()

    def ask():
        while not done.is_set():
            seen.append(runner.health(time.time(), 60))

    for _ in range(20):
        runner = runner_for(spool, lambda mail: APPLIED, concurrency=4)
        stop = threading.Event()
        asker = threading.Thread(target=ask)
        done.clear()
        asker.start()
        runner.start(stop, poll=0.05)
        done.set()
        asker.join()
        stop.set()
        runner.wake.set()
        runner.join(5)
    assert "spool runner is not running" not in seen and None in seen
