"""Discord fan-out: after a mail is applied in Redmine, say so in the site's Discord channel.

The fan-out is a durable queue of its own, beside the spool (the same SQLite
file, its own tables and connection).  ``enqueue`` only writes a row, so
Discord being slow or down never delays or fails the Redmine write; a thread
of ``mailgate serve`` runs ``run_forever`` and delivers the rows.

* At least once: a row leaves the queue only when Discord has confirmed the
  message (``wait=true``), or when it is dead-lettered (a message Discord
  refuses, or one that could not be delivered for ``max_age``).
* At most once per (mail, channel): the table has that unique key, so a mail
  processed twice (a worker restart) is queued once.  The one duplicate left
  is a message Discord saved while its answer was lost (a timeout); bot mode
  closes even that window with ``enforce_nonce``, webhooks have no such thing.
* A thread per ticket: the first post of a ticket creates its thread (a forum
  post named ``#<ticket> <subject>``, or a bot's thread in a text channel) and
  a ticket's later posts wait in line until it exists, so each ticket's story
  reads in order.  The thread id is kept in ``discord_threads`` and handed to
  ``on_thread_created(ticket, thread_id)`` (which writes Redmine's
  ``discord-thread`` fields), retried on its own if Redmine is down.
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
import sqlite3
import threading
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from ..discord import (DEFAULT_API_BASE, MAX_CONTENT, MAX_SLEEP, MAX_THREAD_NAME, DiscordClient,
                       DiscordConfigError, DiscordRateLimited, DiscordRejected,
                       DiscordUnavailable, Posted, UnknownChannel, Webhook, discord_length,
                       escape_markdown, fit, link, one_line)
from ..errors import ConfigError

log = logging.getLogger("mailgate.discord")

TRIAGE = "triage"


# ------------------------------------------------------------------ the event


@dataclass(frozen=True)
class FanoutEvent:
    mail_key: str            # idempotency key of the mail (Message-ID or sha256:...)
    kind: str                # "new" or "reply"
    ticket: int
    site: str | None         # site name; None: the ticket's channel so far, else triage
    subject: str
    sender_name: str
    sender_address: str
    action: str | None       # e.g. "answer"
    from_state: str | None
    to_state: str | None
    excerpt: str             # note text (truncated and escaped when rendered)
    url: str                 # link to the ticket in Redmine


def event_for(outcome, mail, *, site: str | None, url: str, excerpt: str,
              subject: str | None = None) -> FanoutEvent | None:
    """The event for a processed mail, or None when nothing happened worth telling."""
    kinds = {"created": "new", "applied": "reply", "status-refused": "reply"}
    if outcome.kind not in kinds or outcome.ticket is None:
        return None
    return FanoutEvent(
        mail_key=mail.key, kind=kinds[outcome.kind], ticket=outcome.ticket, site=site,
        subject=subject if subject is not None else mail.subject,
        sender_name=mail.from_name, sender_address=mail.from_address, action=outcome.action,
        from_state=outcome.from_state, to_state=outcome.to_state, excerpt=excerpt, url=url)


# ------------------------------------------------------------------ settings


@dataclass(frozen=True)
class Destination:
    """Where one site's posts go: a webhook, or (bot mode) a text channel."""

    name: str
    webhook: Webhook | None = None
    channel_id: str | None = None
    #: Webhook only: the channel is a forum, so each ticket gets its own thread.
    forum: bool = True

    @property
    def key(self) -> str:
        """The channel's identity in the queue: stable while the config names the same target."""
        return f"webhook:{self.webhook.id}" if self.webhook else f"channel:{self.channel_id}"

    @property
    def threads(self) -> bool:
        return self.webhook is None or self.forum


