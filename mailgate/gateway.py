"""The wiring: one ``Gateway`` holds the parts a running mailgate is made of.

* ``intake`` (mailgate.intake.receive): what every source calls before answering;
* ``processor`` (mailgate.processing): plans and applies one spooled mail;
* the durable queues and their runners (mailgate.runner): the spool, the
  Redmine watcher (with ``watch:``), the Discord threads read back (with
  ``discord.read``), the Discord fan-out, the notice outbox.

``build_gateway`` makes it from the configuration, once; nothing else reads
the configuration file.
"""

from __future__ import annotations

from functools import cached_property

from mailgate.config import Config
from mailgate.intake.receive import Delivery, Envelope, Intake
from mailgate.outcome import Outcome
from mailgate.store import open_spool
from mailgate.store.spool import Spool, SpooledMail

__all__ = ["Delivery", "Envelope", "Gateway", "build_gateway", "build_queue_only_gateway"]


class Gateway:
    def __init__(self, config: Config, client, spool: Spool, facts=None, fanout=None,
                 notifier=None):
        self.config = config
        self.client = client
        self.spool = spool
        #: mailgate.outbound.fanout.Fanout, when Discord is configured.
        self.fanout = fanout
        #: mailgate.outbound.notify.Notifier, when notices to senders are configured.
        self.notifier = notifier
        self._facts = facts
        # The pipe's --queue-only path has no Redmine client: it screens nothing.
        self.intake = Intake(config, client, spool, self.facts if client is not None else None)

    @property
    def facts(self):
        if self._facts is None:
            from mailgate.facts import RedmineFacts

            # Tickets with mail waiting are read together (one list request).
            self._facts = RedmineFacts(self.client, self.config,
                                       waiting=self.spool.waiting_tickets)
        return self._facts

    @cached_property
    def metrics(self):
        """Prometheus metrics (mailgate.ops.metrics), made on first use."""
        from mailgate.ops.metrics import Metrics

        metrics = Metrics()
        if hasattr(self.client, "session"):
            metrics.watch_redmine(self.client)
        metrics.watch_runners(self)
        if self.fanout is not None:
            metrics.watch_discord(self.fanout.client)
        return metrics

    @cached_property
    def processor(self):
        from mailgate.processing import Processor

        return Processor(self.config, self.client, self.spool, self.facts,
                         fanout=self.fanout, notifier=self.notifier, metrics=self.metrics)

    @cached_property
    def worker(self):
        """The spool's runner (mailgate.worker.Worker)."""
        from mailgate.worker import Worker

        return Worker(self)

    @cached_property
    def watcher(self):
        """The Redmine watcher (mailgate.watcher), or None without ``watch:``."""
        from mailgate.watcher import build_watcher

        return build_watcher(self)

    @cached_property
    def discord_reader(self):
        """The Discord threads read back (mailgate.intake.discord_threads), or None."""
        from mailgate.intake.discord_threads import build_reader

        return build_reader(self)

    def runners(self) -> list:
        """Every queue runner of this gateway: the spool first, then what queues posts
        and mails (the watcher) or writes notes (Discord's threads), then what delivers."""
        runners = [self.worker.runner]
        runners += [side.runner for side in (self.watcher, self.discord_reader, self.fanout,
                                             self.notifier) if side is not None]
        return runners

    @cached_property
    def mailbox_watchers(self) -> list:
        """``serve``'s IMAP side: a watcher per configured mailbox
        (mailgate.intake.imap_watch), made on first use; none without ``imap:``."""
        if self.config.imap is None:
            return []
        from mailgate.intake.imap_watch import build_watchers

        return build_watchers(self)

    def supervised(self) -> list:
        """What /healthz and /metrics watch: every queue runner, and the mailbox
        watchers once made (``serve`` makes them when it has mailboxes)."""
        return [*self.runners(), *self.__dict__.get("mailbox_watchers", [])]

    def close(self) -> None:
        """Close what this gateway opened: the sides made so far (a side never asked for
        is not made just to be closed), the spool and the Redmine session."""
        made = [self.__dict__.get("discord_reader"), self.__dict__.get("watcher")]
        for part in (*made, self.fanout, self.notifier, self.spool, self.client):
            if part is not None and hasattr(part, "close"):
                part.close()

    # -- the intake's calls, as every source uses them ------------------------------

    @property
    def sender_limit(self):
        return self.intake.sender_limit

    @sender_limit.setter
    def sender_limit(self, limit) -> None:
        self.intake.sender_limit = limit

    def check_recipient(self, address: str):
        return self.intake.check_recipient(address)

    def check_size(self, raw: bytes) -> None:
        self.intake.check_size(raw)

    def receive(self, envelope: Envelope, *, all_or_nothing: bool = False) -> list[Delivery]:
        return self.intake.receive(envelope, all_or_nothing=all_or_nothing)

    def process(self, spooled: SpooledMail) -> Outcome:
        return self.processor.process(spooled)

    def drain(self) -> None:
        """Work every queue until nothing is due (the one-shot ``mailgate worker``):
        the spool first, since applying mail queues posts and notices; the watcher
        polls Redmine once, and each tracked Discord thread is read once."""
        polling = [side for side in (self.watcher, self.discord_reader) if side is not None]
        for runner in self.runners():
            found = next((side for side in polling if runner is side.runner), None)
            if found is not None:
                found.drain()
            else:
                runner.drain()


def build_gateway(config: Config) -> Gateway:
    from mailgate.outbound.notify import build_notifier
    from mailgate.clients.redmine import RedmineClient

    # One store for every part: the spool, Discord's queue and threads, the notices.
    spool = open_spool(config.store, lease_seconds=config.lease_seconds)
    gateway = Gateway(config, RedmineClient.from_settings(config.redmine), spool,
                      fanout=build_fanout(config), notifier=build_notifier(config, config.store))
    gateway.metrics     # time every Redmine request from the first one
    return gateway


def build_queue_only_gateway(config: Config) -> Gateway:
    """A gateway that only takes mail in (no Redmine at the edge): the pipe's fast path."""
    spool = open_spool(config.store, lease_seconds=config.lease_seconds)
    return Gateway(config, None, spool)


def build_fanout(config: Config):
    """The Discord fan-out, with its own Redmine client for the thread fields."""
    if config.discord is None:
        return None
    from mailgate.outbound.fanout import Fanout
    from mailgate.outbound.fanout.settings import THREAD_FIELD, THREAD_ID_FIELD
    from mailgate.clients.redmine import RedmineClient

    # requests.Session is not thread-safe: the fan-out's runner gets its own client.
    redmine = RedmineClient.from_settings(config.redmine)

    def thread_created(ticket: int, thread_id: str) -> None:
        redmine.set_custom_field(ticket, THREAD_FIELD, True)
        redmine.set_custom_field(ticket, THREAD_ID_FIELD, thread_id)

    return Fanout(config.discord, config.store, on_thread_created=thread_created)
