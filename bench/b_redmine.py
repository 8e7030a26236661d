"""B. End to end into a real Redmine: mailgate vs Redmine's own rdm-mailhandler.rb vs a bare
REST loop of the same note PUTs, in one run.

    python bench/b_redmine.py [--mails 300] [--concurrency 4] [--shared] [--compare REF]
                              [--base REF] [--quick] [--scenarios steady,burst,trickle]
                              [--trickle 30] [--redmine webrick|puma] [--rounds N]
                              [--keep DIR]

300 replies from 3 senders (owner, support, other @example.org, all Redmine
users) across 30 tickets (opened by owner in site-a), one note each.  Before
each contender Redmine is reset to the seeded golden database and the 30
tickets are opened again (not timed).  Three scenarios:

steady: the mails arrive while mailgate works.
  rdm-mailhandler.rb   /usr/share/redmine/extra/mail_handler/rdm-mailhandler.rb --url URL
                       --key mailhandler-key < mail, one ruby process per mail, as an MTA
                       runs it, CONCURRENCY at a time; timed from the first start to
                       the last exit (the note exists when it exits 0)
  mailgate serve       `python -m mailgate serve` (its own process, worker on); the 300
                       mails sent over SMTP by CONCURRENCY sessions; timed from the first
                       send to the moment the spool shows all 300 done (polled in the
                       spool's SQLite file, so the polling does not load Redmine)
  mailgate serve @REF  with --compare REF: the same command on REF's code (exported
                       with git archive; --base REF measures REF in place of the
                       working tree)
  bare REST loop       one requests.Session, PUT /issues/N.json {"issue": {"notes": ...}}
                       as the sender (X-Redmine-Switch-User), one after another: the
                       most notes per second this Redmine takes
  REST loop, mailgate's writes
                       the bare loop again, each PUT with the status change mailgate
                       made for that mail (read from its spool's plans): what Redmine
                       itself costs for mailgate's writes, with no read at all
burst: 300 mails already queued.  mailgate's spool is filled first (Gateway.receive,
  as its SMTP listener takes mail from our MTA; not timed), then `mailgate serve` is
  started and timed from its launch to the last mail done.  rdm-mailhandler.rb has no
  queue of its own: an MTA hands its queue over as in steady, whose figure stands.
trickle: one mail at a time (--trickle N, 10 tickets, the three senders in turn),
  each sent when the one before was applied: the latency of each, p50 and p95.
  rdm-mailhandler.rb: the run of its process; mailgate serve: from the SMTP
  connection to the spool row done.

Each contender's notes are then counted in Redmine (every one, none missing,
none twice).  mailgate's Redmine requests are counted from its /metrics, by kind.
Redmine's work per note for each contender is read from its Rails log: the
objects it allocated for the contender's requests (bench/_redmine_log.py), a
measure the machine's speed of the moment does not move; their ratio to the
bare loop's is printed beside the throughput ratios.
Redmine: a private instance of the local Debian Redmine on its own port and
its own copy of the golden database (bench/_redmine.py explains why), or with
--shared the team's scripts/redmine-local (reset between contenders).
--redmine puma: the private Redmine served by Puma, two worker processes of
four threads, reads side by side (bench/_redmine.py says what that takes).
--rounds N: every scenario N times, the code trees' order reversed every other
round, medians kept (default 2 with --compare: the first mailgate of a run came
out ~10 % faster than the second, whichever code it ran; docs/performance.md, B).
--keep DIR: the work directory kept (each mailgate's spool.db, config, serve.log);
the mails not applied at their first attempt are printed with each run anyway.
--quick: 30 mails (one per ticket), concurrency 2, trickle 6: proves it runs; no figure.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import itertools
import json
import re
import smtplib
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (ROOT, add_compare_option, bench_config, code_trees,  # noqa: E402
                     header, ratio, table, tree_env)
import _redmine_log  # noqa: E402
from _redmine import PrivateRedmine, SharedRedmine  # noqa: E402
from support.mails import verified_reply  # noqa: E402
from support.processes import ServeProcess, free_port  # noqa: E402

MAILHANDLER = Path("/usr/share/redmine/extra/mail_handler/rdm-mailhandler.rb")
SENDERS = (("Olive Owner", "owner@example.org", "owner"),
           ("Sam Support", "support@example.org", "support"),
           ("Oscar Other", "other@example.org", "other"))
TICKETS = 30


# -- Redmine helpers -------------------------------------------------------------------------

def session(redmine):
    import requests

    s = requests.Session()
    s.headers.update({"X-Redmine-API-Key": redmine.api_key, "Accept": "application/json"})
    s.trust_env = False
    return s


def open_tickets(redmine) -> list[int]:
    s = session(redmine)
    ids = []
    for n in range(TICKETS):
        r = s.post(f"{redmine.url}/issues.json", json={"issue": {
            "project_id": "site-a", "subject": f"Router drops the line ({n})",
            "description": "The router drops the connection every evening."}},
            headers={"X-Redmine-Switch-User": "owner"}, timeout=30)
        r.raise_for_status()
        ids.append(r.json()["issue"]["id"])
    return ids


def count_notes(redmine, tickets: list[int]) -> tuple[int, int]:
    """(journals with a note, distinct note texts) on the tickets."""
    s = session(redmine)
    total, texts = 0, set()
    for ticket in tickets:
        r = s.get(f"{redmine.url}/issues/{ticket}.json", params={"include": "journals"},
                  timeout=30)
        r.raise_for_status()
        for journal in r.json()["issue"].get("journals", []):
            note = (journal.get("notes") or "").strip()
            if note:
                total += 1
                found = re.search(r"Reply \d+ of run \w+", note)
                texts.add(found.group(0) if found else note)
    return total, len(texts)


def make_mails(tickets: list[int], count: int, run: str) -> list[tuple[str, str, bytes]]:
    """(sender, recipient, raw) per mail: mail n to ticket n % 30 (of ``tickets``), from
    the senders in turn (each ticket hears owner, support, other, owner, ...: answers,
    reopenings, comments)."""
    mails = []
    for n in range(count):
        ticket = tickets[n % len(tickets)]
        name, address, _ = SENDERS[(n // len(tickets)) % len(SENDERS)]
        # Our MTA's word on the sender (as the fixtures carry): owners are verified.
        raw = verified_reply(ticket, address, name,
                             f"Re: [site-a - Support #{ticket}] Router drops the line",
                             f"<b-{run}-{n}@bench.test>",
                             f"Reply {n} of run {run}: it still drops at eight every evening.\n"
                             f"The log shows a DHCP renewal just before.\n",
                             date="Mon, 23 Nov 2026 10:00:00 +0000")
        mails.append((address, f"ticket{ticket}@example.org", raw))
    return mails


# -- the contenders ----------------------------------------------------------------------

def run_mailhandler(redmine, mails, concurrency: int, work: Path) -> float:
    files = []
    for n, (_, _, raw) in enumerate(mails):
        path = work / f"mh-{n}.eml"
        path.write_bytes(raw)
        files.append(path)

    def deliver(path: Path) -> int:
        with open(path, "rb") as mail:
            return subprocess.run(["ruby", str(MAILHANDLER), "--url", redmine.url,
                                   "--key", "mailhandler-key"], stdin=mail,
                                  capture_output=True, timeout=120).returncode

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        codes = list(pool.map(deliver, files))
    seconds = time.perf_counter() - started
    failed = [c for c in codes if c != 0]
    if failed:
        raise RuntimeError(f"rdm-mailhandler: {len(failed)} exits not 0: {sorted(set(failed))}")
    return seconds


def send_smtp(port: int, mails, sessions: int) -> None:
    queue = list(reversed(mails))
    lock = threading.Lock()
    errors = []

    def client():
        with smtplib.SMTP("127.0.0.1", port, timeout=60) as smtp:
            while True:
                with lock:
                    if not queue:
                        return
                    sender, rcpt, raw = queue.pop()
                try:
                    smtp.sendmail(sender, [rcpt], raw)
                except smtplib.SMTPException as exc:
                    errors.append(exc)

    threads = [threading.Thread(target=client) for _ in range(sessions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(f"SMTP refusals: {errors[:3]}")


def metrics_counts(port: int) -> dict:
    """mailgate's Redmine requests: by method (count, seconds), and by kind when the code
    under test counts them (``kinds``: request -> count)."""
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out: dict[str, list[float]] = {}
    kinds: dict[str, int] = {}
    for line in text.splitlines():
        found = re.match(r'mailgate_redmine_request_seconds_(count|sum)\{method="(\w+)"\} (\S+)',
                         line)
        if found:
            out.setdefault(found.group(2), [0, 0.0])
            out[found.group(2)][0 if found.group(1) == "count" else 1] = float(found.group(3))
        kind = re.match(r'mailgate_redmine_requests_total\{request="([^"]+)"\} (\S+)', line)
        if kind:
            kinds[kind.group(1)] = int(float(kind.group(2)))
    return {"methods": {k: (int(v[0]), v[1]) for k, v in out.items()}, "kinds": kinds}


def wait_done(spool: Path, count: int, deadline: float, server, poll: float = 0.05) -> dict:
    """Poll the spool's SQLite file until ``count`` mails are done or dead."""
    while True:
        with sqlite3.connect(f"file:{spool}?mode=ro", uri=True, timeout=5) as db:
            states = dict(db.execute("SELECT state, count(*) FROM messages GROUP BY state"))
        if states.get("done", 0) + states.get("dead", 0) >= count:
            return states
        if time.monotonic() > deadline or server.process.poll() is not None:
            raise RuntimeError(f"mailgate: {states} after the deadline; see {server.log}")
        time.sleep(poll)


