"""What the benchmarks share: the code under test, their config, and how results print.

Every bench runs its contenders side by side in one run, on this machine, and
prints a table and then its ratios; the ratio the issue asks about comes LAST.

The code under test is the working tree (or ``--base REF``), and with
``--compare REF`` also REF's packages, exported with ``git archive`` into a
temporary directory (:func:`export_ref`).  A child process measures one tree: :func:`tree_env`
puts that tree first on its ``PYTHONPATH`` and names it in ``BENCH_TREE``,
which this module puts first on ``sys.path`` when a bench script is the child.
Nothing here patches mailgate: the benches run it through its command line
and its public functions.

What bench shares with tests/ (configs, child environments, ports, servers
started as their own process) is in support/, which both import; bench and
tests never import each other (tests/test_layout.py checks it).  This module
puts the repository on ``sys.path`` for support/, after the tree under test.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: The tree whose mailgate this process measures: the working tree unless a parent
#: bench started us on an exported ref (tree_env(tree)).
TREE = Path(os.environ.get("BENCH_TREE") or ROOT)
if str(TREE) not in sys.path:
    sys.path.insert(0, str(TREE))
if str(ROOT) not in sys.path:
    # For support/ only, so last: mailgate, handlers and workflow come from TREE.
    sys.path.append(str(ROOT))
if TREE != ROOT:
    # The venv's editable install adds a finder (after PYTHONPATH's) that maps mailgate.*
    # to the working tree: a module the exported ref lacks would come from there.
    sys.meta_path[:] = [finder for finder in sys.meta_path
                        if not getattr(finder, "__module__", "").startswith("__editable__")]

from support.configs import write_config  # noqa: E402  (after the sys.path set-up above)
from support.processes import child_env  # noqa: E402

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


def tree_env(tree: Tree | Path | None = None, extra: dict | None = None) -> dict:
    """The environment of a child that runs ``tree`` (default: the working tree):
    support's child_env with the tree first on its PYTHONPATH and named in BENCH_TREE.

    Start children that run ``python -m mailgate`` with a cwd outside the repository:
    ``-m`` puts the cwd first on sys.path, where the working tree's mailgate/ would win."""
    path = tree.path if isinstance(tree, Tree) else Path(tree or ROOT)
    env = child_env(python_path=path)
    env.pop("BENCH_TREE", None)
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
    environment has no MAILGATE_*: tree_env)."""
    from mailgate.config import load_config

    build = public("build_gateway", "mailgate.gateway", "mailgate.dispatch")
    return build(load_config(config_path))


# -- the config ------------------------------------------------------------------------------

def bench_config(path: Path, url: str, api_key: str = "bench-key", **overrides) -> Path:
    """support's test config with a real server's limits: bench sends 1 MB and 25 MB
    mails over 20 sessions, and waits longer for a loaded Redmine."""
    server = {"hostname": "mailgate.bench", "max_message_size": 26214400, "max_recipients": 50}
    return write_config(path, url, api_key, **{"redmine": {"timeout": 10}, "server": server,
                                               **overrides})


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
