"""A real mailgate listener running in a thread of the test process, on free ports."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from mailgate.config import load_config
from mailgate.gateway import build_gateway
from mailgate.serve import serve
from support.processes import free_port


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

    @property
    def loop_thread(self) -> threading.Thread:
        """The thread the listeners' event loop runs in."""
        return self._thread

    def __enter__(self) -> "RunningGateway":
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("mailgate serve did not start")
        return self

    def __exit__(self, *exc) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(40)
