"""G. One 25 MB plain-text reply through `mailgate pipe` into a real Redmine, and the
next ordinary reply to the same ticket (issue 18, finding 9: the note text cap).

    python bench/g_limits.py [--compare REF] [--base REF] [--rounds N] [--quick]

The mail: a verified owner's reply to a ticket, 25,000,000 bytes of plain prose
(text/plain, 8bit, numbered sentences of about 70 bytes a line: the kind of text
trimming reads slowest, where a log is read twenty times faster), under the
default server.max_message_size (25 MiB).  For each tree of the code, Redmine is first reset (not timed) and a
ticket opened; then, timed:

  25 MB reply     `python -m mailgate pipe --recipient ticketN@...` < the mail: intake,
                  spool, plan and the worker's step into Redmine, in one process, as an
                  MTA runs it.  Its wall time and its peak RSS (ru_maxrss, from wait4),
                  and how far Redmine's own peak RSS rose above its idle RSS (VmHWM,
                  reset before: echo 5 > /proc/PID/clear_refs)
  next reply      a 300-byte reply to the same ticket the same way: what every later
                  mail to that ticket costs (the ticket is read with its journals)

Then the note Redmine keeps is read back (its length, and the files attached).
The code: the working tree (or --base REF), and with --compare REF also REF's
(exported with git archive; bench/_common.py); with --rounds N the trees take
turns N times and medians are kept.  Ratios, working tree / REF, come last.
Redmine: a private instance of the local Debian Redmine (bench/_redmine.py) with
its own database directory, so that it runs beside bench B.
--quick: a 2.5 MB mail (proves it runs; the figures mean nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (add_compare_option, bench_config, code_trees, header, median,  # noqa: E402
                     ratio, table, tree_env)
from _redmine import PrivateRedmine  # noqa: E402
from support.configs import VERIFIED  # noqa: E402
from support.processes import free_port  # noqa: E402

MAIL_BYTES = 25_000_000
STATE = Path("/var/lib/mailgate-bench-redmine-g")
MB = 1024 * 1024


SENTENCES = ("The connection drops every evening around eight, on both bands.",
             "I restarted the router twice and changed the channel to eleven.",
             "Nothing helped; what it printed last night is further down.",
             "My neighbour has the same model and sees no drops at all.")


def make_mail(path: Path, ticket: int, size: int) -> None:
    """A verified owner's reply whose text is ``size`` bytes of prose."""
    head = (f"{VERIFIED}\r\nFrom: Olive Owner <owner@example.org>\r\n"
            f"To: ticket{ticket}@example.org\r\nSubject: Re: the router\r\n"
            f"Message-ID: <bench-g-{uuid.uuid4().hex}@load.test>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: 8bit\r\n\r\n"
            "Everything I noted down this month:\r\n\r\n").encode()
    with path.open("wb") as out:
        out.write(head)
        written, n = len(head), 0
        while written < size:
            line = f"{SENTENCES[n % 4]} ({n})\r\n".encode()
            out.write(line)
            written += len(line)
            n += 1


def small_reply(path: Path, ticket: int) -> None:
    path.write_bytes((f"{VERIFIED}\r\nFrom: Olive Owner <owner@example.org>\r\n"
                      f"To: ticket{ticket}@example.org\r\nSubject: Re: the router\r\n"
                      f"Message-ID: <bench-g-{uuid.uuid4().hex}@load.test>\r\n"
                      "Content-Type: text/plain; charset=utf-8\r\n\r\n"
                      "It happened again at eight, the same way.\r\n").encode())


def rest(redmine, method: str, path: str, body: dict | None = None,
         as_user: str | None = None) -> dict:
    headers = {"X-Redmine-API-Key": redmine.api_key, "Content-Type": "application/json"}
    if as_user:
        headers["X-Redmine-Switch-User"] = as_user
    request = urllib.request.Request(redmine.url + path, method=method, headers=headers,
                                     data=json.dumps(body).encode() if body else None)
    with urllib.request.urlopen(request, timeout=600) as answer:
        text = answer.read()
    return json.loads(text) if text.strip() else {}