@dataclass(frozen=True)
class DiscordSettings:
    mode: str                                   # "webhook" or "bot"
    channels: Mapping[str, Destination]         # site name -> destination
    triage: Destination | None = None
    bot_token: str | None = field(default=None, repr=False)
    show_addresses: bool = False
    #: Set the ticket's discord-thread / discord-thread-id fields in Redmine.
    redmine_fields: bool = False
    excerpt_length: int = 600
    api_base: str = DEFAULT_API_BASE
    timeout: float = 10.0
    first_delay: float = 5.0
    max_delay: float = 300.0
    max_age: float = 2 * 24 * 3600.0
    max_attempts: int = 0                       # 0: no limit but max_age

    def destination_for(self, site: str | None) -> Destination | None:
        if site is None or site == TRIAGE:
            return self.triage
        return self.channels.get(site)

    def by_key(self, key: str) -> Destination | None:
        every = [*self.channels.values(), *([self.triage] if self.triage else [])]
        return next((d for d in every if d.key == key), None)

    def backoff(self, failures: int) -> float:
        base = min(self.max_delay, self.first_delay * 2 ** max(0, failures - 1))
        # Jitter, so that posts that failed together do not all come back together.
        return base * random.uniform(0.5, 1.0)


_KEYS = {"enabled", "mode", "channels", "triage", "bot_token", "show_addresses",
         "redmine_fields", "excerpt_length", "api_base", "timeout", "retry"}
_RETRY_KEYS = {"first_delay", "max_delay", "max_age", "max_attempts"}


def load_discord_settings(section: Mapping | None, *,
                          sites: Iterable[str] | None = None) -> DiscordSettings | None:
    """The ``discord:`` section, checked; None when it is absent or ``enabled: false``.

    With ``sites`` (the configured site names), a channel for a site that does
    not exist is an error rather than a channel that never gets a post.
    """
    if section is None:
        return None
    if not isinstance(section, Mapping):
        raise ConfigError("discord: expected a mapping")
    if not section or not _bool(section, "enabled", True, "discord"):
        return None
    _only(section, _KEYS, "discord")
    mode = section.get("mode", "webhook")
    if mode not in ("webhook", "bot"):
        raise ConfigError(f"discord.mode: {mode!r} is not one of webhook, bot")
    token = section.get("bot_token") or None
    if mode == "bot" and not token:
        raise ConfigError("discord.bot_token: missing (or set MAILGATE_DISCORD_BOT_TOKEN)")
    channels = _channels(section.get("channels"), mode, sites)
    triage = (_destination("discord.triage", TRIAGE, section["triage"], mode)
              if section.get("triage") else None)
    if not channels and triage is None:
        raise ConfigError("discord.channels: no channel configured (nor discord.triage)")
    api_base = str(section.get("api_base") or DEFAULT_API_BASE).rstrip("/")
    if not re.match(r"https?://", api_base):
        raise ConfigError(f"discord.api_base: expected an http(s) URL, got {api_base!r}")
    retry = section.get("retry") or {}
    if not isinstance(retry, Mapping):
        raise ConfigError("discord.retry: expected a mapping")
    _only(retry, _RETRY_KEYS, "discord.retry")
    return DiscordSettings(
        mode=mode, channels=channels, triage=triage, bot_token=token,
        show_addresses=_bool(section, "show_addresses", False, "discord"),
        redmine_fields=_bool(section, "redmine_fields", False, "discord"),
        excerpt_length=int(_number(section, "excerpt_length", 600, "discord", whole=True)),
        api_base=api_base,
        timeout=_number(section, "timeout", 10.0, "discord"),
        first_delay=_number(retry, "first_delay", 5.0, "discord.retry"),
        max_delay=_number(retry, "max_delay", 300.0, "discord.retry"),
        max_age=_number(retry, "max_age", 2 * 24 * 3600.0, "discord.retry"),
        max_attempts=int(_number(retry, "max_attempts", 0, "discord.retry", whole=True,
                                 zero=True)),
    )


def _channels(spec: Any, mode: str, sites: Iterable[str] | None) -> dict[str, Destination]:
    spec = spec or {}
    if not isinstance(spec, Mapping):
        raise ConfigError("discord.channels: expected a mapping of site name to channel")
    known = set(sites) if sites is not None else None
    found = {}
    for name, value in spec.items():
        where = f"discord.channels.{name}"
        if known is not None and str(name) not in known:
            raise ConfigError(f"{where}: no such site (sites: {', '.join(sorted(known))})")
        found[str(name)] = _destination(where, str(name), value, mode)
    return found