def outcomes(spool: Path) -> dict[str, int]:
    with sqlite3.connect(spool) as db:
        return dict(db.execute("SELECT json_extract(outcome, '$.kind'), count(*)"
                               " FROM messages GROUP BY 1"))


def unusual(spool: Path, at_most: int = 5) -> list[str]:
    """The mails not applied at the first attempt, a line each (the first few): what a
    figure may owe to something other than speed."""
    with sqlite3.connect(spool) as db:
        rows = db.execute("SELECT id, rcpt, attempts, json_extract(outcome, '$.kind'),"
                          " coalesce(json_extract(outcome, '$.reason'), ''),"
                          " coalesce(last_error, '') FROM messages"
                          " WHERE attempts > 1 OR json_extract(outcome, '$.kind') != 'applied'"
                          " ORDER BY id LIMIT ?", (at_most,)).fetchall()
    return [f"mail {n} to {rcpt}: {attempts} attempt(s), {kind} {reason} {error}".rstrip()
            for n, rcpt, attempts, kind, reason, error in rows]


class Mailgate:
    """One `mailgate serve` set-up for a contender: its directory, config and ports."""

    def __init__(self, redmine, work: Path, tree):
        self.directory = Path(tempfile.mkdtemp(dir=work))
        self.config = bench_config(self.directory / "mailgate.yaml", redmine.url,
                                   redmine.api_key, trust={"verify_dkim": False})
        self.tree = tree
        self.smtp_port, self.metrics_port = free_port(), free_port()
        self.spool = self.directory / "spool.db"

    def serve(self) -> ServeProcess:
        # cwd: not the repository, whose mailgate/ `python -m` would put first on sys.path.
        return ServeProcess(self.config, self.smtp_port, self.directory / "serve.log",
                            "--metrics", f"127.0.0.1:{self.metrics_port}", cwd=self.directory,
                            timeout=60,
                            env=tree_env(self.tree, {"MAILGATE_LOG_LEVEL": "WARNING"}))

    def finish(self, server, count: int) -> dict:
        counts = metrics_counts(self.metrics_port)
        server.stop(60)
        found = outcomes(self.spool)
        if found.get(None) or len(found) == 0:
            raise RuntimeError(f"mailgate: {found}; see {server.log}")
        counts["outcomes"] = found
        counts["unusual"] = unusual(self.spool)
        counts["spool"] = self.spool
        counts["mails"] = count
        return counts


