"""A real mailgate listener running in a thread of the test process, on free ports."""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path

import yaml

from mailgate.config import load_config
from mailgate.gateway import build_gateway
from mailgate.serve import serve


#: What our MTA writes on mail whose DKIM signature it verified (trusted in write_config).
VERIFIED = "Authentication-Results: mx.example.org; dkim=pass header.d=example.org"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_config(path: Path, url: str, api_key: str, **overrides) -> Path:
    """A config like the demo's, pointed at the given Redmine, with overrides."""
    data = {
        "domains": ["example.org"],
        "redmine": {"url": url, "api_key": api_key, "gateway_user": "gateway",
                    "notification_address": "redmine@example.org", "timeout": 5},
        "admins": ["admin@example.org"],
        # The tests' SMTP client plays our MTA handing mail over from 127.0.0.1.
        "trust": {"trusted_authserv_ids": ["mx.example.org"], "trusted_relays": ["127.0.0.1"]},
        "unknown_senders": "accept",
        "sites": {"site-a": {"tracker": "Support"},
                  "site-b": {"tracker": "Support", "unknown_senders": "reject"}},
        "triage": {"project": "triage", "tracker": "Support"},
        "server": {"hostname": "mailgate.test", "max_message_size": 200_000,
                   "max_recipients": 3},
        "spool": {"path": str(path.parent / "spool.db")},
    }
    for key, value in overrides.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    path.write_text(yaml.safe_dump(data))
    return path


class RunningGateway:
    """``mailgate serve`` in a background thread: the same code the command runs."""

    def __init__(self, config_path: Path, lmtp: bool = True, metrics: bool = False):
        self.config = load_config(config_path, environ={})
        self.gateway = build_gateway(self.config)
        self.smtp_port = free_port()
        self.lmtp_port = free_port() if lmtp else None
        self.metrics_port = free_port() if metrics else None
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        async def main():
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            lmtp = f"127.0.0.1:{self.lmtp_port}" if self.lmtp_port else None
            metrics = f"127.0.0.1:{self.metrics_port}" if self.metrics_port else None
            await serve(self.gateway, f"127.0.0.1:{self.smtp_port}", lmtp,
                        ready=self._ready, stop=self._stop, metrics=metrics)
        asyncio.run(main())

    def __enter__(self) -> "RunningGateway":
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("mailgate serve did not start")
        return self

    def __exit__(self, *exc) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(40)