def _destination(where: str, name: str, spec: Any, mode: str) -> Destination:
    """A webhook URL or channel id, or a mapping ``{webhook|channel: ..., forum: ...}``."""
    wanted = "webhook" if mode == "webhook" else "channel"
    if isinstance(spec, Mapping):
        _only(spec, {"webhook", "forum"} if mode == "webhook" else {"channel"}, where)
        forum = _bool(spec, "forum", True, where)
        value, where = spec.get(wanted), f"{where}.{wanted}"
    else:
        forum, value = True, spec
    if value is None or value == "":
        raise ConfigError(f"{where}: missing the {wanted}")
    if mode == "bot":
        if not re.fullmatch(r"\d{5,25}", str(value)):
            raise ConfigError(f"{where}: not a Discord channel id (digits): {value!r}")
        return Destination(name, channel_id=str(value))
    try:
        return Destination(name, webhook=Webhook.from_url(str(value)), forum=forum)
    except ValueError as exc:
        # Never echo the value: a webhook URL holds its token.
        raise ConfigError(f"{where}: {exc}") from None


def _only(spec: Mapping, allowed: set[str], where: str) -> None:
    unknown = sorted(str(k) for k in spec if k not in allowed)
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown setting"
                          f" (known: {', '.join(sorted(allowed))})")


def _bool(spec: Mapping, key: str, default: bool, where: str) -> bool:
    value = spec.get(key, default)
    # Values from the environment are strings.
    words = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
    if isinstance(value, str) and value.lower() in words:
        return words[value.lower()]
    if not isinstance(value, bool):
        raise ConfigError(f"{where}.{key}: expected true or false, got {value!r}")
    return value


def _number(spec: Mapping, key: str, default: float, where: str, *, whole: bool = False,
            zero: bool = False) -> float:
    value = spec.get(key, default)
    try:
        number = float(value) if not isinstance(value, bool) else None
    except (TypeError, ValueError):
        number = None
    if number is None or number < 0 or (number == 0 and not zero) or (
            whole and number != int(number)):
        kind = "a whole number" if whole else "a number"
        raise ConfigError(f"{where}.{key}: expected {kind} > {'=' if zero else ''}0,"
                          f" got {value!r}")
    return number


# ------------------------------------------------------------------ rendering


@dataclass(frozen=True)
class Rendered:
    content: str
    thread_name: str


def render(event: FanoutEvent, settings: DiscordSettings) -> Rendered:
    """The message for an event: escaped, quiet, and within Discord's 2000 characters.

    The link is never cut: when the message would be too long, the excerpt gives way.
    """
    head = _headline(event) + "\n" + _sender_line(event, settings)
    tail = link(event.url)
    head = fit(head, MAX_CONTENT - discord_length(tail) - 1)
    room = min(settings.excerpt_length,
               MAX_CONTENT - discord_length(head) - discord_length(tail) - 2)
    excerpt = fit(_quoted(event.excerpt), room) if room > 3 else ""
    content = "\n".join(part for part in (head, excerpt, tail) if part)
    name = fit(one_line(f"#{event.ticket} {event.subject}"), MAX_THREAD_NAME)
    return Rendered(content, name)


def _headline(event: FanoutEvent) -> str:
    subject = fit(escape_markdown(one_line(event.subject)), 250)
    if event.kind == "new":
        where = escape_markdown(event.site or TRIAGE)
        return f"**New ticket #{event.ticket}** in {where}: {subject}"
    change = escape_markdown(event.action or "reply")
    if event.to_state and event.from_state and event.to_state != event.from_state:
        change += f" ({escape_markdown(event.from_state)} → {escape_markdown(event.to_state)})"
    elif event.to_state:
        change += f" ({escape_markdown(event.to_state)})"
    return f"**#{event.ticket}** {change}: {subject}"


def _sender_line(event: FanoutEvent, settings: DiscordSettings) -> str:
    name = one_line(event.sender_name)
    who = fit(escape_markdown(name), 100) if name else "(no name)"
    if settings.show_addresses and event.sender_address:
        who += f" ({escape_markdown(one_line(event.sender_address))})"
    return f"from {who}"


def _quoted(text: str) -> str:
    """Mail text as a block quote, escaped; runs of blank lines kept to one."""
    lines = [line.rstrip() for line in text.strip().splitlines()]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines))
    return "\n".join(f"> {line}" for line in escape_markdown(text).split("\n")) if text else ""


# ------------------------------------------------------------------ the queue