def run_mailgate(redmine, mails, concurrency: int, work: Path, tree) -> tuple[float, dict]:
    gate = Mailgate(redmine, work, tree)
    with gate.serve() as server:
        started = time.perf_counter()
        send_smtp(gate.smtp_port, mails, concurrency)
        states = wait_done(gate.spool, len(mails), time.monotonic() + 170, server)
        seconds = time.perf_counter() - started
        if states.get("dead"):
            raise RuntimeError(f"mailgate dead-lettered {states['dead']} mails; see {server.log}")
        return seconds, gate.finish(server, len(mails))


#: Run in a child on the tree under test: the burst's queue, taken in as serve's SMTP
#: listener takes mail from our MTA (Gateway.receive), with no worker running.
SPOOL_ONLY = """
import json, sys
from pathlib import Path
from mailgate.config import load_config
from mailgate.gateway import Envelope, build_gateway
gateway = build_gateway(load_config(sys.argv[1]))
folder = Path(sys.argv[2])
for sender, rcpt, name in json.loads((folder / "index.json").read_text()):
    [done] = gateway.receive(Envelope(sender, (rcpt,), (folder / name).read_bytes(),
                                      via="smtp 127.0.0.1"))
    assert done.spool_id is not None, done
"""


def run_burst(redmine, mails, work: Path, tree) -> tuple[float, dict]:
    gate = Mailgate(redmine, work, tree)
    folder = gate.directory / "queue"
    folder.mkdir()
    index = []
    for n, (sender, rcpt, raw) in enumerate(mails):
        (folder / f"{n}.eml").write_bytes(raw)
        index.append((sender, rcpt, f"{n}.eml"))
    (folder / "index.json").write_text(json.dumps(index))
    subprocess.run([sys.executable, "-c", SPOOL_ONLY, str(gate.config), str(folder)],
                   cwd=gate.directory, env=tree_env(tree), check=True, timeout=300)
    started = time.perf_counter()
    with gate.serve() as server:
        states = wait_done(gate.spool, len(mails), time.monotonic() + 170, server)
        seconds = time.perf_counter() - started
        if states.get("dead"):
            raise RuntimeError(f"mailgate dead-lettered {states['dead']} mails; see {server.log}")
        return seconds, gate.finish(server, len(mails))


