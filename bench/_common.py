"""What the benchmarks share: the code under test, configs, ports, and how results print.

Every bench runs its contenders side by side in one run, on this machine, and
prints a table and then its ratios; the ratio the issue asks about comes LAST.

The code under test is the working tree (or ``--base REF``), and with
``--compare REF`` also REF's packages, exported with ``git archive`` into a
temporary directory (:func:`export_ref`).  A child process measures one tree: :func:`child_env`
puts that tree first on its ``PYTHONPATH`` and names it in ``BENCH_TREE``,
which this module puts first on ``sys.path`` when a bench script is the child.
Nothing here patches mailgate: the benches run it through its command line
and its public functions.

This module imports nothing from tests/ and tests/ import nothing from it.
``write_config`` and ``child_env`` are bench's own copies of the helpers of
the same names in tests/servers.py and tests/helpers.py (kept in step by hand).
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: The tree whose mailgate this process measures: the working tree unless a parent
#: bench started us on an exported ref (child_env(tree=...)).
TREE = Path(os.environ.get("BENCH_TREE") or ROOT)
if str(TREE) not in sys.path:
    sys.path.insert(0, str(TREE))
if TREE != ROOT:
    # The venv's editable install adds a finder (after PYTHONPATH's) that maps mailgate.*
    # to the working tree: a module the exported ref lacks would come from there.
    sys.meta_path[:] = [finder for finder in sys.meta_path
                        if not getattr(finder, "__module__", "").startswith("__editable__")]

MAIL_FIXTURES = ROOT / "fixtures" / "mail"
#: The top-level packages of the project: what export_ref takes from a ref.
PACKAGES = ("mailgate", "handlers", "workflow")


# -- the code under test ------------------------------------------------------------------

def git(*args: str, check: bool = True) -> str:
    out = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
    if check and out.returncode != 0:
        raise SystemExit(f"git {' '.join(args)}: {out.stderr.strip()}")
    return out.stdout.rstrip("\n")


@dataclass(frozen=True)
class Tree:
    """One version of the code: the working tree, or a ref exported by export_ref."""

    label: str          # "" for the first tree measured, " @REF" for --compare REF
    path: Path
    description: str    # for the header
    name: str           # in ratios: "working tree", or the ref


def export_ref(ref: str, dest: Path, label: str | None = None) -> Tree:
    """REF's packages (mailgate, handlers, workflow), as committed, under dest/."""
    commit = git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False)
    if not commit:
        raise SystemExit(f"{ref}: not a commit in {ROOT}")
    in_ref = set(git("ls-tree", "--name-only", commit).splitlines())
    packages = [p for p in PACKAGES if p in in_ref]
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", commit, "--",
                              *packages], capture_output=True, check=True).stdout
    dest.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    subject = git("log", "-1", "--format=%h %s", commit)
    return Tree(f" @{ref}" if label is None else label, dest,
                f"{ref} = {subject[:90]} (git archive in {dest})", ref)


def working_tree() -> Tree:
    return Tree("", ROOT, "working tree: " + revision(), "working tree")


def add_compare_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--compare", metavar="REF",
                        help="also measure the code at git ref REF (exported with git archive)"
                        " side by side, in the same run, and print the ratios")
    parser.add_argument("--base", metavar="REF",
                        help="measure REF (exported with git archive) instead of the working"
                        " tree: --base HEAD --compare HEAD~1 compares two commits")


def code_trees(args: argparse.Namespace, work: Path) -> list[Tree]:
    """The code to measure: the working tree (or --base REF), then --compare REF if given,
    each exported under work/.  The first one's contenders carry no label."""
    base = getattr(args, "base", None)
    trees = [export_ref(base, work / "base", label="") if base else working_tree()]
    if getattr(args, "compare", None):
        trees.append(export_ref(args.compare, work / "compare"))
    return trees


def revision() -> str:
    """The commit checked out, and whether mailgate's code differs from it (others edit it)."""
    dirty = git("status", "--porcelain", "--", *PACKAGES, check=False)
    files = sorted(set(line[3:] for line in dirty.splitlines()))
    return git("rev-parse", "--short", "HEAD", check=False) + (
        f" + uncommitted changes in {', '.join(files)}" if files else "")


