"""``mailgate serve``: the SMTP/LMTP listeners and the spool worker in one process.

Start-up checks what would otherwise fail on every mail (the API key, the
status names) and stops with exit 78 when the configuration is wrong.  On
SIGTERM or SIGINT it stops accepting connections, lets transactions already
in DATA finish (their mail is then safely spooled), stops the worker after
the mail in hand, and exits.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time

from .dispatch import Gateway
from .errors import RedmineUnavailable
from .smtp import GatewayHandler, smtp_factory
from .worker import Worker

log = logging.getLogger("mailgate.serve")
SHUTDOWN_GRACE = 30.0


def parse_listen(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host or "127.0.0.1", int(port)


def check_startup(gateway: Gateway) -> None:
    """Fail fast on configuration errors; a Redmine that is down is only a warning."""
    try:
        user = gateway.client.current_user()
        gateway.facts.status_ids
    except RedmineUnavailable as exc:
        log.warning("Redmine is unreachable at start-up (mail will be spooled): %s", exc)
        return
    log.info("Redmine ok: acting with the key of %s", user.login)


async def serve(gateway: Gateway, smtp: str | None, lmtp: str | None,
                ready: threading.Event | None = None, stop: asyncio.Event | None = None,
                run_worker: bool = True) -> None:
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(signum, stop.set)
        except (ValueError, RuntimeError):  # not the main thread (tests)
            pass
    worker = Worker(gateway)
    worker_stop = threading.Event()
    handlers, servers = [], []
    for listen, lmtp_mode in ((smtp, False), (lmtp, True)):
        if not listen:
            continue
        handler = GatewayHandler(gateway, lmtp=lmtp_mode, on_spooled=worker.wake.set)
        host, port = parse_listen(listen)
        factory = smtp_factory(handler, gateway.config.hostname,
                               gateway.config.max_message_size, loop)
        server = await loop.create_server(factory, host, port)
        handlers.append(handler)
        servers.append(server)
        log.info("%s listening on %s:%d", "LMTP" if lmtp_mode else "SMTP", host, port)
    thread = threading.Thread(target=worker.run_forever, args=(worker_stop,),
                              name="spool-worker", daemon=True)
    if run_worker:
        thread.start()
    if ready:
        ready.set()
    await stop.wait()
    log.info("shutting down: no new connections")
    for server in servers:
        server.close()
    await _drain(handlers)
    worker_stop.set()
    worker.wake.set()
    if run_worker:
        await asyncio.to_thread(thread.join, SHUTDOWN_GRACE)
    log.info("stopped")


async def _drain(handlers: list[GatewayHandler]) -> None:
    deadline = time.monotonic() + SHUTDOWN_GRACE
    while any(h.in_flight for h in handlers) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