def trickle_mailhandler(redmine, mails, work: Path) -> list[float]:
    latencies = []
    for n, (_, _, raw) in enumerate(mails):
        started = time.perf_counter()
        code = subprocess.run(["ruby", str(MAILHANDLER), "--url", redmine.url, "--key",
                               "mailhandler-key"], input=raw, capture_output=True,
                              timeout=120).returncode
        latencies.append(time.perf_counter() - started)
        if code != 0:
            raise RuntimeError(f"rdm-mailhandler: exit {code} on mail {n}")
    return latencies


def trickle_mailgate(redmine, mails, work: Path, tree) -> tuple[list[float], dict]:
    gate = Mailgate(redmine, work, tree)
    latencies = []
    with gate.serve() as server:
        for n, (sender, rcpt, raw) in enumerate(mails):
            started = time.perf_counter()
            with smtplib.SMTP("127.0.0.1", gate.smtp_port, timeout=60) as smtp:
                smtp.sendmail(sender, [rcpt], raw)
            wait_done(gate.spool, n + 1, time.monotonic() + 60, server, poll=0.002)
            latencies.append(time.perf_counter() - started)
        return latencies, gate.finish(server, len(mails))


def run_rest(redmine, mails, statuses: dict[int, int] | None = None) -> float:
    """The bare loop: each mail's note PUT as its sender, one after another.
    ``statuses``: mail n -> the status id its PUT sets too (``status_ids_of``)."""
    s = session(redmine)
    statuses = statuses or {}
    started = time.perf_counter()
    for n, (address, rcpt, raw) in enumerate(mails):
        ticket = int(rcpt[len("ticket"):rcpt.index("@")])
        login = next(login for _, a, login in SENDERS if a == address)
        issue: dict = {"notes": raw.split(b"\n\n", 1)[1].decode().strip()}
        if n in statuses:
            issue["status_id"] = statuses[n]
        r = s.put(f"{redmine.url}/issues/{ticket}.json", json={"issue": issue},
                  headers={"X-Redmine-Switch-User": login}, timeout=30)
        r.raise_for_status()
    return time.perf_counter() - started


