"""B. End to end into a real Redmine: mailgate vs Redmine's own rdm-mailhandler.rb vs a bare
REST loop of the same note PUTs, in one run.

    python bench/b_redmine.py [--mails 300] [--concurrency 4] [--shared] [--compare REF]
                              [--base REF] [--quick]

300 replies from 3 senders (owner, support, other @example.org, all Redmine
users) across 30 tickets (opened by owner in site-a), one note each.  Before
each contender Redmine is reset to the seeded golden database and the 30
tickets are opened again (not timed).  Contenders:

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

Each contender's notes are then counted in Redmine (300 expected, none missing,
none twice).  mailgate's Redmine requests are counted from its /metrics.
Redmine: a private instance of the local Debian Redmine on its own port and
its own copy of the golden database (bench/_redmine.py explains why), or with
--shared the team's scripts/redmine-local (reset between contenders).
--quick: 30 mails (one per ticket), concurrency 2: proves it runs; no figure.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import re
import smtplib
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (add_compare_option, bench_config, code_trees, header,  # noqa: E402
                     ratio, table, tree_env)
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
    """(sender, recipient, raw) per mail: mail n to ticket n % 30, from the senders in turn
    (each ticket hears owner, support, other, owner, ...: answers, reopenings, comments)."""
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


def metrics_counts(port: int) -> dict[str, tuple[int, float]]:
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out: dict[str, list[float]] = {}
    for line in text.splitlines():
        found = re.match(r'mailgate_redmine_request_seconds_(count|sum)\{method="(\w+)"\} (\S+)',
                         line)
        if found:
            out.setdefault(found.group(2), [0, 0.0])
            out[found.group(2)][0 if found.group(1) == "count" else 1] = float(found.group(3))
    return {k: (int(v[0]), v[1]) for k, v in out.items()}


def run_mailgate(redmine, mails, concurrency: int, work: Path, tree) -> tuple[float, dict]:
    directory = Path(tempfile.mkdtemp(dir=work))
    config = bench_config(directory / "mailgate.yaml", redmine.url, redmine.api_key,
                          trust={"verify_dkim": False})
    smtp_port, metrics_port = free_port(), free_port()
    spool = directory / "spool.db"
    # cwd: not the repository, whose mailgate/ `python -m` would put first on sys.path.
    with ServeProcess(config, smtp_port, directory / "serve.log",
                      "--metrics", f"127.0.0.1:{metrics_port}", cwd=directory, timeout=60,
                      env=tree_env(tree, {"MAILGATE_LOG_LEVEL": "WARNING"})) as server:
        started = time.perf_counter()
        send_smtp(smtp_port, mails, concurrency)
        deadline = time.monotonic() + 170
        while True:
            with sqlite3.connect(f"file:{spool}?mode=ro", uri=True, timeout=5) as db:
                states = dict(db.execute("SELECT state, count(*) FROM messages GROUP BY state"))
            if states.get("done", 0) + states.get("dead", 0) >= len(mails):
                break
            if time.monotonic() > deadline or server.process.poll() is not None:
                raise RuntimeError(f"mailgate: {states} after the deadline; see {server.log}")
            time.sleep(0.05)
        seconds = time.perf_counter() - started
        counts = metrics_counts(metrics_port)
        server.stop(60)
    if states.get("dead"):
        raise RuntimeError(f"mailgate dead-lettered {states['dead']} mails; see {server.log}")
    with sqlite3.connect(spool) as db:
        kinds = dict(db.execute("SELECT json_extract(outcome, '$.kind'), count(*)"
                                " FROM messages GROUP BY 1"))
    counts["outcomes"] = kinds
    return seconds, counts


def run_rest(redmine, mails, tickets) -> float:
    s = session(redmine)
    started = time.perf_counter()
    for n, (address, rcpt, raw) in enumerate(mails):
        ticket = int(rcpt[len("ticket"):rcpt.index("@")])
        login = next(login for _, a, login in SENDERS if a == address)
        text = raw.split(b"\n\n", 1)[1].decode().strip()
        r = s.put(f"{redmine.url}/issues/{ticket}.json", json={"issue": {"notes": text}},
                  headers={"X-Redmine-Switch-User": login}, timeout=30)
        r.raise_for_status()
    return time.perf_counter() - started


def request_costs(redmine, ticket: int, n: int = 20) -> dict[str, float]:
    """Redmine's time per request kind on a ticket with ~10 notes (ms, median)."""
    import statistics

    s = session(redmine)
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
    }
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

