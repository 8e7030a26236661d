"""Fault tests: nothing lost, nothing twice, under kills, outages, flaky Redmine and two hosts.

Bounded in count and time, loopback only.  Every mail that got a 250 must be
exactly one note; the clients retry every 4xx (as MTAs do), so a mail that got
a 4xx is not lost from their point of view either.
"""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mailgate.config import load_config
from mailgate.gateway import Envelope, build_gateway
from mailgate.clients.redmine import RedmineClient
from support.configs import write_config
from support.processes import ServeProcess, child_env, free_port
from tests.fakes.redmine import Chaos
from tests.load import Load, count_notes, make_mails, wait_until
from tests.servers import RunningGateway

ROOT = Path(__file__).resolve().parent.parent
FAST_RETRY = {"retry_first_delay": 0.2, "retry_max_delay": 2, "lease_seconds": 5}


def open_tickets(client, count: int) -> list[int]:
    return [client.create_issue("site-a", f"fault test {n}", "Load.", as_user="owner")
            for n in range(count)]


def assert_exactly_once(client, tickets, mails):
    counts = count_notes(client, tickets)
    accepted = [m for m in mails if m.accepted]
    missing = [m.body for m in accepted if counts.get(m.body, 0) == 0]
    twice = {text: n for text, n in counts.items() if n > 1}
    assert not missing, f"{len(missing)} accepted mail(s) never became a note: {missing[:3]}"
    assert not twice, f"notes posted more than once: {list(twice.items())[:3]}"
    return counts


def spool_idle(gateway_or_path) -> bool:
    import sqlite3
    db = sqlite3.connect(gateway_or_path)
    return db.execute("SELECT count(*) FROM messages WHERE state='queued'").fetchone()[0] == 0


@pytest.mark.slow
def test_kill_9_three_times_under_load(real_redmine, tmp_path):
    """1. 500 mails from concurrent clients to a real Redmine, the gateway killed -9
    at random moments three times and restarted each time."""
    client = RedmineClient(real_redmine.url, real_redmine.admin_key)
    tickets = open_tickets(client, 20)
    # The default lease: a restarted gateway takes up its dead predecessor's claims
    # at once (issue 12: no ticket stalls for the lease after a kill -9).
    retry = {k: v for k, v in FAST_RETRY.items() if k != "lease_seconds"}
    config = write_config(tmp_path / "m.yaml", real_redmine.url, real_redmine.admin_key,
                          spool={"path": str(tmp_path / "spool.db"), **retry})
    port = free_port()
    mails = make_mails(tickets, 500)
    load = Load(port, mails, clients=6, deadline=600)
    with ServeProcess(config, port, tmp_path / "serve.log") as server:
        sender = threading.Thread(target=load.run)
        sender.start()
        rng = random.Random(7)
        for _ in range(3):
            # Kill at a random moment while mail is flowing, then come back.
            target = sum(m.accepted for m in mails) + rng.randint(40, 120)
            wait_until(lambda: sum(m.accepted for m in mails) >= target
                       or not sender.is_alive(), 120, 0.05)
            server.kill9()
            time.sleep(rng.uniform(0.2, 1.0))
            server.start()
        sender.join()
        assert all(m.accepted for m in mails), load.errors[:3]
        assert wait_until(lambda: spool_idle(tmp_path / "spool.db"), 60, 0.5), \
            "not every acknowledged mail was applied within 60 s of the load's end"
        assert server.stop() == 0
    counts = assert_exactly_once(client, tickets, mails)
    assert len(counts) == 500
    assert_ticket_order(tmp_path / "spool.db", client)


def assert_ticket_order(spool_path, client):
    """Each ticket's mail became notes in the order the gateway accepted it: the notes'
    texts, in Redmine's journal order, follow the spool's order of the mails.  By text,
    not journal id: a note whose read-back was skipped has none (issue 16)."""
    from mailgate.mail.message import parse_mail
    from mailgate.store import open_spool

    spool = open_spool(spool_path)
    accepted: dict[str, list[str]] = {}
    for mail in spool.mails(state="done", limit=100_000):
        if (mail.outcome or {}).get("kind") in ("applied", "status-refused"):
            text = parse_mail(mail.raw).body.strip().split("\n\n")[0]
            accepted.setdefault(mail.order_key, []).append(text)
    spool.close()
    for key, texts in accepted.items():
        journals = client.get_issue(int(key.split(":")[1])).journals
        written = [j.notes.split("\n\n")[0] for j in journals if j.notes]
        assert [t for t in written if t in set(texts)] == texts, \
            f"{key} applied out of arrival order"