SCHEMA = """
CREATE TABLE IF NOT EXISTS discord_posts (
    id INTEGER PRIMARY KEY,                 -- also the order of a ticket's posts
    mail_key TEXT NOT NULL,
    channel TEXT NOT NULL,                  -- Destination.key
    ticket INTEGER NOT NULL,
    content TEXT NOT NULL,
    thread_name TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'queued',   -- queued, sent, dead
    created_at REAL NOT NULL,
    failures INTEGER NOT NULL DEFAULT 0,    -- rate limits are not failures
    next_attempt_at REAL NOT NULL DEFAULT 0,
    lease_until REAL NOT NULL DEFAULT 0,
    last_error TEXT,
    finished_at REAL,
    message_id TEXT,
    thread_id TEXT,
    UNIQUE (mail_key, channel)
);
CREATE INDEX IF NOT EXISTS discord_posts_due ON discord_posts (state, next_attempt_at);
CREATE INDEX IF NOT EXISTS discord_posts_ticket ON discord_posts (channel, ticket, state);
CREATE TABLE IF NOT EXISTS discord_threads (
    channel TEXT NOT NULL,
    ticket INTEGER NOT NULL,
    thread_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    announced INTEGER NOT NULL DEFAULT 0,   -- 1: on_thread_created done; -1: given up
    failures INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    last_error TEXT,
    PRIMARY KEY (channel, ticket)
);
"""

_POST = "id, mail_key, channel, ticket, content, thread_name, created_at, failures"


@dataclass(frozen=True)
class QueuedPost:
    id: int
    mail_key: str
    channel: str
    ticket: int
    content: str
    thread_name: str
    created_at: float
    failures: int

    @property
    def nonce(self) -> str:
        """The same for every attempt of this post (bot mode's duplicate guard)."""
        return hashlib.sha256(f"{self.mail_key}\0{self.channel}".encode()).hexdigest()[:25]


@dataclass(frozen=True)
class PendingThread:
    channel: str
    ticket: int
    thread_id: str
    created_at: float
    failures: int