def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mails", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=4,
                        help="rdm-mailhandler processes at a time, and SMTP sessions")
    parser.add_argument("--shared", action="store_true",
                        help="use scripts/redmine-local (port 3000) instead of a private one")
    add_compare_option(parser)
    parser.add_argument("--quick", action="store_true",
                        help="30 mails, concurrency 2 (proves it runs)")
    args = parser.parse_args()
    if args.quick:
        args.mails, args.concurrency = TICKETS, 2
    run = uuid.uuid4().hex[:6]
    results: dict[str, float] = {}
    extra: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench-b-") as tmp:
        work = Path(tmp)
        trees = code_trees(args, work)
        header("B. End to end into the local real Redmine (notes per second)", trees)
        redmine = SharedRedmine() if args.shared else PrivateRedmine(free_port())
        print(f"# Redmine: {'shared scripts/redmine-local' if args.shared else 'private'}"
              f" at {redmine.url}; {args.mails} mails, concurrency {args.concurrency}")
        contenders = ["rdm-mailhandler.rb"]
        code = {}
        for tree in trees:
            contenders.append(f"mailgate serve{tree.label}")
            code[contenders[-1]] = tree
        contenders.append("bare REST loop")
        redmine.start()
        try:
            for name in contenders:
                redmine.reset()
                tickets = open_tickets(redmine)
                mails = make_mails(tickets, args.mails, run + str(contenders.index(name)))
                if name == "rdm-mailhandler.rb":
                    seconds = run_mailhandler(redmine, mails, args.concurrency, work)
                elif name in code:
                    seconds, extra[name] = run_mailgate(redmine, mails, args.concurrency, work,
                                                        code[name])
                else:
                    seconds = run_rest(redmine, mails, tickets)
                notes, distinct = count_notes(redmine, tickets)
                if (notes, distinct) != (args.mails, args.mails):
                    raise RuntimeError(f"{name}: {notes} notes ({distinct} distinct) in"
                                       f" Redmine, {args.mails} expected")
                results[name] = args.mails / seconds
                print(f"# {name}: {args.mails} notes in {seconds:.1f} s", flush=True)
                if name == "bare REST loop":
                    costs = request_costs(redmine, tickets[0])
        finally:
            redmine.stop()
    rest = results["bare REST loop"]
    print()
    table([(name, f"{results[name]:.1f}", f"{results[name] / results['rdm-mailhandler.rb']:.2f}",
            f"{results[name] / rest:.2f}") for name in contenders],
          ("contender", "notes/s", "x rdm-mailhandler", "x bare REST loop"))
    for name, counts in extra.items():
        methods = {k: v for k, v in counts.items() if k != "outcomes"}
        per_mail = ", ".join(f"{m} {c / args.mails:.2f} ({1000 * s / max(c, 1):.0f} ms each)"
                             for m, (c, s) in sorted(methods.items()))
        print(f"- {name}: Redmine requests per mail: {per_mail}; outcomes {counts['outcomes']}")
    print("- Redmine's own time per request (ms, median of 20, ticket with ~10 notes): "
          + ", ".join(f"{k} {v:.0f}" for k, v in costs.items()))
    print()
    ratio("bare REST loop / rdm-mailhandler", rest / results["rdm-mailhandler.rb"])
    for tree in trees[1:]:
        other = results["mailgate serve" + tree.label]
        ratio(f"mailgate serve{tree.label} / rdm-mailhandler",
              other / results["rdm-mailhandler.rb"])
        ratio(f"mailgate serve notes/s: {trees[0].name} / {tree.name}",
              results["mailgate serve"] / other)
    ratio("mailgate / rdm-mailhandler", results["mailgate serve"] / results["rdm-mailhandler.rb"],
          ">= 2")
    ratio("mailgate / bare REST loop", results["mailgate serve"] / rest, ">= 0.8")


if __name__ == "__main__":
    main()
