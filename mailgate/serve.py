"""``mailgate serve``: the SMTP/LMTP listeners, the IMAP mailboxes and the spool worker in
one process.

Start-up checks what would otherwise fail on every mail (the API key, the
status names) and stops with exit 78 when the configuration is wrong.  On
SIGTERM or SIGINT it stops accepting connections, lets transactions already
in DATA finish (their mail is then safely spooled), stops each queue's
runner after the item in hand, and exits.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time

from mailgate.config import parse_listen
from mailgate.errors import ListenFailed, RedmineUnavailable
from mailgate.gateway import Gateway
from mailgate.ops.httpd import start_http
from mailgate.intake.ratelimit import StoreRateLimiter
from mailgate.intake.smtp import GatewayHandler, smtp_factory
from mailgate.intake.spool_writer import SpoolWriter

log = logging.getLogger("mailgate.serve")
SHUTDOWN_GRACE = 30.0


def check_startup(gateway: Gateway) -> bool:
    """Fail fast on configuration errors; a Redmine that is down is only a warning
    (and /healthz is red until it is reached).  Says where everything is."""
    config = gateway.config
    store = config.store
    log.info("spool: %s", f"PostgreSQL {_without_password(store.url)}" if store.url
             else f"SQLite {store.path}")
    log.info("Redmine: %s", config.redmine.url)
    try:
        user = gateway.client.current_user()
        gateway.facts.status_ids
    except RedmineUnavailable as exc:
        log.warning("Redmine is unreachable at start-up (mail will be spooled): %s", exc)
        gateway.metrics.redmine_unreached(exc)
        return False
    log.info("Redmine ok: acting with the key of %s", user.login)
    return True


def reach_redmine(gateway: Gateway, stop: threading.Event, every: float = 15.0) -> None:
    """After a start-up that could not reach Redmine: try again until it answers, so
    /healthz turns green without waiting for a mail to prove it."""
    while not stop.wait(every):
        try:
            gateway.client.current_user()
        except RedmineUnavailable:
            continue
        except Exception:   # noqa: BLE001 - a probe; the worker reports real errors
            log.exception("Redmine check failed")
            continue
        gateway.metrics.redmine_ok()
        log.info("Redmine reached")
        return


def _without_password(url: str) -> str:
    """A PostgreSQL URL fit for a log line."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


async def serve(gateway: Gateway, smtp: str | None, lmtp: str | None,
                ready: threading.Event | None = None, stop: asyncio.Event | None = None,
                run_worker: bool = True, metrics: str | None = None,
                redmine_reached: bool = True) -> None:
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(signum, stop.set)
        except (ValueError, RuntimeError):  # not the main thread (tests)
            pass
    worker_stop = threading.Event()
    handlers, servers = [], []
    per_sender = gateway.config.limits.per_sender
    # One limiter for both listeners, counted at MAIL FROM (not again in receive); its
    # buckets in the store, shared with `mailgate pipe` and the other hosts on it.
    sender_limit = StoreRateLimiter.for_limit(gateway.config.store, per_sender) \
        if per_sender else None
    # One spool writer for both listeners: their mails share its commits.
    writer = SpoolWriter(gateway.intake, loop, on_spooled=gateway.worker.wake.set)
    for listen, lmtp_mode in ((smtp, False), (lmtp, True)):
        if not listen:
            continue
        handler = GatewayHandler(gateway, writer, lmtp=lmtp_mode, sender_limit=sender_limit)
        host, port = parse_listen(listen, "--lmtp" if lmtp_mode else "--smtp")
        factory = smtp_factory(handler, gateway.config.hostname,
                               gateway.config.max_message_size, loop)
        try:
            server = await loop.create_server(factory, host, port)
        except OSError as exc:
            raise ListenFailed(f"cannot listen on {host}:{port}: {exc.strerror}") from None
        handlers.append(handler)
        servers.append(server)
        log.info("%s listening on %s:%d", "LMTP" if lmtp_mode else "SMTP", host, port)
    # Every address is bound before any thread starts: a port in use ends serve here.
    writer.start()
    http = start_http(gateway, metrics) if metrics else None
    if run_worker:
        start_runners(gateway, worker_stop)
    if not redmine_reached:
        threading.Thread(target=reach_redmine, args=(gateway, worker_stop), name="redmine-check",
                         daemon=True).start()
    # The IMAP mailboxes: a source, like the listeners (mailgate.intake.imap_watch).
    for watcher in gateway.mailbox_watchers:
        watcher.start(worker_stop)
        log.info("IMAP: watching %s (%s@%s)", watcher.box.name, watcher.box.user,
                 watcher.box.host)
    if ready:
        ready.set()
    await stop.wait()
    log.info("shutting down: no new connections")
    for server in servers:
        server.close()
    await _drain(handlers)
    await asyncio.to_thread(writer.close)
    worker_stop.set()
    await asyncio.to_thread(_stop_watchers, gateway)
    if run_worker:
        await asyncio.to_thread(stop_runners, gateway)
    if http is not None:
        http.shutdown()
    log.info("stopped")


def start_runners(gateway: Gateway, stop: threading.Event) -> None:
    """Every queue's runner, and the periodic sweep, each in a thread of its own."""
    for runner in gateway.runners():
        runner.start(stop)
    threading.Thread(target=_sweep_forever, args=(gateway, stop), name="sweep",
                     daemon=True).start()


def stop_runners(gateway: Gateway) -> None:
    """After ``stop`` is set: wake each runner and let it finish the item in hand."""
    runners = gateway.runners()
    for runner in runners:
        runner.wake.set()
    deadline = time.monotonic() + SHUTDOWN_GRACE
    for runner in runners:
        runner.join(max(0.0, deadline - time.monotonic()))


def _stop_watchers(gateway: Gateway) -> None:
    """After ``stop`` is set: each mailbox watcher files the batch in hand and logs out."""
    deadline = time.monotonic() + SHUTDOWN_GRACE
    for watcher in gateway.mailbox_watchers:
        watcher.wake.set()
    for watcher in gateway.mailbox_watchers:
        watcher.join(max(0.0, deadline - time.monotonic()))


def _sweep_forever(gateway: Gateway, stop: threading.Event) -> None:
    from mailgate.ops.sweep import sweep

    while not stop.wait(gateway.config.sweep_interval):
        try:
            sweep(gateway)
        except Exception:  # a failed sweep is retried at the next interval
            log.exception("sweep failed")


async def _drain(handlers: list[GatewayHandler]) -> None:
    deadline = time.monotonic() + SHUTDOWN_GRACE
    while any(h.in_flight for h in handlers) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