class PostQueue:
    """The fan-out's tables.  Every write is its own durable commit (WAL, synchronous=FULL)."""

    def __init__(self, path: str | Path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, timeout=5.0, isolation_level=None,
                                   check_same_thread=False)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def _run(self, sql: str, params: Iterable = ()) -> list[tuple]:
        """Rows (of a SELECT or a RETURNING), read while the connection is ours."""
        with self._lock:
            return self._db.execute(sql, tuple(params)).fetchall()

    def _change(self, sql: str, params: Iterable = ()) -> int:
        with self._lock:
            return self._db.execute(sql, tuple(params)).rowcount

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def add(self, mail_key: str, channel: str, ticket: int, rendered: Rendered,
            now: float) -> bool:
        """Queue a post; False if this mail already has one for this channel."""
        return self._change(
            "INSERT OR IGNORE INTO discord_posts (mail_key, channel, ticket, content,"
            " thread_name, created_at) VALUES (?,?,?,?,?,?)",
            (mail_key, channel, ticket, rendered.content, rendered.thread_name, now)) == 1

    def claim(self, now: float, lease: float) -> QueuedPost | None:
        """The oldest due post whose ticket has no older post still waiting in its channel."""
        rows = self._run(
            f"""UPDATE discord_posts SET lease_until = ?
                WHERE id = (SELECT p.id FROM discord_posts p
                            WHERE p.state = 'queued' AND p.next_attempt_at <= ?
                              AND p.lease_until <= ?
                              AND NOT EXISTS (SELECT 1 FROM discord_posts e
                                              WHERE e.channel = p.channel
                                                AND e.ticket = p.ticket
                                                AND e.state = 'queued' AND e.id < p.id)
                            ORDER BY p.id LIMIT 1)
                RETURNING {_POST}""", (now + lease, now, now))
        return QueuedPost(*rows[0]) if rows else None

    def channel_of(self, ticket: int) -> str | None:
        """The channel a ticket's posts went to first (for events that name no site)."""
        rows = self._run("SELECT channel FROM discord_posts WHERE ticket = ? ORDER BY id LIMIT 1",
                         (ticket,))
        return rows[0][0] if rows else None

    def thread(self, channel: str, ticket: int) -> str | None:
        rows = self._run("SELECT thread_id FROM discord_threads WHERE channel=? AND ticket=?",
                         (channel, ticket))
        return rows[0][0] if rows else None

    def add_thread(self, channel: str, ticket: int, thread_id: str, now: float,
                   announced: bool) -> None:
        self._change("INSERT OR REPLACE INTO discord_threads (channel, ticket, thread_id,"
                     " created_at, announced) VALUES (?,?,?,?,?)",
                     (channel, ticket, thread_id, now, 1 if announced else 0))

    def forget_thread(self, channel: str, ticket: int, thread_id: str) -> None:
        self._change("DELETE FROM discord_threads WHERE channel=? AND ticket=? AND thread_id=?",
                     (channel, ticket, thread_id))

    def sent(self, post: QueuedPost, posted: Posted, now: float,
             new_thread: bool = False, announced: bool = True) -> None:
        """Mark a post delivered, and record the thread it created in the same commit.

        One transaction, so that a crash cannot leave a delivered thread-starting
        post queued (it would open a second thread for the ticket).
        """
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if new_thread:
                    self._db.execute(
                        "INSERT OR REPLACE INTO discord_threads (channel, ticket, thread_id,"
                        " created_at, announced) VALUES (?,?,?,?,?)",
                        (post.channel, post.ticket, posted.channel_id, now, int(announced)))
                self._db.execute(
                    "UPDATE discord_posts SET state='sent', finished_at=?, message_id=?,"
                    " thread_id=?, lease_until=0, last_error=NULL WHERE id=?",
                    (now, posted.message_id, posted.channel_id, post.id))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def defer(self, post: QueuedPost, error: str, until: float, failed: bool) -> None:
        self._change("UPDATE discord_posts SET next_attempt_at=?, last_error=?, lease_until=0,"
                     " failures = failures + ? WHERE id=?", (until, error, int(failed), post.id))

    def bury(self, post: QueuedPost, error: str, now: float) -> None:
        """Dead-letter a post: kept with its reason; the ticket's next post moves up."""
        self._change("UPDATE discord_posts SET state='dead', last_error=?, finished_at=?,"
                     " lease_until=0 WHERE id=?", (error, now, post.id))

    def due_thread(self, now: float) -> PendingThread | None:
        rows = self._run("SELECT channel, ticket, thread_id, created_at, failures"
                         " FROM discord_threads WHERE announced = 0 AND next_attempt_at <= ?"
                         " ORDER BY created_at LIMIT 1", (now,))
        return PendingThread(*rows[0]) if rows else None

    def announced(self, pending: PendingThread, state: int = 1, error: str | None = None,
                  until: float = 0.0) -> None:
        """``state`` 1: done; -1: given up; 0: failed, try again at ``until``."""
        self._change("UPDATE discord_threads SET announced=?, last_error=?, next_attempt_at=?,"
                     " failures = failures + ? WHERE channel=? AND ticket=? AND thread_id=?",
                     (state, error, until, int(state != 1), pending.channel, pending.ticket,
                      pending.thread_id))

    def next_due(self) -> float | None:
        return self._run("SELECT min(t) FROM (SELECT min(next_attempt_at) t FROM discord_posts"
                         " WHERE state='queued' UNION ALL SELECT min(next_attempt_at)"
                         " FROM discord_threads WHERE announced=0)")[0][0]

    def counts(self) -> dict[str, int]:
        posts = dict(self._run("SELECT state, count(*) FROM discord_posts GROUP BY state"))
        threads = dict(self._run("SELECT announced, count(*) FROM discord_threads"
                                 " GROUP BY announced"))
        return {"queued": posts.get("queued", 0), "sent": posts.get("sent", 0),
                "dead": posts.get("dead", 0), "threads": sum(threads.values()),
                "threads_unannounced": threads.get(0, 0)}


# ------------------------------------------------------------------ delivery


