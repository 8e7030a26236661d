"""A fake Discord REST API (v10) for tests: a real HTTP server on 127.0.0.1.

It serves the three endpoints mailgate uses and answers as Discord does:

* ``POST /webhooks/{id}/{token}`` (execute webhook): ``?wait=true`` answers
  the message, else 204; on a forum channel a message needs ``thread_name``
  (a new thread, whose id is also its starter message's id) or
  ``?thread_id=`` (220001 otherwise); ``thread_name`` elsewhere is 220003;
  an unknown webhook is 404/10015, a wrong token 401/50027;
* ``POST /channels/{id}/threads`` (a bot starts a thread without a message;
  ``type`` defaults to a *private* thread, as in v10) and
  ``POST /channels/{id}/messages``, with ``Authorization: Bot <token>``;
  ``enforce_nonce`` returns the earlier message for a nonce seen within 5 minutes;
* empty content is 400/50006, content over 2000 characters or a thread name
  over 100 is 400/50035 "Invalid Form Body" with Discord's nested ``errors``;
  an unknown channel or thread is 404/10003;
* every answer carries ``X-RateLimit-*`` headers for its bucket (per webhook
  or channel and route); going over ``bucket_limit`` per ``bucket_window``
  seconds is a 429 with ``retry_after``, as is ``rate_limit_next(n)`` on demand.

Reading, as a bot reads a thread back (issue 14), each rule from the page it cites:

* ``GET /channels/{id}/messages`` with ``before``/``after``/``around`` (one at a
  time) and ``limit`` (1-100, default 50), newest first; with ``after``, the
  ``limit`` messages just after it (so a reader pages forward from the newest it
  saw); a deleted message is simply not there; an archived thread is read like
  any other;
* without the MESSAGE_CONTENT intent (``message_content_intent = False``), other
  people's messages come with empty ``content``, ``embeds`` and ``attachments``;
* ``GET /users/@me`` is the bot itself; each attachment's ``url`` is served
  from the fake's own "CDN" (``/attachments/...``), without authentication;
* posting in an archived thread unarchives it, unless it is locked (400/50083).

Tests act as people with ``post_as_user`` (an author id, username and display
name, and files), ``edit_message``, ``delete_message`` and ``archive_thread``.

A created message says what Discord would have done with it:
``mention_everyone``/``mentions``/``mention_roles`` follow ``allowed_mentions``
(absent: everything pings), and ``embeds`` lists the bare links it would
unfurl (none with SUPPRESS_EMBEDS).

Outages: ``down = True`` answers 503; ``stop()`` refuses connections (open
keep-alive connections are cut too) and ``start()`` comes back on the same
port with the same state.  ``delay`` sleeps before handling a request,
``delay_after`` after handling it (the message exists, the answer is late).
Tests read ``posts`` (every request: method, path, query, json, status) and
``messages`` (every message created, in order).
"""

from __future__ import annotations

import json
import math
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.fakes.http import write_answer

DISCORD_EPOCH_MS = 1420070400000
SUPPRESS_EMBEDS = 1 << 2
SUPPRESS_NOTIFICATIONS = 1 << 12
THREAD_TYPES = {10: "announcement_thread", 11: "public_thread", 12: "private_thread"}
NONCE_WINDOW = 300.0


@dataclass
class SeenPost:
    """One request as the fake received it, and the status it answered."""
    method: str
    path: str
    query: dict[str, str]
    json: Any
    headers: dict[str, str]
    status: int = 0


@dataclass
class FakeChannel:
    id: str
    kind: str                 # text, forum, public_thread, private_thread, ...
    parent_id: str | None = None
    name: str | None = None
    messages: list[dict] = field(default_factory=list)
    #: https://discord.com/developers/docs/topics/threads#archiving-inactive-threads
    archived: bool = False
    locked: bool = False


@dataclass
class Answer:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


class Refusal(Exception):
    def __init__(self, status: int, code: int, message: str, errors: dict | None = None):
        body = {"code": code, "message": message}
        if errors is not None:
            body["errors"] = errors
        self.answer = Answer(status, body)