def writes_made(spool: Path) -> dict[int, str]:
    """Mail n -> the workflow state mailgate's PUT set for it (mails whose PUT changed
    no status are left out), read from the spool's plans: the "same writes" loop's."""
    made = {}
    with sqlite3.connect(spool) as db:
        for raw, outcome in db.execute("SELECT raw, outcome FROM messages"):
            n = int(re.search(rb"<b-\w+-(\d+)@bench\.test>", bytes(raw)).group(1))
            plan = json.loads(outcome)["plan"]
            if plan["to_state"] != plan["from_state"]:
                made[n] = plan["to_state"]
    return made


def status_ids_of(redmine, writes: dict[int, str]) -> dict[int, int]:
    """``writes_made``'s workflow states as this Redmine's status ids."""
    listed = session(redmine).get(f"{redmine.url}/issue_statuses.json", timeout=30).json()
    ids = {x["name"]: x["id"] for x in listed["issue_statuses"]}
    # The workflow's state ids and the status names they go by (the bench config maps none).
    names = yaml.safe_load((ROOT / "workflow" / "default.yaml").read_text())["states"]
    return {n: ids[names[state]] for n, state in writes.items()}


def request_costs(redmine, ticket: int, n: int = 20) -> dict[str, float]:
    """Redmine's time per request kind on a ticket with ~10 notes (ms, median), as a client
    that acknowledges answers at once sees it (mailgate.clients.transport: WEBrick's
    answers otherwise wait 40 ms for a delayed ACK)."""
    s = session(redmine)
    try:
        from mailgate.clients.transport import QuickAckAdapter
    except ImportError:
        pass        # a tree before it: the plain client
    else:
        s.mount("http://", QuickAckAdapter())
    kinds = {
        "GET issue +journals,attachments": lambda: s.get(
            f"{redmine.url}/issues/{ticket}.json",
            params={"include": "journals,attachments"}, timeout=30),
        "GET issue +journals": lambda: s.get(
            f"{redmine.url}/issues/{ticket}.json", params={"include": "journals"}, timeout=30),
        "GET issue (exists check)": lambda: s.get(f"{redmine.url}/issues/{ticket}.json",
                                                  timeout=30),
        "PUT note": lambda: s.put(f"{redmine.url}/issues/{ticket}.json",
                                  json={"issue": {"notes": "cost probe"}},
                                  headers={"X-Redmine-Switch-User": "support"}, timeout=30),
        "PUT note + status change": lambda: s.put(
            f"{redmine.url}/issues/{ticket}.json",
            json={"issue": {"notes": "cost probe", "status_id": next(statuses)}},
            headers={"X-Redmine-Switch-User": "support"}, timeout=30),
        "GET 30 issues by id": lambda: s.get(f"{redmine.url}/issues.json", params={
            "issue_id": ",".join(map(str, range(ticket, ticket + TICKETS))), "status_id": "*",
            "limit": 100}, timeout=30),
    }
    # Support may move a ticket between Needs information and Answered, both ways.
    names = {x["name"]: x["id"] for x in s.get(f"{redmine.url}/issue_statuses.json",
                                               timeout=30).json()["issue_statuses"]}
    statuses = itertools.cycle([names["Answered"], names["Needs information"]])
    out = {}
    for name, call in kinds.items():
        times = []
        for _ in range(n):
            started = time.perf_counter()
            call().raise_for_status()
            times.append((time.perf_counter() - started) * 1000)
        out[name] = statistics.median(times)
    return out


# -- the run ------------------------------------------------------------------------------

def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] \
        if len(values) > 1 else values[0]