@pytest.mark.slow
def test_redmine_stopped_for_30_seconds_mid_load(real_redmine, tmp_path):
    """2. The listener keeps answering 250 while Redmine is down; afterwards every
    note lands, none twice."""
    client = RedmineClient(real_redmine.url, real_redmine.admin_key)
    tickets = open_tickets(client, 5)
    config = write_config(tmp_path / "m.yaml", real_redmine.url, real_redmine.admin_key,
                          spool={"path": str(tmp_path / "spool.db"), **FAST_RETRY})
    port = free_port()
    warmup, mails = make_mails(tickets, 5), make_mails(tickets, 100)
    redmine_local = str(ROOT / "scripts/redmine-local")
    with ServeProcess(config, port, tmp_path / "serve.log") as server:
        Load(port, warmup, clients=1).run()   # the gateway has now seen each ticket exist
        load = Load(port, mails, clients=2, deadline=300, pause=0.6)
        sender = threading.Thread(target=load.run)
        sender.start()
        time.sleep(3)
        subprocess.run([redmine_local, "stop"], check=True, capture_output=True)
        try:
            accepted_before = sum(m.accepted for m in mails)
            time.sleep(30)
            accepted_during = sum(m.accepted for m in mails) - accepted_before
        finally:
            subprocess.run([redmine_local, "start"], check=True, capture_output=True)
        sender.join()
        assert accepted_during >= 30, "the listener stopped accepting while Redmine was down"
        assert all(m.accepted for m in mails), load.errors[:3]
        # Not one 4xx while Redmine was away: every mail was taken at its first try.
        assert [m.tries for m in mails] == [1] * len(mails)
        assert wait_until(lambda: spool_idle(tmp_path / "spool.db"), 180, 1), \
            "spool never drained"
        server.stop()
    assert_exactly_once(client, tickets, warmup + mails)


def test_flaky_redmine_500s_timeouts_and_422_empty(fake_redmine, tmp_path):
    """3. A fake Redmine failing at random, before and after doing the write."""
    client = RedmineClient(fake_redmine.url, fake_redmine.admin_key)
    tickets = open_tickets(client, 6)
    config = write_config(tmp_path / "m.yaml", fake_redmine.url, fake_redmine.admin_key,
                          redmine={"timeout": 1}, spool=FAST_RETRY)
    fake_redmine.chaos = Chaos(rate=0.25, seed=3, timeout=1.5)
    mails = make_mails(tickets, 60)
    with RunningGateway(config, lmtp=False) as server:
        load = Load(server.smtp_port, mails, clients=4, deadline=120)
        load.run()
        assert all(m.accepted for m in mails), load.errors[:3]
        assert wait_until(lambda: not server.gateway.spool.counts().get("queued"), 120, 0.5)
        assert server.gateway.spool.counts().get("dead", 0) == 0
    drawn = fake_redmine.chaos.drawn
    fake_redmine.chaos = None
    assert {"500", "422-empty", "timeout-after", "500-after"} <= set(drawn)
    assert_exactly_once(client, tickets, mails)


def test_two_gateway_processes_on_one_postgresql(fake_redmine, pg_url, tmp_path):
    """4. Two workers in two processes drain one PostgreSQL spool: no duplicates, and
    each ticket's mail applied in arrival order."""
    client = RedmineClient(fake_redmine.url, fake_redmine.admin_key)
    tickets = open_tickets(client, 6)
    config = write_config(tmp_path / "m.yaml", fake_redmine.url, fake_redmine.admin_key,
                          spool={"url": pg_url, **FAST_RETRY})
    gateway = build_gateway(load_config(config, environ={}))
    mails = make_mails(tickets, 90)
    for mail in mails:
        gateway.receive(Envelope("support@example.org", (f"ticket{mail.ticket}@example.org",),
                                 mail.raw, via="lmtp"))
        mail.accepted = True
    fake_redmine.delay = 0.01     # long enough for the two workers to interleave
    workers = [subprocess.Popen([sys.executable, "-m", "mailgate", "worker", "--config",
                                 str(config)], stderr=subprocess.PIPE, env=child_env())
               for _ in range(2)]
    logs = [w.communicate(timeout=300)[1].decode() for w in workers]
    assert [w.returncode for w in workers] == [0, 0], logs
    assert all(" outcome=applied " in log for log in logs), "one worker did nothing"
    assert gateway.spool.counts() == {"done": 90}
    assert_exactly_once(client, tickets, mails)
    for ticket in tickets:
        bodies = [j.notes.split("\n\n")[0] for j in client.get_issue(ticket).journals]
        expected = [m.body for m in mails if m.ticket == ticket]
        assert bodies == expected, f"ticket {ticket} out of order"