def child_env(extra: dict | None = None, tree: Tree | Path | None = None) -> dict:
    """A child's environment: no MAILGATE_* (they would override the bench's config), and
    the tree under test (default: the working tree) first on its PYTHONPATH.

    Bench's copy of tests/helpers.py's child_env, plus the tree.  Start children that
    run ``python -m mailgate`` with a cwd outside the repository: ``-m`` puts the cwd
    first on sys.path, where the working tree's mailgate/ would win."""
    path = tree.path if isinstance(tree, Tree) else Path(tree or ROOT)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILGATE_")}
    env.pop("BENCH_TREE", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(path), env.get("PYTHONPATH")]))
    if path != ROOT:
        env["BENCH_TREE"] = str(path)
    return {**env, **(extra or {})}


def public(name: str, *modules: str):
    """A public name of mailgate, from the first of ``modules`` that has it: the benches
    run the code of two refs, and a public function may have moved between them
    (build_gateway and Envelope were in mailgate.dispatch before mailgate.gateway and
    mailgate.intake.receive)."""
    import importlib

    for module in modules:
        try:
            found = importlib.import_module(module)
        except ImportError:
            continue
        if hasattr(found, name) and Path(found.__file__).resolve().is_relative_to(TREE):
            return getattr(found, name)
    raise ImportError(f"{name} is in none of {', '.join(modules)} ({TREE})")


def build_gateway(config_path: Path):
    """The gateway ``mailgate serve`` builds, from a config file (the process's
    environment has no MAILGATE_*: child_env)."""
    from mailgate.config import load_config

    build = public("build_gateway", "mailgate.gateway", "mailgate.dispatch")
    return build(load_config(config_path))


# -- configs, ports ---------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def closed_url() -> str:
    """A Redmine URL nothing listens on: the gateway never gets an answer there."""
    return f"http://127.0.0.1:{free_port()}"


def wait_port(port: int, timeout: float = 20.0, process=None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def write_config(path: Path, url: str, api_key: str = "bench-key", **overrides) -> Path:
    """A gateway config like the tests' (bench's copy of tests/servers.py's write_config),
    with a real server's limits."""
    import yaml

    data = {
        "domains": ["example.org"],
        "redmine": {"url": url, "api_key": api_key, "gateway_user": "gateway",
                    "notification_address": "redmine@example.org", "timeout": 10},
        "admins": ["admin@example.org"],
        "trust": {"trusted_authserv_ids": ["mx.example.org"]},
        "unknown_senders": "accept",
        "sites": {"site-a": {"tracker": "Support"},
                  "site-b": {"tracker": "Support", "unknown_senders": "reject"}},
        "triage": {"project": "triage", "tracker": "Support"},
        "server": {"hostname": "mailgate.bench", "max_message_size": 26214400,
                   "max_recipients": 50},
        "spool": {"path": str(path.parent / "spool.db")},
    }
    for key, value in overrides.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    path.write_text(yaml.safe_dump(data))
    return path


# -- how results print ---------------------------------------------------------------------

def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()},"
            f" {platform.system()} {platform.release()}")


def others_busy() -> list[str]:
    """Other heavy processes (test runs) that would share our cores: said, not hidden."""
    busy = []
    me = os.getpid()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == me:
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "pytest" in cmd and "bench/" not in cmd:
            busy.append(f"{proc.name}: {cmd.strip()[:100]}")
    return busy


def header(title: str, trees: list[Tree] | None = None) -> None:
    print(f"# {title}")
    print(f"# machine: {machine()}")
    for tree in trees or [working_tree()]:
        print(f"# code{tree.label}: {tree.description}")
    for line in others_busy():
        print(f"# WARNING: also running (shares the CPU): {line}")
    sys.stdout.flush()


def median(values) -> float:
    return statistics.median(values)


def table(rows: list[tuple], heads: tuple[str, ...]) -> None:
    cells = [tuple(str(c) for c in heads)] + [tuple(str(c) for c in r) for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(heads))]
    for n, row in enumerate(cells):
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")
        if n == 0:
            print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    sys.stdout.flush()


def ratio(name: str, value: float, target: str = "") -> None:
    print(f"RATIO {name} = {value:.2f}{'  (target ' + target + ')' if target else ''}")
    sys.stdout.flush()
