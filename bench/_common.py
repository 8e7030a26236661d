"""What the benchmarks share: the repository on sys.path, configs, ports, and how results print.

Every bench runs its contenders side by side in one run, on this machine, and
prints a table and then its ratios; the ratio the issue asks about comes LAST.
"""

from __future__ import annotations

import os
import platform
import socket
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

MAIL_FIXTURES = ROOT / "fixtures" / "mail"


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
    """The tests' gateway config (tests/servers.py), with a real server's limits."""
    from tests.servers import write_config as tests_config

    server = {"hostname": "mailgate.bench", "max_message_size": 26214400, "max_recipients": 50}
    redmine = {"timeout": 10}
    return tests_config(path, url, api_key, **{"server": server, "redmine": redmine,
                                                **overrides})


def child_env(extra: dict | None = None) -> dict:
    """The tests' child environment (no MAILGATE_*), with the repository importable."""
    from tests.helpers import child_env as tests_env

    env = tests_env()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return {**env, **(extra or {})}


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
    """Other heavy processes (test runs) that would share our two cores: said, not hidden."""
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


def revision() -> str:
    """The commit measured, and whether mailgate's code differs from it (others edit it)."""
    import subprocess

    def git(*args):
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True,
                              text=True).stdout.rstrip("\n")

    dirty = git("status", "--porcelain", "--", "mailgate", "handlers", "workflow")
    return git("rev-parse", "--short", "HEAD") + (
        f" + uncommitted changes in {', '.join(sorted(set(l[3:] for l in dirty.splitlines())))}"
        if dirty else "")


def header(title: str) -> None:
    print(f"# {title}")
    print(f"# machine: {machine()}")
    print(f"# code: {revision()}")
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
