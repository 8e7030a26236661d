"""Observability for ``serve``: Prometheus metrics and a health check.

The registry belongs to the gateway that made it (no process-wide default
registry), so two gateways in one process, as in tests, never mix figures.
What is expensive to keep up to date (spool depth, oldest mail, Discord's
queue) is read when Prometheus scrapes, by a collector.
"""

from __future__ import annotations

import re
import time
from typing import Iterable
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry(auto_describe=True)
        self.mails = Counter("mailgate_mails", "Mails processed, by outcome",
                             ["outcome"], registry=self.registry)
        self.processing = Histogram("mailgate_processing_seconds", "Time to apply one mail",
                                    buckets=LATENCY_BUCKETS, registry=self.registry)
        self.redmine_latency = Histogram("mailgate_redmine_request_seconds",
                                         "Redmine REST answers, by method", ["method"],
                                         buckets=LATENCY_BUCKETS, registry=self.registry)
        self.redmine_requests = Counter("mailgate_redmine_requests",
                                        "Redmine REST requests, by kind: method, path with"
                                        " ids as :id, and what it included",
                                        ["request"], registry=self.registry)
        self.redmine_errors = Counter("mailgate_redmine_errors",
                                      "Redmine failures, by error class", ["error"],
                                      registry=self.registry)
        self.discord_latency = Histogram("mailgate_discord_request_seconds",
                                         "Discord API answers, by status class", ["status"],
                                         buckets=LATENCY_BUCKETS, registry=self.registry)
        self.imap_mails = Counter("mailgate_imap_mails", "Mails taken from IMAP mailboxes, by"
                                  " mailbox and what became of them (spooled, rejected,"
                                  " deferred: left for the next pass, filed: taken before)",
                                  ["mailbox", "result"], registry=self.registry)
        self.imap_logins = Counter("mailgate_imap_logins", "IMAP logins, by mailbox and result",
                                   ["mailbox", "result"], registry=self.registry)
        self.imap_errors = Counter("mailgate_imap_connection_errors",
                                   "IMAP connections that failed or were lost, by mailbox and"
                                   " stage (connect, connection)", ["mailbox", "stage"],
                                   registry=self.registry)
        self.refusals = Counter("mailgate_smtp_refusals", "SMTP and LMTP answers that refused"
                                " or deferred, by stage (mail: the rate limit, rcpt, data,"
                                " session: a crash) and error", ["stage", "error"],
                                registry=self.registry)
        #: When Redmine last failed us with no success since (time.time()), or None.
        self.redmine_down_since: float | None = None
        #: Why start-up could not reach Redmine, until it is reached.
        self.redmine_never_reached: str | None = None

    def watch_redmine(self, client) -> None:
        """Time every Redmine answer (a requests response hook: no patching)."""
        def observe(response, *args, **kwargs):
            self.redmine_latency.labels(response.request.method).observe(
                response.elapsed.total_seconds())
            self.redmine_requests.labels(request_kind(response.request)).inc()
        client.response_hooks.append(observe)

    def watch_discord(self, client) -> None:
        """Time every Discord answer; 4xx/5xx (429s included) show as their class."""
        def observe(response, *args, **kwargs):
            self.discord_latency.labels(f"{response.status_code // 100}xx").observe(
                response.elapsed.total_seconds())
        client.session.hooks["response"].append(observe)

    def redmine_failed(self, error: Exception) -> None:
        self.redmine_errors.labels(type(error).__name__).inc()
        if self.redmine_down_since is None:
            self.redmine_down_since = time.time()

    def redmine_ok(self) -> None:
        self.redmine_down_since = None
        self.redmine_never_reached = None

    def redmine_unreached(self, error: Exception) -> None:
        """Start-up could not reach Redmine: /healthz is red at once, not after the
        alarm's delay (a gateway that never reached it may be pointed at the wrong place)."""
        self.redmine_failed(error)
        self.redmine_never_reached = str(error)

    def watch_runners(self, gateway) -> None:
        self.registry.register(_QueueCollector(gateway))


class _QueueCollector:
    """Every queue runner's figures, read when Prometheus scrapes, the same for each."""

    def __init__(self, gateway):
        self.gateway = gateway

    def collect(self) -> Iterable[GaugeMetricFamily]:
        spool = self.gateway.spool
        depth = GaugeMetricFamily("mailgate_spool_mails", "Mails in the spool, by state",
                                  labels=["state"])
        for state, count in spool.counts().items():
            depth.add_metric([state], count)
        yield depth
        oldest = spool.oldest_queued()
        yield GaugeMetricFamily("mailgate_spool_oldest_age_seconds",
                                "Age of the oldest mail waiting in the spool",
                                value=time.time() - oldest if oldest else 0.0)
        items = GaugeMetricFamily("mailgate_queue_items",
                                  "Each durable queue: what it holds, and what its runner did"
                                  " since start (run_*), by kind", labels=["queue", "kind"])
        alive = GaugeMetricFamily("mailgate_runner_up", "1 while a queue's runner (or an IMAP"
                                  " mailbox's watcher) is running", labels=["queue"])
        for runner in self.gateway.supervised():
            for kind, count in runner.stats().items():
                if isinstance(count, (int, float)):
                    items.add_metric([runner.name, kind], count)
            alive.add_metric([runner.name], 1.0 if runner.alive else 0.0)
        yield items
        yield alive


def health(metrics: Metrics, spool, *, redmine_alarm: float, stuck_alarm: float,
           runners=(), stall_after: float = 600.0, now: float | None = None) -> list[str]:
    """What is wrong, in words; an empty list means healthy."""
    now = time.time() if now is None else now
    problems = [p for p in (r.health(now, stall_after) for r in runners) if p]
    down = metrics.redmine_down_since
    if metrics.redmine_never_reached:
        problems.append(f"Redmine not reached since start-up: {metrics.redmine_never_reached}")
    elif down is not None and now - down > redmine_alarm:
        problems.append(f"Redmine unreachable for {now - down:.0f} s")
    try:
        oldest = spool.oldest_queued()
    except Exception as exc:    # noqa: BLE001 - the check must answer when the database fails
        return [*problems, f"spool unreadable: {type(exc).__name__}: {exc}"]
    if oldest is not None and now - oldest > stuck_alarm:
        problems.append(f"spool stuck: oldest waiting mail is {now - oldest:.0f} s old")
    return problems


def request_kind(request) -> str:
    """``GET /issues/:id?include=journals,attachments``: a request, without its ids."""
    url = urlsplit(request.url)
    path = re.sub(r"/\d+(?=[./]|$)", "/:id", url.path)
    include = parse_qs(url.query).get("include")
    return f"{request.method} {path}" + (f"?include={include[0]}" if include else "")