class Run:
    """The contenders of one run, each on a Redmine reset to the golden database."""

    def __init__(self, args, redmine, work: Path, trees, run: str):
        self.args, self.redmine, self.work, self.trees, self.run = args, redmine, work, trees, run
        #: Each contender's notes/s, one per round.
        self.rounds: dict[str, list[float]] = {}
        self.extra: dict[str, dict] = {}
        self.latencies: dict[str, list[float]] = {}
        self.costs: dict[str, float] = {}
        #: Contender -> its (start, end) spans, time.time() (bench/_redmine_log.py).
        self.windows: dict[str, list[tuple[float, float]]] = {}
        #: Mail n -> the status change mailgate's first tree made (steady's last run).
        self.writes: dict[int, str] | None = None
        self.round = 0
        self._made = 0

    @property
    def results(self) -> dict[str, float]:
        """Each contender's median notes/s over the rounds."""
        return {name: statistics.median(values) for name, values in self.rounds.items()}

    def mailgates(self) -> list:
        """The code trees in this round's order: reversed every other round, since the
        first mailgate of a run measured ~10 % faster than the second whichever code it
        ran (docs/performance.md, B)."""
        return list(self.trees) if self.round % 2 == 0 else list(reversed(self.trees))

    def record(self, name: str, notes_per_second: float) -> None:
        self.rounds.setdefault(name, []).append(notes_per_second)

    def fresh(self, name: str, count: int, ticket_count: int = TICKETS):
        self.redmine.reset()
        tickets = open_tickets(self.redmine)
        self._made += 1
        mails = make_mails(tickets[:ticket_count], count, self.run + str(self._made))
        return tickets, mails

    def check(self, name: str, tickets: list[int], count: int) -> None:
        notes, distinct = count_notes(self.redmine, tickets)
        if (notes, distinct) != (count, count):
            raise RuntimeError(f"{name}: {notes} notes ({distinct} distinct) in Redmine,"
                               f" {count} expected")

    def timed(self, name: str, run):
        """``run()``, its wall-clock span kept as one of ``name``'s windows (the Redmine
        requests made in it are that contender's: bench/_redmine_log.py)."""
        began = time.time()
        try:
            return run()
        finally:
            self.windows.setdefault(name, []).append((began, time.time()))

    def steady(self) -> None:
        args = self.args
        for name, tree in [("rdm-mailhandler.rb", None)] + \
                [(f"mailgate serve{t.label}", t) for t in self.mailgates()] + \
                [("bare REST loop", None)]:
            tickets, mails = self.fresh(name, args.mails)
            if name == "rdm-mailhandler.rb":
                seconds = self.timed(name, lambda: run_mailhandler(
                    self.redmine, mails, args.concurrency, self.work))
            elif tree is not None:
                seconds, self.extra[name] = self.timed(name, lambda: run_mailgate(
                    self.redmine, mails, args.concurrency, self.work, tree))
            else:
                seconds = self.timed(name, lambda: run_rest(self.redmine, mails))
            self.check(name, tickets, args.mails)
            self.record(name, args.mails / seconds)
            print(f"# steady, {name}: {args.mails} notes in {seconds:.1f} s", flush=True)
            if tree is not None and tree is self.trees[0]:
                self.writes = writes_made(self.extra[name]["spool"])
            if name == "bare REST loop" and not self.costs:
                self.costs = request_costs(self.redmine, tickets[0])
        if self.writes is not None:
            name = "REST loop, mailgate's writes"
            tickets, mails = self.fresh(name, args.mails)
            statuses = status_ids_of(self.redmine, self.writes)
            seconds = self.timed(name, lambda: run_rest(self.redmine, mails, statuses))
            self.check(name, tickets, args.mails)
            self.record(name, args.mails / seconds)
            print(f"# steady, {name}: {args.mails} notes in {seconds:.1f} s"
                  f" ({len(statuses)} status changes)", flush=True)

    def burst(self) -> None:
        for tree in self.mailgates():
            name = f"mailgate serve{tree.label} (burst)"
            tickets, mails = self.fresh(name, self.args.mails)
            seconds, self.extra[name] = self.timed(name, lambda: run_burst(
                self.redmine, mails, self.work, tree))
            self.check(name, tickets, self.args.mails)
            self.record(name, self.args.mails / seconds)
            print(f"# burst, {name}: {self.args.mails} queued notes in {seconds:.1f} s"
                  " (from its launch)", flush=True)

    def trickle(self) -> None:
        count = self.args.trickle
        for name, tree in [("rdm-mailhandler.rb", None)] + \
                [(f"mailgate serve{t.label}", t) for t in self.mailgates()]:
            tickets, mails = self.fresh(name, count, ticket_count=10)
            if tree is None:
                latencies = trickle_mailhandler(self.redmine, mails, self.work)
            else:
                latencies, self.extra[name + " (trickle)"] = trickle_mailgate(
                    self.redmine, mails, self.work, tree)
            self.latencies.setdefault(name, []).extend(latencies)
            self.check(name, tickets[:10], count)
            print(f"# trickle, {name}: p50 {1000 * percentile(self.latencies[name], 50):.0f}"
                  " ms", flush=True)