def pipe(tree, config: Path, mail: Path, ticket: int, work: Path) -> tuple[float, int, str]:
    """(seconds, peak RSS in bytes, the line it said) of one `mailgate pipe` child."""
    with mail.open("rb") as stdin:
        started = time.monotonic()
        child = subprocess.Popen(
            [sys.executable, "-m", "mailgate", "pipe", "--config", str(config),
             "--recipient", f"ticket{ticket}@example.org"],
            stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=tree_env(tree, {"MAILGATE_LOG_LEVEL": "WARNING"}), cwd=work)
        said = child.stderr.read() + child.stdout.read()
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.monotonic() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"mailgate pipe exited {child.returncode}: {said.decode()[-2000:]}")
    return seconds, usage.ru_maxrss * 1024, said.decode().strip()[-200:]


def vm(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def one_run(tree, redmine: PrivateRedmine, size: int, work: Path) -> dict:
    redmine.reset()
    ticket = rest(redmine, "POST", "/issues.json", {"issue": {
        "project_id": "site-a", "subject": "the router", "description": "It drops."}},
        as_user="owner")["issue"]["id"]
    run = work / uuid.uuid4().hex
    run.mkdir()
    config = bench_config(run / "mailgate.yaml", redmine.url, redmine.api_key)
    big, small = run / "big.eml", run / "small.eml"
    make_mail(big, ticket, size)
    small_reply(small, ticket)
    pid = redmine.process.pid
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    idle = vm(pid, "VmRSS")
    seconds, rss, said = pipe(tree, config, big, ticket, run)
    redmine_rise = vm(pid, "VmHWM") - idle
    next_seconds, _, _ = pipe(tree, config, small, ticket, run)
    issue = rest(redmine, "GET", f"/issues/{ticket}.json?include=journals,attachments")["issue"]
    notes = [j.get("notes") or "" for j in issue["journals"]]
    return {"seconds": seconds, "rss": rss, "redmine": redmine_rise, "next": next_seconds,
            "note": len(notes[0]) if notes else 0, "said": said,
            "files": ", ".join(f"{a['filename']} {a['filesize'] / MB:.1f} MB"
                               for a in issue.get("attachments", [])) or "-"}


def main() -> None:
    parser = argparse.ArgumentParser()
    add_compare_option(parser)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="a 2.5 MB mail: proves it runs")
    args = parser.parse_args()
    size = 2_500_000 if args.quick else MAIL_BYTES
    with tempfile.TemporaryDirectory(prefix="bench-g-") as tmp:
        work = Path(tmp)
        trees = code_trees(args, work)
        header(f"G. A {size / 1e6:g} MB plain-text reply through `mailgate pipe` into a real"
               " Redmine, then the next reply to that ticket", trees)
        redmine = PrivateRedmine(free_port(), state=STATE).start()
        results: dict[str, list[dict]] = {tree.name: [] for tree in trees}
        try:
            for _ in range(args.rounds):
                for tree in trees:
                    results[tree.name].append(one_run(tree, redmine, size, work))
        finally:
            redmine.stop()
    rows = []
    for tree in trees:
        runs = results[tree.name]
        last = runs[-1]
        rows.append((tree.name, f"{median(r['seconds'] for r in runs):.1f} s",
                     f"{median(r['rss'] for r in runs) / MB:.0f} MB",
                     f"{median(r['redmine'] for r in runs) / MB:.0f} MB",
                     f"{median(r['next'] for r in runs):.2f} s",
                     f"{last['note']:,}", last["files"]))
    table(rows, ("code", "25 MB reply: pipe", "pipe peak RSS", "Redmine RSS rise",
                 "next reply: pipe", "note kept (chars)", "files kept"))
    if len(trees) == 2:
        new, old = (results[t.name] for t in trees)
        for key, what in (("redmine", "Redmine's RSS rise"), ("next", "next reply's time"),
                          ("rss", "pipe peak RSS"), ("seconds", "25 MB reply's time")):
            ratio(f"{what}, {trees[0].name} / {trees[1].name}",
                  median(r[key] for r in new) / max(median(r[key] for r in old), 1e-9))


if __name__ == "__main__":
    main()
