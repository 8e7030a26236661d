"""C. The pipe transport, per message, on the spool-and-exit path; in one run.

    python bench/c_pipe.py [--runs 25]

Times one process per message, as an MTA runs it (stdin = the mail), against:

  python -c pass          the interpreter alone
  heavy imports           python -c "import aiosmtpd.smtp, mailparser, dkim, yaml, requests,
                          transitions" (those installed)
  mailgate pipe           python -m mailgate pipe --config C --recipient site-a@example.org
                          with Redmine at a closed port: the mail is spooled, the
                          immediate attempt is refused at once, exit 0 "spooled as N"
                          (the packages as committed at HEAD, exported with git archive)
  mailgate pipe --queue-only  the spool-and-exit path as committed since 696ee8f (when
                          HEAD has it): the mail is spooled, the worker applies it
  mailgate pipe (lazy imports)  the same with bench/patches/c-1-lazy-imports.diff applied
                          to that export (requests, dkim, dnspython, prometheus_client,
                          smtplib imported where used)
  mailgate pipe --spool-only (lazy)  and c-2-pipe-spool-only.diff: the proposed
                          spool-and-exit mode, no attempt in-process, so no HTTP client

Every child gets bytecode caches (PYTHONPYCACHEPREFIX, as an installed package
has .pyc files; this environment sets PYTHONDONTWRITEBYTECODE, which would
make every run compile mailgate from source).  Rounds interleave the
contenders; the median per contender is kept.  Then -X importtime says what
the pipe imports, by top-level package.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from importlib.util import find_spec
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (MAIL_FIXTURES, ROOT, child_env, closed_url, header, median,  # noqa: E402
                     ratio, table, write_config)

HEAVY = ("aiosmtpd.smtp", "mailparser", "dkim", "yaml", "requests", "transitions")
PATCHES = sorted((Path(__file__).resolve().parent / "patches").glob("c-*.diff"))


def export_head(tree: Path) -> None:
    """The packages as committed at HEAD (others edit the working tree while we measure)."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "HEAD", "mailgate", "handlers",
                              "workflow"], capture_output=True, check=True).stdout
    tree.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)


def patched_tree(work: Path, patches: list[Path]) -> tuple[Path, list[str]]:
    """HEAD with each patch that applies; says which did not."""
    tree = work / ("patched-" + "-".join(p.stem.split("-")[1] for p in patches))
    export_head(tree)
    skipped = []
    for patch in patches:
        command = ["patch", "-p1", "-s", "-N", "-d", str(tree), "-i", str(patch)]
        if subprocess.run(command + ["--dry-run"], capture_output=True).returncode != 0:
            skipped.append(patch.name)
            continue
        subprocess.run(command, check=True, capture_output=True)
    return tree, skipped


def timed(command: list[str], stdin: bytes | None, env: dict) -> float:
    # cwd: not the repository, whose mailgate/ `python -m` would put first on sys.path.
    started = time.perf_counter()
    result = subprocess.run(command, input=stdin, capture_output=True, env=env, timeout=60,
                            cwd=tempfile.gettempdir())
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{command[:4]} exited {result.returncode}: {result.stderr[-400:]}")
    return seconds