def print_requests(run: Run) -> None:
    for name, counts in run.extra.items():
        mails = counts["mails"]
        per_method = ", ".join(f"{m} {c / mails:.2f} ({1000 * t / max(c, 1):.0f} ms each)"
                               for m, (c, t) in sorted(counts["methods"].items()))
        print(f"- {name}: Redmine requests per note: {per_method}; outcomes"
              f" {counts['outcomes']}")
        for kind, count in sorted(counts["kinds"].items(), key=lambda kv: -kv[1]):
            print(f"    {count / mails:5.2f}  {kind}")
        for line in counts.get("unusual", ()):
            print(f"    ! {line}")


def print_work(run: Run) -> None:
    """Redmine's work per note for each contender (allocations in its log: machine-noise
    free), beside the bare loop's; for mailgate, where it goes."""
    log = run.redmine.log_path
    if not log.exists() or not run.windows:
        return
    found = _redmine_log.work(log, run.windows)
    loop = found.get("bare REST loop")
    if loop is None or not loop.allocations:
        return
    notes = {name: run.args.mails * len(spans) for name, spans in run.windows.items()}
    base = loop.allocations / notes["bare REST loop"]
    print()
    table([(name, f"{w.allocations / notes[name]:.0f}", f"{w.milliseconds / notes[name]:.1f}",
            f"{base / (w.allocations / notes[name]):.2f}")
           for name, w in found.items() if w.allocations],
          ("Redmine's work per note (its log)", "allocations", "Rails ms",
           "bare loop's allocations / these"))
    for name, w in found.items():
        if name.startswith("mailgate"):
            parts = sorted(w.kinds.items(), key=lambda kv: -kv[1][1])
            print(f"- {name}: " + ", ".join(f"{kind} {a / notes[name]:.0f}"
                                            f" ({c / notes[name]:.2f}/note)"
                                            for kind, (c, a) in parts))