class Fanout:
    def __init__(self, settings: DiscordSettings, db_path: str | Path, *,
                 on_thread_created: Callable[[int, str], Any] | None = None,
                 clock: Callable[[], float] = time.time):
        self.settings = settings
        self.queue = PostQueue(db_path)
        self.clock = clock
        # Only called when the config asks for the Redmine fields.
        self.on_thread_created = on_thread_created if settings.redmine_fields else None
        self.wake = threading.Event()
        self._stop = threading.Event()
        self.client = DiscordClient(settings.api_base, bot_token=settings.bot_token,
                                    timeout=settings.timeout, sleep=self._nap)
        # While Discord as a whole is failing, probe with one post, not all of them.
        self._hold_until = 0.0
        self._counts: Counter[str] = Counter()
        # Longer than one delivery can take (two requests, each after a rate-limit
        # wait), so that no other process takes a post this one is still sending.
        self._lease = 2 * (settings.timeout + MAX_SLEEP) + 30.0

    def _nap(self, seconds: float) -> None:
        # A rate-limit wait must not hold up a shutdown.
        self._stop.wait(seconds)

    def close(self) -> None:
        self.client.close()
        self.queue.close()

    # -- the mail side ---------------------------------------------------------

    def enqueue(self, event: FanoutEvent) -> None:
        """Queue the post for ``event`` durably; never raises (the mail is already applied)."""
        try:
            self._enqueue(event)
        except Exception:
            # Losing a Discord post is bad; failing a mail Redmine already has is worse.
            self._counts["enqueue_errors"] += 1
            log.error("discord: could not queue the post of %s for #%d:\n%s", event.mail_key,
                      event.ticket, traceback.format_exc())
        self.wake.set()

    def _enqueue(self, event: FanoutEvent) -> None:
        destination = self._destination(event)
        if destination is None:
            self._counts["skipped"] += 1
            log.debug("discord: no channel for site %r; #%d not posted", event.site, event.ticket)
            return
        added = self.queue.add(event.mail_key, destination.key, event.ticket,
                               render(event, self.settings), self.clock())
        self._counts["queued" if added else "duplicates"] += 1

    def _destination(self, event: FanoutEvent) -> Destination | None:
        if event.site is None:
            # A reply to ticket<N>@ names no site: follow the ticket's earlier posts.
            earlier = self.queue.channel_of(event.ticket)
            if earlier and (found := self.settings.by_key(earlier)):
                return found
        return self.settings.destination_for(event.site)

    # -- the Discord side ------------------------------------------------------

    def run_once(self) -> bool:
        """Do one due piece of work (a post, or a thread's Redmine fields); False if none."""
        if self._announce_one():
            return True
        now = self.clock()
        if now < self._hold_until:
            return False
        post = self.queue.claim(now, self._lease)
        if post is None:
            return False
        self._deliver(post)
        return True

    def run_forever(self, stop: threading.Event, poll: float = 1.0) -> None:
        """Deliver until ``stop`` is set (set ``wake`` too, to stop at once)."""
        self._stop = stop
        while not stop.is_set():
            try:
                busy = self.run_once()
                idle = 0.0 if busy else self._idle(poll)
            except sqlite3.Error as exc:
                # "database is locked" and the like: the thread must outlive them.
                log.error("discord: queue database error (retrying in %.0f s): %s", poll, exc)
                idle = poll
            if idle:
                self.wake.wait(idle)
                self.wake.clear()

    def _idle(self, poll: float) -> float:
        due = self.queue.next_due()
        wait_for = max(self._hold_until, due if due is not None else float("inf"))
        return min(poll, max(0.01, wait_for - self.clock()))

    def _deliver(self, post: QueuedPost) -> None:
        destination = self.settings.by_key(post.channel)
        if destination is None:
            self._bury(post, "the channel is no longer in the configuration")
            return
        self._counts["attempts"] += 1
        try:
            posted, new_thread = self._send(post, destination)
        except DiscordRateLimited as exc:
            self._rate_limited(post, exc)
        except UnknownChannel as exc:
            # Not a thread (those are replaced in _send): the channel itself is gone.
            self._retry_or_bury(post, exc)
        except DiscordRejected as exc:
            self._bury(post, str(exc))
        except (DiscordUnavailable, DiscordConfigError) as exc:
            self._retry_or_bury(post, exc)
        except Exception as exc:  # a bug met by one post must not stop the others
            log.error("discord: post %d dead-lettered after a crash:\n%s", post.id,
                      traceback.format_exc())
            self._bury(post, f"crash: {type(exc).__name__}: {exc}")
        else:
            self.queue.sent(post, posted, self.clock(), new_thread,
                            announced=self.on_thread_created is None)
            self._counts["delivered"] += 1
            self._hold_until = 0.0

    def _send(self, post: QueuedPost, destination: Destination) -> tuple[Posted, bool]:
        """Post in the ticket's thread, creating it first if it has none."""
        if not destination.threads:
            return self.client.execute_webhook(destination.webhook, post.content), False
        thread = self.queue.thread(post.channel, post.ticket)
        if thread is not None:
            try:
                return self._post_in_thread(destination, thread, post), False
            except UnknownChannel:
                # Someone deleted the thread: the ticket gets a new one.
                log.warning("discord: thread %s of #%d is gone; starting a new one", thread,
                            post.ticket)
                self.queue.forget_thread(post.channel, post.ticket, thread)
        return self._start_thread(destination, post)

    def _post_in_thread(self, destination: Destination, thread: str, post: QueuedPost) -> Posted:
        if destination.webhook is not None:
            return self.client.execute_webhook(destination.webhook, post.content,
                                               thread_id=thread)
        return self.client.create_message(thread, post.content, nonce=post.nonce)

    def _start_thread(self, destination: Destination, post: QueuedPost) -> tuple[Posted, bool]:
        self._counts["threads_created"] += 1
        if destination.webhook is not None:
            # A forum post: the thread and its first message in one request.
            posted = self.client.execute_webhook(destination.webhook, post.content,
                                                 thread_name=post.thread_name)
            return posted, True
        # Bot: two requests, so the thread is recorded before the message is tried.
        thread = self.client.start_thread(destination.channel_id, post.thread_name)
        self.queue.add_thread(post.channel, post.ticket, thread, self.clock(),
                              announced=self.on_thread_created is None)
        return self._post_in_thread(destination, thread, post), False

    def _rate_limited(self, post: QueuedPost, exc: DiscordRateLimited) -> None:
        self._counts["rate_limited"] += 1
        until = self.clock() + exc.retry_after
        if exc.is_global:
            self._hold_until = until
        log.info("discord: post %d waits %.2f s: %s", post.id, exc.retry_after, exc)
        self.queue.defer(post, str(exc), until, failed=False)

    def _retry_or_bury(self, post: QueuedPost, exc: Exception) -> None:
        failures = post.failures + 1
        now = self.clock()
        limit = self.settings.max_attempts
        if now - post.created_at >= self.settings.max_age or (limit and failures >= limit):
            self._bury(post, f"gave up after {failures} failures: {exc}")
            return
        delay = self.settings.backoff(failures)
        if isinstance(exc, DiscordUnavailable):
            self._hold_until = now + delay
        self._counts["retries"] += 1
        log.warning("discord: post %d retried in %.1f s: %s", post.id, delay, exc)
        self.queue.defer(post, f"{type(exc).__name__}: {exc}", now + delay, failed=True)

    def _bury(self, post: QueuedPost, reason: str) -> None:
        self._counts["dead"] += 1
        log.warning("discord: post %d (#%d) dead-lettered: %s", post.id, post.ticket, reason)
        self.queue.bury(post, reason, self.clock())

    # -- Redmine's thread fields -----------------------------------------------

    def _announce_one(self) -> bool:
        if self.on_thread_created is None:
            return False
        pending = self.queue.due_thread(self.clock())
        if pending is None:
            return False
        try:
            self.on_thread_created(pending.ticket, pending.thread_id)
        except Exception as exc:  # Redmine down, or anything: the Discord side goes on
            self._announce_failed(pending, exc)
        else:
            self.queue.announced(pending)
        return True

    def _announce_failed(self, pending: PendingThread, exc: Exception) -> None:
        now = self.clock()
        error = f"{type(exc).__name__}: {exc}"
        self._counts["announce_failures"] += 1
        if now - pending.created_at >= self.settings.max_age:
            log.warning("discord: gave up telling Redmine #%d's thread: %s", pending.ticket, error)
            self.queue.announced(pending, -1, error)
            return
        delay = self.settings.backoff(pending.failures + 1)
        log.warning("discord: Redmine fields of #%d retried in %.1f s: %s", pending.ticket,
                    delay, error)
        self.queue.announced(pending, 0, error, now + delay)

    def stats(self) -> dict:
        """What the queue holds (durable) and what this process did (since start)."""
        try:
            held = self.queue.counts()
        except sqlite3.Error as exc:   # monitoring must not fail with the database
            held = {"database_error": str(exc)}
        return {**held, **{f"run_{k}": v for k, v in self._counts.items()}}