def import_profile(command: list[str], stdin: bytes, env: dict) -> Counter:
    result = subprocess.run(command[:1] + ["-X", "importtime"] + command[1:], input=stdin,
                            capture_output=True, env=env, timeout=60, cwd=tempfile.gettempdir())
    by_package: Counter = Counter()
    for line in result.stderr.decode().splitlines():
        found = re.match(r"import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)", line)
        if found:
            by_package[found.group(2).split(".")[0]] += int(found.group(1))
    return by_package


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=25)
    args = parser.parse_args()
    header("C. Pipe transport per message (spool-and-exit), one process per mail")
    py = sys.executable
    heavy = [m for m in HEAVY if find_spec(m.split(".")[0]) is not None]
    with tempfile.TemporaryDirectory(prefix="bench-c-") as tmp:
        work = Path(tmp)
        config = write_config(work / "mailgate.yaml", closed_url())
        mail = (MAIL_FIXTURES / "owner-reply.eml").read_bytes().replace(b"ticket1@", b"site-a@")
        env = child_env({"PYTHONPYCACHEPREFIX": str(work / "pycache"),
                         "MAILGATE_LOG_LEVEL": "WARNING"})
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        pipe = [py, "-m", "mailgate", "pipe", "--config", str(config),
                "--recipient", "site-a@example.org", "--sender", "owner@example.org"]
        contenders: dict[str, tuple[list[str], bytes | None, dict]] = {
            "python -c pass": ([py, "-c", "pass"], None, env),
            f"import {', '.join(heavy)}": ([py, "-c", f"import {', '.join(heavy)}"], None, env),
        }
        def with_tree(tree: Path) -> dict:
            return {**env, "PYTHONPATH": os.pathsep.join([str(tree), env["PYTHONPATH"]])}

        head = work / "head"
        export_head(head)
        contenders["mailgate pipe"] = (pipe, mail, with_tree(head))
        if "--queue-only" in (head / "mailgate" / "cli.py").read_text():
            # 696ee8f: the spool-and-exit path as committed.
            contenders["mailgate pipe --queue-only"] = (pipe + ["--queue-only"], mail,
                                                       with_tree(head))
        lazy = [p for p in PATCHES if "lazy" in p.name]
        if lazy:
            tree, skipped = patched_tree(work, lazy)
            if not skipped:
                contenders["mailgate pipe (lazy imports)"] = (pipe, mail, with_tree(tree))
            tree, skipped = patched_tree(work, PATCHES)
            if skipped:
                print(f"# not applied to HEAD (already in, or conflicts): {', '.join(skipped)}")
            else:
                contenders["mailgate pipe --spool-only (lazy)"] = (pipe + ["--spool-only"], mail,
                                                                  with_tree(tree))
        for command, stdin, cenv in contenders.values():      # warm the bytecode caches
            for _ in range(2):
                timed(command, stdin, cenv)
        times: dict[str, list[float]] = {name: [] for name in contenders}
        for _ in range(args.runs):
            for name, (command, stdin, cenv) in contenders.items():
                times[name].append(timed(command, stdin, cenv) * 1000)
        ms = {name: median(t) for name, t in times.items()}
        base = ms["python -c pass"]
        print(f"\n{args.runs} runs each, interleaved; wall time per process (ms)")
        table([(name, f"{ms[name]:.1f}", f"{min(times[name]):.1f}", f"{max(times[name]):.1f}",
                f"{ms[name] / base:.1f}") for name in contenders],
              ("command", "median ms", "min", "max", "x python -c pass"))
        print("\nwhat `mailgate pipe` imports (-X importtime, self time by top-level package, ms)")
        for name in [n for n in contenders if n.startswith("mailgate")]:
            command, stdin, cenv = contenders[name]
            profile = import_profile(command, stdin, cenv)
            total = sum(profile.values()) / 1000
            top = ", ".join(f"{k} {v / 1000:.0f}" for k, v in profile.most_common(8))
            print(f"- {name}: {total:.0f} ms in imports; {top}")
    print()
    heavy_name = f"import {', '.join(heavy)}"
    ratio("mailgate pipe / heavy imports", ms["mailgate pipe"] / ms[heavy_name])
    if "mailgate pipe --queue-only" in ms:
        ratio("mailgate pipe --queue-only / python -c pass",
              ms["mailgate pipe --queue-only"] / base, "<= 6: 60 ms where pass is 10 ms")
    for name in [n for n in contenders if "lazy" in n]:
        ratio(f"{name} / python -c pass", ms[name] / base, "<= 6: 60 ms where pass is 10 ms")
    print(f"per message: mailgate pipe {ms['mailgate pipe']:.0f} ms (target <= 60 ms)")
    ratio("mailgate pipe / python -c pass", ms["mailgate pipe"] / base,
          "<= 6: 60 ms where pass is 10 ms")


if __name__ == "__main__":
    main()
