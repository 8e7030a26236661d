"""Child processes: their environment, free ports, and servers started as their own
process (``mailgate serve`` among them) that are ready once they listen."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def child_env(extra: dict | None = None, python_path: Path | None = None) -> dict:
    """The environment for a child ``mailgate``: only the MAILGATE_* settings given in
    ``extra``, and ``python_path`` (a tree of the code) first on its PYTHONPATH.

    The MAILGATE_* that scripts/test exports (the real Redmine) would override every
    config file.  A child that runs ``python -m mailgate`` with a ``python_path`` needs
    a cwd outside the repository: ``-m`` puts the cwd first on sys.path, before it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILGATE_")}
    if python_path is not None:
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(python_path), env.get("PYTHONPATH")]))
    return {**env, **(extra or {})}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def closed_url() -> str:
    """An HTTP URL nothing listens on: a client never gets an answer there."""
    return f"http://127.0.0.1:{free_port()}"


def wait_port(port: int, timeout: float = 20.0, process: subprocess.Popen | None = None) -> None:
    """Return once something listens on 127.0.0.1:port; RuntimeError after ``timeout``
    seconds, or as soon as ``process`` (the server expected there) has exited."""
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


class ListeningProcess:
    """A server as its own process, its output in ``log``: started, ready once it
    listens on 127.0.0.1:``port``, stopped with SIGTERM as an operator would.

    As a context manager it kills whatever is still running at the end, so a failed
    test or bench never leaves a server behind."""

    def __init__(self, command: list[str], port: int, log: Path, *, env: dict | None = None,
                 cwd: Path | None = None, timeout: float = 20.0):
        self.command, self.port, self.log = command, port, log
        self.env, self.cwd, self.timeout = env, cwd, timeout
        self.process: subprocess.Popen | None = None

    def start(self) -> "ListeningProcess":
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=log,
                                            env=self.env if self.env is not None else child_env(),
                                            cwd=self.cwd)
        try:
            wait_port(self.port, self.timeout, self.process)
        except RuntimeError as exc:
            tail = self.log.read_text(errors="replace")[-1500:]
            raise RuntimeError(f"{exc}; {self.log} ends:\n{tail}") from None
        return self

    def __enter__(self) -> "ListeningProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def kill9(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self, timeout: float = 40) -> int:
        """SIGTERM, then its exit status; a server that does not stop within ``timeout``
        seconds is an error (subprocess.TimeoutExpired), not something to hide."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)


class ServeProcess(ListeningProcess):
    """``mailgate serve --config CONFIG --smtp 127.0.0.1:PORT [ARGS]`` as its own process,
    as an operator runs it (and kill -9s it)."""

    def __init__(self, config: Path, port: int, log: Path, *args: str, env: dict | None = None,
                 cwd: Path | None = None, timeout: float = 20.0):
        self.config = config
        super().__init__([sys.executable, "-m", "mailgate", "serve", "--config", str(config),
                          "--smtp", f"127.0.0.1:{port}", *args], port, log,
                         env=env, cwd=cwd, timeout=timeout)