def print_results(args, run: Run, trees) -> None:
    results, rest = run.results, run.results.get("bare REST loop")
    rdm = results.get("rdm-mailhandler.rb")
    print()
    if rdm and rest:
        table([(name, f"{value:.1f}", " ".join(f"{v:.1f}" for v in run.rounds[name]),
                f"{value / rdm:.2f}", f"{value / rest:.2f}")
               for name, value in results.items()],
              ("contender", "notes/s (median)", "each round", "x rdm-mailhandler",
               "x bare REST loop"))
    if run.latencies:
        print()
        table([(name, len(values), f"{1000 * percentile(values, 50):.0f}",
                f"{1000 * percentile(values, 95):.0f}", f"{1000 * max(values):.0f}")
               for name, values in run.latencies.items()],
              ("trickle, one mail at a time", "mails", "p50 ms", "p95 ms", "max ms"))
    print_requests(run)
    print_work(run)
    if run.costs:
        print("- Redmine's time per request (ms, median of 20, a ticket with ~10 notes, answers"
              " acknowledged at once): " + ", ".join(f"{k} {v:.0f}" for k, v in run.costs.items()))
    print()
    if rdm and rest:
        ratio("bare REST loop / rdm-mailhandler", rest / rdm)
    for tree in trees[1:]:
        for suffix in ("", " (burst)"):
            other = results.get(f"mailgate serve{tree.label}{suffix}")
            if other and rdm:
                ratio(f"mailgate serve{tree.label}{suffix} / rdm-mailhandler", other / rdm)
            if other and results.get(f"mailgate serve{suffix}"):
                ratio(f"mailgate serve{suffix} notes/s: {trees[0].name} / {tree.name}",
                      results[f"mailgate serve{suffix}"] / other)
        if f"mailgate serve{tree.label}" in run.latencies and "mailgate serve" in run.latencies:
            ratio(f"trickle p50 latency: {tree.name} / {trees[0].name}",
                  percentile(run.latencies[f"mailgate serve{tree.label}"], 50)
                  / percentile(run.latencies["mailgate serve"], 50))
    mh = run.latencies.get("rdm-mailhandler.rb")
    if mh and "mailgate serve" in run.latencies:
        ours = run.latencies["mailgate serve"]
        ratio("trickle p50 latency: rdm-mailhandler / mailgate",
              percentile(mh, 50) / percentile(ours, 50))
        ratio("trickle p95 latency: rdm-mailhandler / mailgate",
              percentile(mh, 95) / percentile(ours, 95))
    if rdm and rest and "mailgate serve (burst)" in results:
        burst = results["mailgate serve (burst)"]
        ratio("burst: mailgate / rdm-mailhandler", burst / rdm, ">= 2")
        ratio("burst: mailgate / bare REST loop", burst / rest, ">= 0.8")
    if rdm and rest and "mailgate serve" in results:
        ratio("mailgate / rdm-mailhandler", results["mailgate serve"] / rdm, ">= 2")
        ratio("mailgate / bare REST loop", results["mailgate serve"] / rest, ">= 0.8")
    same = results.get("REST loop, mailgate's writes")
    if same and rest and "mailgate serve" in results:
        ratio("REST loop, mailgate's writes / bare REST loop", same / rest)
        ratio("mailgate / REST loop, mailgate's writes", results["mailgate serve"] / same)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mails", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=4,
                        help="rdm-mailhandler processes at a time, and SMTP sessions")
    parser.add_argument("--shared", action="store_true",
                        help="use scripts/redmine-local (port 3000) instead of a private one")
    parser.add_argument("--scenarios", default="steady,burst,trickle",
                        help="which of steady, burst, trickle to run (comma-separated)")
    parser.add_argument("--trickle", type=int, default=30, help="mails in the trickle")
    parser.add_argument("--redmine", choices=("webrick", "puma"), default="webrick",
                        help="how the private Redmine is served (bench/_redmine.py)")
    add_compare_option(parser)
    parser.add_argument("--rounds", type=int, default=None,
                        help="rounds of every scenario, the code trees in turn first; medians"
                             " kept (default: 2 with --compare, else 1)")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="work in DIR and keep it: each mailgate's spool, config and log")
    parser.add_argument("--quick", action="store_true",
                        help="30 mails, concurrency 2, trickle 6 (proves it runs)")
    args = parser.parse_args()
    if args.rounds is None:
        args.rounds = 2 if args.compare else 1
    if args.quick:
        args.mails, args.concurrency, args.trickle = TICKETS, 2, 6
    scenarios = set(args.scenarios.split(","))
    if args.shared and args.redmine != "webrick":
        parser.error("--shared is scripts/redmine-local's WEBrick")
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-b-") as tmp:
        work = args.keep.resolve() if args.keep else Path(tmp)
        trees = code_trees(args, work)
        header("B. End to end into the local real Redmine (notes per second)", trees)
        redmine = SharedRedmine() if args.shared else PrivateRedmine(free_port(), args.redmine)
        print(f"# Redmine: {'shared scripts/redmine-local' if args.shared else 'private'}"
              f" at {redmine.url}, {redmine.describe()}; {args.mails} mails,"
              f" concurrency {args.concurrency}; scenarios {','.join(sorted(scenarios))}")
        run = Run(args, redmine, work, trees, uuid.uuid4().hex[:6])
        redmine.start()
        try:
            for run.round in range(args.rounds):
                if args.rounds > 1:
                    print(f"# round {run.round + 1} of {args.rounds}", flush=True)
                for scenario in ("steady", "burst", "trickle"):
                    if scenario in scenarios:
                        getattr(run, scenario)()
        finally:
            redmine.stop()
    print_results(args, run, trees)


if __name__ == "__main__":
    main()
