"""C. The pipe transport, per message, on the spool-and-exit path; in one run.

    python bench/c_pipe.py [--runs 25] [--compare REF] [--base REF]

Times one process per message, as an MTA runs it (stdin = the mail), against:

  python -c pass          the interpreter alone
  heavy imports           python -c "import aiosmtpd.smtp, mailparser, dkim, yaml, requests,
                          transitions" (those installed)
  mailgate pipe           python -m mailgate pipe --config C --recipient site-a@example.org
                          with Redmine at a closed port: the mail is spooled, the
                          immediate attempt is refused at once, exit 0 "spooled as N"
  mailgate pipe --queue-only  the spool-and-exit path (when the code's `pipe --help`
                          offers it): the mail is spooled, the worker applies it

The mailgate commands run the working tree's code, and with --compare REF also
REF's, exported with git archive (bench/_common.py: export_ref), in the same
rounds; the ratios working tree / REF are printed.  --base REF measures REF
in place of the working tree (--base HEAD --compare HEAD~1: two commits).

Every child gets bytecode caches (PYTHONPYCACHEPREFIX, as an installed package
has .pyc files; this environment sets PYTHONDONTWRITEBYTECODE, which would
make every run compile mailgate from source).  Rounds interleave the
contenders; the median per contender is kept.  Then -X importtime says what
the pipe imports, by top-level package.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from importlib.util import find_spec
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (MAIL_FIXTURES, add_compare_option, bench_config, code_trees,  # noqa: E402
                     header, median, ratio, table, tree_env)
from support.processes import closed_url  # noqa: E402

HEAVY = ("aiosmtpd.smtp", "mailparser", "dkim", "yaml", "requests", "transitions")


def run(command: list[str], stdin: bytes | None, env: dict,
        timeout: float = 60) -> subprocess.CompletedProcess:
    # cwd: not the repository, whose mailgate/ `python -m` would put first on sys.path.
    return subprocess.run(command, input=stdin, capture_output=True, env=env, timeout=timeout,
                          cwd=tempfile.gettempdir())


def timed(command: list[str], stdin: bytes | None, env: dict) -> float:
    started = time.perf_counter()
    result = run(command, stdin, env)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{command[:4]} exited {result.returncode}: {result.stderr[-400:]}")
    return seconds


def import_profile(command: list[str], stdin: bytes, env: dict) -> Counter:
    result = run(command[:1] + ["-X", "importtime"] + command[1:], stdin, env)
    by_package: Counter = Counter()
    for line in result.stderr.decode().splitlines():
        found = re.match(r"import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)", line)
        if found:
            by_package[found.group(2).split(".")[0]] += int(found.group(1))
    return by_package


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=25, help="timed runs per contender")
    add_compare_option(parser)
    args = parser.parse_args()
    py = sys.executable
    heavy = [m for m in HEAVY if find_spec(m.split(".")[0]) is not None]
    heavy_name = f"import {', '.join(heavy)}"
    with tempfile.TemporaryDirectory(prefix="bench-c-") as tmp:
        work = Path(tmp)
        trees = code_trees(args, work)
        header("C. Pipe transport per message (spool-and-exit), one process per mail", trees)
        config = bench_config(work / "mailgate.yaml", closed_url())
        mail = (MAIL_FIXTURES / "owner-reply.eml").read_bytes().replace(b"ticket1@", b"site-a@")
        extra = {"PYTHONPYCACHEPREFIX": str(work / "pycache"), "MAILGATE_LOG_LEVEL": "WARNING"}
        env = tree_env(extra=extra)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        pipe = [py, "-m", "mailgate", "pipe", "--config", str(config),
                "--recipient", "site-a@example.org", "--sender", "owner@example.org"]
        contenders: dict[str, tuple[list[str], bytes | None, dict]] = {
            "python -c pass": ([py, "-c", "pass"], None, env),
            heavy_name: ([py, "-c", f"import {', '.join(heavy)}"], None, env),
        }
        for tree in trees:
            tenv = tree_env(tree, extra)
            tenv.pop("PYTHONDONTWRITEBYTECODE", None)
            contenders[f"mailgate pipe{tree.label}"] = (pipe, mail, tenv)
            usage = run([py, "-m", "mailgate", "pipe", "--help"], None, tenv).stdout
            if b"--queue-only" in usage:
                contenders[f"mailgate pipe --queue-only{tree.label}"] = (
                    pipe + ["--queue-only"], mail, tenv)
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
    ratio("mailgate pipe / heavy imports", ms["mailgate pipe"] / ms[heavy_name])
    for tree in trees[1:]:
        for command in ("mailgate pipe", "mailgate pipe --queue-only"):
            if command in ms and command + tree.label in ms:
                ratio(f"{command} ms: {trees[0].name} / {tree.name}",
                      ms[command] / ms[command + tree.label])
        for name in [n for n in ms if n.endswith(tree.label) and n.startswith("mailgate")]:
            ratio(f"{name} / python -c pass", ms[name] / base)
    print(f"per message: mailgate pipe {ms['mailgate pipe']:.0f} ms (target <= 60 ms)")
    if "mailgate pipe --queue-only" in ms:
        ratio("mailgate pipe / python -c pass", ms["mailgate pipe"] / base)
        ratio("mailgate pipe --queue-only / python -c pass",
              ms["mailgate pipe --queue-only"] / base, "<= 6: 60 ms where pass is 10 ms")
    else:
        ratio("mailgate pipe / python -c pass", ms["mailgate pipe"] / base,
              "<= 6: 60 ms where pass is 10 ms")


if __name__ == "__main__":
    main()
