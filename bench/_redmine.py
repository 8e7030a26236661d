"""A Redmine for bench B: a private instance by default, or the team's shared one.

The shared local Redmine (scripts/redmine-local, port 3000) has ONE database
that other engineers' test runs write to, and `scripts/redmine-local reset`
restores it under them.  So by default bench B runs its own instance of the
same Debian Redmine: the same code and configuration (/usr/share/redmine,
/etc/redmine/default, Rack::Lock), started from the same golden seeded
database that `scripts/redmine-local reset` restores, but on a copy of it
(``DATABASE_URL``) and on its own loopback port.  "Reset" is: stop, copy the
golden database again, start (~5 s).

Served two ways (``server``):

* ``webrick``: as scripts/redmine-local serves it, `rackup -s webrick` with
  Rack::Lock: one request at a time.
* ``puma``: Debian's Puma (installed by scripts/redmine-local), 2 worker processes of 4
  threads each, with bench/redmine_puma.ru in place of Redmine's config.ru: no
  Rack::Lock, reads side by side, writes one at a time through a lock file (Rails
  6.1 on SQLite answers concurrent writes with 500 "database is locked"), the
  database in WAL mode so that reads do not wait for a write.  Puma is not in
  Redmine's Gemfile: a Gemfile of our own (``BUNDLE_GEMFILE``, in the state
  directory) takes Redmine's and adds it.  ``--shared`` uses scripts/redmine-local
itself (port 3000, `reset` between the halves) when nobody else needs it.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import time
import urllib.request
from pathlib import Path

from _common import ROOT

REDMINE_DIR = Path("/usr/share/redmine")
GOLDEN = Path("/var/lib/mailgate-redmine/golden.sqlite3")
STATE = Path("/var/lib/mailgate-bench-redmine")
ADMIN_KEY = "0000000000000000000000000000000000000a11"
PUMA_RACKUP = Path(__file__).resolve().parent / "redmine_puma.ru"
PUMA_WORKERS, PUMA_THREADS = 2, 4


def _bundler_version() -> str:
    out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "ruby-bundler"],
                         capture_output=True, text=True).stdout
    version = out.split(":")[-1].split("-")[0].split("+")[0]
    return version or "2.3.15"


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/login", timeout=3) as response:
            return response.status < 500
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except OSError:
        return False


class PrivateRedmine:
    def __init__(self, port: int, server: str = "webrick", state: Path = STATE):
        """``server``: webrick or puma (above); ``state``: the directory of its database
        (a bench of its own may run beside bench B with another one)."""
        if server not in ("webrick", "puma"):
            raise ValueError(f"no such server {server!r}")
        self.server = server
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.api_key = ADMIN_KEY
        self.process: subprocess.Popen | None = None
        self.state = state
        # A file per instance: two benches running at once must not share one.
        self.db = state / f"redmine-{port}.sqlite3"
        #: Its output and its Rails log (requests, their time and allocations).
        self.log_path = Path(f"/tmp/mailgate-bench-redmine-{port}.log")

    def start(self) -> "PrivateRedmine":
        if not GOLDEN.exists():
            raise SystemExit(f"no {GOLDEN}: run scripts/redmine-local start once first")
        self.state.mkdir(mode=0o750, exist_ok=True)
        self._remove_db()
        shutil.copyfile(GOLDEN, self.db)
        shutil.chown(self.state, "www-data", "www-data")
        shutil.chown(self.db, "www-data", "www-data")
        log = open(self.log_path, "ab")
        # RAILS_LOG_TO_STDOUT: the Rails log in this file too, not in the shared
        # production.log (bench/_redmine_log.py reads it).
        env = ["env", "-i", "PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/var/www",
               "LANG=C.UTF-8", "RAILS_ENV=production", f"BUNDLER_VERSION={_bundler_version()}",
               f"DATABASE_URL=sqlite3:{self.db}", "RAILS_LOG_TO_STDOUT=1"]
        # setsid, setpriv and env all exec: self.process.pid is the server's process.
        self.process = subprocess.Popen(
            ["setsid", "setpriv", "--reuid=www-data", "--regid=www-data", "--init-groups",
             *env, *(self._puma() if self.server == "puma" else self._webrick())],
            cwd=REDMINE_DIR, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        deadline = time.monotonic() + 120
        while not _answers(self.url):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"private Redmine did not start; see {log.name}")
            time.sleep(0.2)
        return self

    def describe(self) -> str:
        if self.server == "puma":
            return (f"Puma, {PUMA_WORKERS} processes x {PUMA_THREADS} threads, reads side by"
                    " side, writes one at a time (SQLite, WAL)")
        return "WEBrick, one request at a time (Rack::Lock), SQLite"

    def _webrick(self) -> list[str]:
        return ["rackup", "-s", "webrick", "-o", "127.0.0.1", "-p", str(self.port),
                "-E", "production", "config.ru"]

    def _puma(self) -> list[str]:
        if shutil.which("puma") is None:
            raise SystemExit("--redmine puma needs Debian's Puma, which scripts/redmine-local"
                             " start installs with Redmine")
        home = self.state / f"puma-{self.port}"
        home.mkdir(mode=0o750, exist_ok=True)
        (home / "Gemfile").write_text(f'eval_gemfile "{REDMINE_DIR}/Gemfile"\ngem "puma"\n')
        shutil.copyfile(PUMA_RACKUP, home / "config.ru")    # www-data may not read ours
        for path in (home, home / "Gemfile", home / "config.ru"):
            shutil.chown(path, "www-data", "www-data")
        with sqlite3.connect(self.db) as db:
            db.execute("PRAGMA journal_mode=WAL")
        for suffix in ("-wal", "-shm"):
            if Path(f"{self.db}{suffix}").exists():
                shutil.chown(f"{self.db}{suffix}", "www-data", "www-data")
        return [f"BUNDLE_GEMFILE={home / 'Gemfile'}", f"REDMINE_WRITE_LOCK={home / 'write.lock'}",
                "puma", "-w", str(PUMA_WORKERS), "-t", f"{PUMA_THREADS}:{PUMA_THREADS}",
                "-b", f"tcp://127.0.0.1:{self.port}", "-e", "production",
                str(home / "config.ru")]

    def stop(self) -> None:
        self._halt()
        shutil.rmtree(self.state / f"puma-{self.port}", ignore_errors=True)

    def _halt(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                # Its own session (setsid): Puma's workers go with their master.
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self.process = None
        self._remove_db()

    def _remove_db(self) -> None:
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{self.db}{suffix}").unlink(missing_ok=True)

    def reset(self) -> None:
        self._halt()
        self.start()


class SharedRedmine:
    """scripts/redmine-local on port 3000: `reset` restores the golden database."""

    def __init__(self):
        self.url = "http://127.0.0.1:3000"
        self.api_key = ADMIN_KEY
        #: The Rails log it shares with every other user of scripts/redmine-local.
        self.log_path = Path("/var/log/redmine/default/production.log")

    def _run(self, command: str) -> None:
        out = subprocess.run([str(ROOT / "scripts" / "redmine-local"), command],
                             capture_output=True, text=True, timeout=300)
        if out.returncode != 0:
            raise RuntimeError(f"scripts/redmine-local {command}: {out.stderr[-500:]}")
        for line in out.stdout.splitlines():
            key, _, value = line.partition("=")
            if key == "MAILGATE_REDMINE_URL":
                self.url = value
            elif key == "MAILGATE_REDMINE_API_KEY":
                self.api_key = value

    def start(self) -> "SharedRedmine":
        self._run("start")
        return self

    def reset(self) -> None:
        self._run("reset")

    def stop(self) -> None:
        pass

    def describe(self) -> str:
        return "scripts/redmine-local (WEBrick, one request at a time)"


def environ_without_proxy() -> dict:
    return {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
