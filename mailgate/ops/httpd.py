"""The small HTTP side of ``serve``: ``/metrics`` (Prometheus) and ``/healthz``."""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mailgate.config import parse_listen
from mailgate.errors import ListenFailed
from mailgate.ops.metrics import health

log = logging.getLogger("mailgate.http")


def start_http(gateway, listen: str) -> ThreadingHTTPServer:
    host, port = parse_listen(listen, "--metrics")
    try:
        server = ThreadingHTTPServer((host, port), _handler(gateway))
    except OSError as exc:
        raise ListenFailed(f"cannot serve /metrics on {host}:{port}: {exc.strerror}") from None
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    log.info("metrics and health on http://%s:%d/", *server.server_address[:2])
    return server


def _handler(gateway):
    config = gateway.config

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/metrics":
                self._send(200, generate_latest(gateway.metrics.registry), CONTENT_TYPE_LATEST)
            elif self.path == "/healthz":
                problems = health(gateway.metrics, gateway.spool,
                                  redmine_alarm=config.redmine_down_alarm,
                                  stuck_alarm=config.spool_stuck_alarm,
                                  runners=gateway.supervised())
                text = "\n".join(problems) if problems else "ok"
                self._send(503 if problems else 200, (text + "\n").encode(), "text/plain")
            else:
                self._send(404, b"not found\n", "text/plain")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format, *args):  # scrapes are not news
            pass

    return Handler