def _form_error(path: str, code: str, message: str) -> Refusal:
    """Discord's 50035 body: the field's path as nested keys, then ``_errors``."""
    errors: dict = {"_errors": [{"code": code, "message": message}]}
    for key in reversed(path.split(".")):
        errors = {key: errors}
    return Refusal(400, 50035, "Invalid Form Body", errors)


class FakeDiscord:
    def __init__(self, *, bucket_limit: int = 50, bucket_window: float = 1.0):
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._connections: set[socket.socket] = set()
        self.port = 0
        self.bot_token = "fake-bot-token"
        self.bucket_limit = bucket_limit
        self.bucket_window = bucket_window
        self.reset()

    # ------------------------------------------------------------ lifecycle

    def reset(self) -> None:
        with self._lock:
            self.channels: dict[str, FakeChannel] = {}
            self.webhooks: dict[str, tuple[str, str]] = {}   # id -> (token, channel id)
            self.posts: list[SeenPost] = []
            self.messages: list[dict] = []
            self.down = False
            self.delay = 0.0
            self.delay_after = 0.0
            self._forced: list[tuple[Answer, str | None, str | None]] = []
            self._buckets: dict[str, tuple[float, int]] = {}
            self._nonces: dict[tuple[str, str], tuple[float, dict]] = {}
            self._last_id = 0
            #: The bot the token belongs to (GET /users/@me), and the people who wrote.
            self.bot_user = _user(self._snowflake(), "mailgate-bot", None, bot=True)
            self.users: dict[str, dict] = {}
            #: Whether the bot was given the MESSAGE_CONTENT privileged intent.
            self.message_content_intent = True
            #: attachment id -> (bytes, content type), served at each attachment's url.
            self.files: dict[str, tuple[bytes, str]] = {}

    def start(self) -> FakeDiscord:
        """Listen (again) on 127.0.0.1, on the same port as before if there was one."""
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), _handler_for(self))
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, args=(0.05,), name="fake-discord",
                         daemon=True).start()
        return self

    def stop(self, cut_open: bool = True) -> None:
        """Refuse connections from now on, and (``cut_open``) cut the open ones, as a
        crash would: an answer cut after the message was stored is a lost answer."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._server = None
        if not cut_open:
            return
        with self._lock:
            for sock in list(self._connections):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def __enter__(self) -> FakeDiscord:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        return f"{self.url}/api/v10"

    # ------------------------------------------------------------ set-up & peeks

    def add_channel(self, kind: str = "text") -> str:
        with self._lock:
            channel = FakeChannel(self._snowflake(), kind)
            self.channels[channel.id] = channel
            return channel.id

    def add_webhook(self, forum: bool = True) -> str:
        """A webhook on a new channel; its URL as Discord shows it (pointing at discord.com)."""
        with self._lock:
            channel = self.add_channel("forum" if forum else "text")
            hook_id, token = self._snowflake(), f"tok-{len(self.webhooks)}-secret"
            self.webhooks[hook_id] = (token, channel)
            return f"https://discord.com/api/webhooks/{hook_id}/{token}"

    def webhook_channel(self, url: str) -> str:
        return self.webhooks[url.rstrip("/").split("/")[-2]][1]

    def threads(self, parent_id: str | None = None) -> list[FakeChannel]:
        with self._lock:
            return [c for c in self.channels.values() if c.kind.endswith("thread")
                    and (parent_id is None or c.parent_id == parent_id)]

    def delete_thread(self, thread_id: str) -> None:
        with self._lock:
            del self.channels[thread_id]

    def post_as_user(self, channel_id: str, content: str, *, user_id: str, username: str,
                     global_name: str | None = None,
                     files: tuple[tuple[str, bytes, str], ...] = ()) -> dict:
        """A person writes in a channel or thread from their Discord client: ``files``
        are (filename, bytes, content type).  The message as Discord stores it."""
        with self._lock:
            channel = self._channel(channel_id)
            self._unarchive(channel)
            author = self.add_user(user_id, username, global_name)
            message = self._new_message(channel, {"content": content}, author, None)
            message["attachments"] = [self._attachment(channel.id, *f) for f in files]
            return message

    def add_user(self, user_id: str, username: str, global_name: str | None = None) -> dict:
        """Someone on the server (who may be mentioned before they write)."""
        with self._lock:
            return self.users.setdefault(user_id, _user(user_id, username, global_name))

    def edit_message(self, channel_id: str, message_id: str, content: str) -> dict:
        """Its author edits a message: same id, new content, ``edited_timestamp`` set.
        https://discord.com/developers/docs/resources/message#edit-message"""
        with self._lock:
            message = self._message(channel_id, message_id)
            message.update(content=content, edited_timestamp=_now())
            return message

    def delete_message(self, channel_id: str, message_id: str) -> None:
        """Gone from the channel: listing it no longer shows it.
        https://discord.com/developers/docs/resources/message#delete-message"""
        with self._lock:
            channel = self.channels[channel_id]
            channel.messages.remove(self._message(channel_id, message_id))

    def archive_thread(self, thread_id: str, locked: bool = False) -> None:
        """What Discord does to a thread idle for its ``auto_archive_duration``
        (``locked``: a moderator locked it too)."""
        with self._lock:
            thread = self.channels[thread_id]
            thread.archived, thread.locked = True, locked

    def _message(self, channel_id: str, message_id: str) -> dict:
        return next(m for m in self.channels[channel_id].messages if m["id"] == message_id)

    def _attachment(self, channel_id: str, filename: str, data: bytes,
                    content_type: str) -> dict:
        """https://discord.com/developers/docs/resources/message#attachment-object: the
        ``url`` is the CDN's, signed and expiring (``ex``/``is``/``hm``), no token needed."""
        attachment_id = self._snowflake()
        self.files[attachment_id] = (data, content_type)
        url = (f"{self.url}/attachments/{channel_id}/{attachment_id}/{filename}"
               f"?ex={int(time.time()) + 86400:x}&is={int(time.time()):x}&hm=f00d")
        return {"id": attachment_id, "filename": filename, "size": len(data), "url": url,
                "proxy_url": url.replace("/attachments/", "/proxy/attachments/"),
                "content_type": content_type}

    def rate_limit_next(self, count: int = 1, retry_after: float = 0.2, *,
                        is_global: bool = False, header_only: bool = False,
                        path: str | None = None, method: str | None = None) -> None:
        """Answer the next ``count`` requests (those whose path contains ``path``, of
        ``method``) 429, as Discord does when a limit is hit."""
        body = {"message": "You are being rate limited.", "retry_after": retry_after,
                "global": is_global}
        headers = {"Retry-After": str(math.ceil(retry_after)),
                   "X-RateLimit-Scope": "global" if is_global else "user"}
        if is_global:
            headers["X-RateLimit-Global"] = "true"
        answer = Answer(429, None if header_only else body, headers)
        with self._lock:
            self._forced.extend([(answer, path, method)] * count)

    def fail_next(self, status: int = 500, count: int = 1, *, path: str | None = None,
                  method: str | None = None) -> None:
        """Answer ``status`` to the next ``count`` requests (whose path contains ``path``,
        of ``method``)."""
        answer = Answer(status, {"message": "Internal Server Error" if status >= 500
                                 else "Bad Request", "code": 0})
        with self._lock:
            self._forced.extend([(answer, path, method)] * count)

    def statuses(self) -> dict[int, int]:
        with self._lock:
            found: dict[int, int] = {}
            for post in self.posts:
                found[post.status] = found.get(post.status, 0) + 1
            return found

    # ------------------------------------------------------------- serving

    def handle(self, method: str, path: str, query: dict, headers: dict, raw: bytes) -> Answer:
        seen = SeenPost(method, path, query, _json_or_none(raw), headers)
        with self._lock:
            self.posts.append(seen)
        answer = self._answer(method, path, query, headers, seen.json)
        seen.status = answer.status
        if self.delay_after:
            time.sleep(self.delay_after)
        return answer

    def _answer(self, method, path, query, headers, body) -> Answer:
        if self.down:
            return Answer(503, b"upstream connect error or disconnect/reset before headers",
                          content_type="text/plain")
        if self.delay:
            time.sleep(self.delay)
        with self._lock:
            forced = self._take_forced(method, path)
            if forced:
                return forced
            bucket = None
            try:
                action, args, bucket = _route(method, _api_path(path))
                answer = (self._take_bucket(bucket) if bucket else None) or action(
                    self, query, headers, body, *args)
            except Refusal as refusal:
                answer = refusal.answer
            answer.headers.update(self._bucket_headers(bucket))
            return answer

    def _take_forced(self, method: str, path: str) -> Answer | None:
        for i, (answer, part, verb) in enumerate(self._forced):
            if (part is None or part in path) and verb in (None, method):
                del self._forced[i]
                return answer
        return None

    # -- rate limits

    def _take_bucket(self, bucket: str) -> Answer | None:
        now = time.monotonic()
        start, used = self._buckets.get(bucket, (now, 0))
        if now - start >= self.bucket_window:
            start, used = now, 0
        if used >= self.bucket_limit:
            retry_after = round(self.bucket_window - (now - start), 3)
            return Answer(429, {"message": "You are being rate limited.",
                                "retry_after": retry_after, "global": False},
                          {"Retry-After": str(math.ceil(retry_after)),
                           "X-RateLimit-Scope": "user"})
        self._buckets[bucket] = (start, used + 1)
        return None

    def _bucket_headers(self, bucket: str | None) -> dict[str, str]:
        if bucket is None or bucket not in self._buckets:
            return {}
        start, used = self._buckets[bucket]
        reset_after = max(0.0, self.bucket_window - (time.monotonic() - start))
        return {"X-RateLimit-Limit": str(self.bucket_limit),
                "X-RateLimit-Remaining": str(max(0, self.bucket_limit - used)),
                "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
                "X-RateLimit-Reset-After": f"{reset_after:.3f}",
                "X-RateLimit-Bucket": format(abs(hash(bucket.split(":")[0])), "x")}

    # -- endpoints

    def execute_webhook(self, query, headers, body, hook_id: str, token: str) -> Answer:
        if hook_id not in self.webhooks:
            raise Refusal(404, 10015, "Unknown Webhook")
        real_token, channel_id = self.webhooks[hook_id]
        if token != real_token:
            raise Refusal(401, 50027, "Invalid Webhook Token")
        _check_message(body, webhook=True)
        channel = self.channels[channel_id]
        thread_name, thread_id = body.get("thread_name"), query.get("thread_id")
        if thread_name is not None and thread_id is not None:
            raise _form_error("thread_name", "BASE_TYPE_BAD", "Cannot use thread_name with"
                              " thread_id")
        if thread_name is not None:
            if channel.kind != "forum":
                raise Refusal(400, 220003, "Webhooks can only create threads in forum channels")
            target = self._new_thread(channel, thread_name, "public_thread")
        elif thread_id is not None:
            target = self.channels.get(thread_id)
            if target is None or target.parent_id != channel.id:
                raise Refusal(404, 10003, "Unknown Channel")
            self._unarchive(target)
        elif channel.kind == "forum":
            raise Refusal(400, 220001, "Webhooks posted to forum channels must have a"
                                       " thread_name or thread_id")
        else:
            target = channel
        # A webhook's messages name the webhook as their author (message#message-object,
        # note [1]) and carry its webhook_id.
        message = self._new_message(target, body, {**_user(hook_id, "mailgate", None, bot=True),
                                                   "discriminator": "0000"}, hook_id,
                                    first=thread_name is not None)
        return Answer(200, message) if query.get("wait") == "true" else Answer(204)

    def start_thread(self, query, headers, body, channel_id: str) -> Answer:
        self._authorize(headers)
        channel = self._channel(channel_id)
        if channel.kind == "forum":
            raise _form_error("message", "BASE_TYPE_REQUIRED", "This field is required")
        if channel.kind != "text":
            raise Refusal(400, 50024, "Cannot execute action on this channel type")
        body = body if isinstance(body, dict) else {}
        name = body.get("name")
        if not isinstance(name, str) or not 1 <= len(name) <= 100:
            raise _form_error("name", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in"
                              " length.")
        kind = body.get("type", 12)
        if kind not in THREAD_TYPES:
            raise _form_error("type", "BASE_TYPE_CHOICES", f"Value must be one of"
                              f" {sorted(THREAD_TYPES)}.")
        if body.get("auto_archive_duration", 1440) not in (60, 1440, 4320, 10080):
            raise _form_error("auto_archive_duration", "BASE_TYPE_CHOICES",
                              "Value must be one of (60, 1440, 4320, 10080).")
        thread = self._new_thread(channel, name, THREAD_TYPES[kind])
        return Answer(201, {"id": thread.id, "type": kind, "parent_id": channel.id,
                            "name": thread.name, "message_count": 0,
                            "thread_metadata": {"archived": False, "locked": False,
                                                "auto_archive_duration":
                                                    body.get("auto_archive_duration", 1440)}})

    def create_message(self, query, headers, body, channel_id: str) -> Answer:
        self._authorize(headers)
        channel = self._channel(channel_id)
        if channel.kind == "forum":
            raise Refusal(400, 50008, "Cannot send messages in a non-text channel")
        _check_message(body, webhook=False)
        self._unarchive(channel)
        nonce = body.get("nonce")
        if nonce is not None and body.get("enforce_nonce"):
            earlier = self._nonces.get((channel.id, str(nonce)))
            if earlier and time.monotonic() - earlier[0] < NONCE_WINDOW:
                return Answer(200, earlier[1])
        message = self._new_message(channel, body, self.bot_user, None)
        if nonce is not None:
            self._nonces[(channel.id, str(nonce))] = (time.monotonic(), message)
        return Answer(200, message)

    def list_messages(self, query, headers, body, channel_id: str) -> Answer:
        """https://discord.com/developers/docs/resources/message#get-channel-messages"""
        self._authorize(headers)
        channel = self._channel(channel_id)
        if channel.kind == "forum":
            # A forum holds threads, not messages.
            raise Refusal(400, 50024, "Cannot execute action on this channel type")
        limit = query.get("limit", "50")
        if not limit.isdigit() or not 1 <= int(limit) <= 100:
            raise _form_error("limit", "NUMBER_TYPE_MAX", "Must be between 1 and 100.")
        anchors = [k for k in ("around", "before", "after") if k in query]
        if len(anchors) > 1:
            # "The before, after, and around parameters are mutually exclusive."
            raise _form_error(anchors[1], "BASE_TYPE_BAD", "Only one of around, before,"
                              " after may be given.")
        if anchors and not query[anchors[0]].isdigit():
            raise _form_error(anchors[0], "NUMBER_TYPE_COERCE",
                              f"Value \"{query[anchors[0]]}\" is not snowflake.")
        found = _window(channel.messages, anchors[0] if anchors else None,
                        int(query[anchors[0]]) if anchors else 0, int(limit))
        return Answer(200, [self._as_read(m) for m in found])

    def _as_read(self, message: dict) -> dict:
        """A message as the bot reads it.  Without the MESSAGE_CONTENT intent the fields
        with what people wrote are empty, except in the bot's own messages and those
        that mention it
        (https://discord.com/developers/docs/events/gateway#message-content-intent)."""
        shown = dict(message)
        mentioned = any(u["id"] == self.bot_user["id"] for u in message["mentions"])
        if not self.message_content_intent and message["author"]["id"] != \
                self.bot_user["id"] and not mentioned:
            shown.update(content="", embeds=[], attachments=[], components=[])
        return shown

    def current_user(self, query, headers, body) -> Answer:
        """https://discord.com/developers/docs/resources/user#get-current-user"""
        self._authorize(headers)
        return Answer(200, dict(self.bot_user))

    def attachment_file(self, query, headers, body, channel_id: str, attachment_id: str,
                        filename: str) -> Answer:
        """The CDN: a file by its url, no authentication (and none is sent to it)."""
        found = self.files.get(attachment_id)
        if found is None:
            return Answer(404, b"Not Found", content_type="text/plain")
        data, content_type = found
        return Answer(200, data, content_type=content_type)

    # -- the state

    def _unarchive(self, thread: FakeChannel) -> None:
        """"Sending a message will automatically unarchive the thread, unless the thread
        has been locked by a moderator" (https://discord.com/developers/docs/topics/threads)."""
        if thread.archived and thread.locked:
            raise Refusal(400, 50083, "Operation cannot be performed on an archived thread")
        thread.archived = False

    def _authorize(self, headers: dict) -> None:
        if headers.get("authorization") != f"Bot {self.bot_token}":
            raise Refusal(401, 0, "401: Unauthorized")

    def _channel(self, channel_id: str) -> FakeChannel:
        channel = self.channels.get(channel_id)
        if channel is None:
            raise Refusal(404, 10003, "Unknown Channel")
        return channel

    def _snowflake(self) -> str:
        now = (int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22
        self._last_id = max(self._last_id + 1, now)
        return str(self._last_id)

    def _new_thread(self, parent: FakeChannel, name: str, kind: str) -> FakeChannel:
        thread = FakeChannel(self._snowflake(), kind, parent.id, name)
        self.channels[thread.id] = thread
        return thread

    def _new_message(self, channel: FakeChannel, body: dict, author: dict,
                     webhook_id: str | None, first: bool = False) -> dict:
        content, flags = body.get("content") or "", int(body.get("flags") or 0)
        parse, users, roles = _allowed(body.get("allowed_mentions"))
        # https://discord.com/developers/docs/resources/message#message-object
        message = {
            # A forum post's starter message has the thread's id.
            "id": channel.id if first else self._snowflake(),
            "type": 0, "channel_id": channel.id, "content": content, "author": author,
            "flags": flags, "timestamp": _now(), "edited_timestamp": None, "tts": False,
            "pinned": False, "attachments": [],
            "mention_everyone": "everyone" in parse and bool(
                re.search(r"@(everyone|here)\b", content)),
            "mentions": [self.users.get(u) or _user(u, f"user{u}", None)
                         for u in re.findall(r"<@!?(\d+)>", content)
                         if "users" in parse or u in users],
            "mention_roles": [r for r in re.findall(r"<@&(\d+)>", content)
                              if "roles" in parse or r in roles],
            "embeds": [] if flags & SUPPRESS_EMBEDS else [
                {"type": "link", "url": u} for u in re.findall(r"(?<![<\\])https?://[^\s<>]+",
                                                               content)],
        }
        if webhook_id:
            message["webhook_id"] = webhook_id
        channel.messages.append(message)
        self.messages.append(message)
        return message


def _user(user_id: str, username: str, global_name: str | None, bot: bool = False) -> dict:
    """https://discord.com/developers/docs/resources/user#user-object (``discriminator``
    "0": a user on the new username system; ``global_name`` is the display name)."""
    user = {"id": user_id, "username": username, "global_name": global_name,
            "discriminator": "0", "avatar": None, "public_flags": 0}
    return {**user, "bot": True} if bot else user


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _window(messages: list[dict], anchor: str | None, at: int, limit: int) -> list[dict]:
    """The messages GET /channels/{id}/messages answers, newest first.  Snowflakes grow
    with time, so ordering by id is ordering by when they were sent
    (https://discord.com/developers/docs/reference#snowflakes).  ``after``: the
    ``limit`` oldest of those newer than ``at`` (a reader pages forward)."""
    ordered = sorted(messages, key=lambda m: int(m["id"]))
    if anchor == "after":
        chosen = [m for m in ordered if int(m["id"]) > at][:limit]
    elif anchor == "before":
        chosen = [m for m in ordered if int(m["id"]) < at][-limit:]
    elif anchor == "around":
        older = [m for m in ordered if int(m["id"]) < at][-(limit // 2):] if limit > 1 else []
        chosen = older + [m for m in ordered if int(m["id"]) >= at][:limit - len(older)]
    else:
        chosen = ordered[-limit:]
    return chosen[::-1]


def _allowed(spec: Any) -> tuple[set[str], set[str], set[str]]:
    if spec is None:   # no allowed_mentions: everything in the content pings
        return {"everyone", "users", "roles"}, set(), set()
    return set(spec.get("parse") or ()), set(spec.get("users") or ()), set(spec.get("roles") or ())


def _check_message(body: Any, webhook: bool) -> None:
    if not isinstance(body, dict):
        raise Refusal(400, 50109, "The request body contains invalid JSON.")
    content = body.get("content")
    if content is not None and not isinstance(content, str):
        raise _form_error("content", "BASE_TYPE_STRING", "Must be a string.")
    if not (content or "").strip() and not body.get("embeds"):
        raise Refusal(400, 50006, "Cannot send an empty message")
    if len(content) > 2000:
        raise _form_error("content", "BASE_TYPE_MAX_LENGTH", "Must be 2000 or fewer in length.")
    name = body.get("thread_name")
    if name is not None and (not isinstance(name, str) or not 1 <= len(name) <= 100):
        raise _form_error("thread_name", "BASE_TYPE_BAD_LENGTH",
                          "Must be between 1 and 100 in length.")
    allowed = body.get("allowed_mentions")
    if allowed is not None and (not isinstance(allowed, dict) or not set(
            allowed.get("parse") or ()) <= {"everyone", "users", "roles"}):
        raise _form_error("allowed_mentions.parse", "BASE_TYPE_CHOICES",
                          "Value must be one of ('roles', 'users', 'everyone').")
    if int(body.get("flags") or 0) & ~(SUPPRESS_EMBEDS | SUPPRESS_NOTIFICATIONS):
        raise _form_error("flags", "MESSAGE_FLAGS_INVALID", "Invalid flags.")
    nonce = body.get("nonce")
    if nonce is not None and (webhook or len(str(nonce)) > 25):
        raise _form_error("nonce", "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")


def _json_or_none(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def _api_path(path: str) -> str:
    return re.sub(r"^/api(/v\d+)?", "", path)


#: (method, path, endpoint, rate-limit bucket).  Buckets are per route and its top-level
#: resource, the webhook or the channel: reading a thread and posting in it count apart
#: (https://discord.com/developers/docs/topics/rate-limits#rate-limits).  The CDN has none.
ROUTES = [
    ("POST", re.compile(r"/webhooks/(\d+)/([^/]+)"), FakeDiscord.execute_webhook, "webhook"),
    ("POST", re.compile(r"/channels/(\d+)/threads"), FakeDiscord.start_thread, "threads"),
    ("POST", re.compile(r"/channels/(\d+)/messages"), FakeDiscord.create_message, "messages"),
    ("GET", re.compile(r"/channels/(\d+)/messages"), FakeDiscord.list_messages, "read"),
    ("GET", re.compile(r"/users/@me"), FakeDiscord.current_user, "me"),
    ("GET", re.compile(r"/attachments/(\d+)/(\d+)/([^/]+)"), FakeDiscord.attachment_file, None),
]


def _route(method: str, path: str):
    for verb, pattern, action, bucket in ROUTES:
        match = pattern.fullmatch(path)
        if verb == method and match:
            if bucket is None:
                return action, match.groups(), None
            top = match.group(1) if match.groups() else "@me"
            return action, match.groups(), f"{bucket}:{top}"
    raise Refusal(404, 0, "404: Not Found")


def _handler_for(fake: FakeDiscord) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"   # keep-alive, as Discord's edge

        def setup(self) -> None:
            super().setup()
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with fake._lock:
                fake._connections.add(self.connection)

        def finish(self) -> None:
            with fake._lock:
                fake._connections.discard(self.connection)
            try:
                super().finish()
            except OSError:
                pass

        def _serve(self) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            query = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
            headers = {k.lower(): v for k, v in self.headers.items()}
            answer = fake.handle(self.command, url.path, query, headers, raw)
            try:
                self._send(answer)
            except OSError:
                pass   # the client gave up (a timeout test), or stop() cut the line

        def _send(self, answer: Answer) -> None:
            write_answer(self, answer.status, answer.body, answer.content_type,
                         answer.headers)

        do_GET = do_POST = do_PATCH = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass   # tests read fake.posts instead

    return Handler
