"""A small Discord REST client: webhooks, and a bot's threads and messages, posted and read.

It sends exactly what mailgate needs and nothing that could surprise a
channel: every message carries ``allowed_mentions: {"parse": []}`` (an
``@everyone`` quoted from a mail never pings anyone) and the SUPPRESS_EMBEDS
flag (links in mail do not unfurl).  The helpers at the end make text safe
for Discord's markdown and its length limits.

Errors, by what the caller can do (see ``mailgate.errors``)::

    DiscordError
    ├── DiscordUnavailable    retry later: connection refused, timeout, 5xx
    │   └── DiscordRateLimited   429: retry after ``retry_after`` seconds
    ├── DiscordRejected       this message will never be accepted (400, 413 ...)
    │   └── UnknownChannel       code 10003: the thread (or channel) is gone
    └── DiscordConfigError    the operator must fix the webhook, token or permissions

Rate limits are obeyed before they are hit: when an answer says
``X-RateLimit-Remaining: 0``, the next request to that bucket first sleeps
``X-RateLimit-Reset-After`` seconds.  A 429 is not retried here; it is raised
so that the caller's queue can put the message back in line.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any, Callable

import requests

from mailgate.errors import ConfigError, MailgateError, PermanentError, TemporaryError
from mailgate.settings.schema import DISCORD_API

#: Discord's API, as the config's discord.api_base has it by default.
DEFAULT_API_BASE = DISCORD_API
MAX_CONTENT = 2000
MAX_THREAD_NAME = 100
SUPPRESS_EMBEDS = 1 << 2
PUBLIC_THREAD = 11
#: Discord's JSON error code for a channel or thread that does not exist.
UNKNOWN_CHANNEL = 10003
#: Refusals that no message could pass until the channel or config changes: a forum
#: that requires tags (40067), a forum without a thread (220001), a thread name for a
#: channel that is not a forum (220003).
CONFIG_CODES = {40067, 220001, 220003}
#: A week: threads about a ticket should stay visible while people still answer.
THREAD_ARCHIVE_MINUTES = 10080
#: Longer waits than this are the queue's business (defer the message), not a sleep.
MAX_SLEEP = 30.0
#: The most messages one GET /channels/{id}/messages returns.
MAX_PAGE = 100


class DiscordError(MailgateError):
    """Base of the errors this client raises."""


class DiscordUnavailable(DiscordError, TemporaryError):
    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class DiscordRateLimited(DiscordUnavailable):
    def __init__(self, message: str, retry_after: float, is_global: bool = False):
        super().__init__(message, retry_after)
        self.is_global = is_global


class DiscordRejected(DiscordError, PermanentError):
    def __init__(self, message: str, code: int | None = None, errors: Any = None):
        super().__init__(message)
        self.code = code
        self.errors = errors


class UnknownChannel(DiscordRejected):
    pass


class DiscordConfigError(DiscordError, ConfigError):
    pass


@dataclass(frozen=True)
class Webhook:
    id: str
    token: str

    @classmethod
    def from_url(cls, url: str) -> Webhook:
        """``https://discord.com/api/webhooks/<id>/<token>`` (any host or API version)."""
        match = re.search(r"/webhooks/(\d+)/([\w.-]+)/?$", url.split("?")[0])
        if not match:
            raise ValueError("not a Discord webhook URL (…/api/webhooks/<id>/<token>)")
        return cls(*match.groups())

    def __repr__(self) -> str:
        # The token is a password: keep it out of logs and reprs.
        return f"Webhook(id={self.id!r})"


@dataclass(frozen=True)
class Posted:
    message_id: str
    #: Where the message landed: the thread's id when it went to (or created) a thread.
    channel_id: str


class RateLimits:
    """When each bucket (and the global limit) may be used again, by what Discord said."""

    def __init__(self, clock: Callable[[], float], sleep: Callable[[float], Any]):
        self._clock, self._sleep = clock, sleep
        self._until: dict[str, float] = {}
        self._global_until = 0.0

    def wait(self, bucket: str) -> None:
        delay = max(self._global_until, self._until.get(bucket, 0.0)) - self._clock()
        if delay > MAX_SLEEP:
            raise DiscordRateLimited(f"{bucket}: rate limited for {delay:.1f} s", delay)
        if delay > 0:
            self._sleep(delay)

    def update(self, bucket: str, response: requests.Response) -> None:
        now = self._clock()
        if response.status_code == 429:
            retry_after, is_global = _retry_after(response)
            if is_global:
                self._global_until = now + retry_after
            else:
                self._until[bucket] = now + retry_after
            raise DiscordRateLimited(f"{bucket}: 429 rate limited, retry after {retry_after} s",
                                     retry_after, is_global)
        if response.headers.get("X-RateLimit-Remaining") == "0":
            reset_after = _float(response.headers.get("X-RateLimit-Reset-After"), 1.0)
            self._until[bucket] = now + reset_after


def _retry_after(response: requests.Response) -> tuple[float, bool]:
    """The body's ``retry_after`` (precise), else the ``Retry-After`` header, else 1 s."""
    try:
        body = response.json()
    except ValueError:
        body = {}
    body = body if isinstance(body, dict) else {}
    header = _float(response.headers.get("Retry-After"), 1.0)
    seconds = _float(body.get("retry_after"), header)
    is_global = bool(body.get("global")) or response.headers.get("X-RateLimit-Global") == "true"
    return max(seconds, 0.0), is_global


def _float(value: Any, default: float) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


class DiscordClient:
    def __init__(self, api_base: str = DEFAULT_API_BASE, *, bot_token: str | None = None,
                 timeout: float = 10.0, sleep: Callable[[float], Any] = time.sleep,
                 clock: Callable[[], float] = time.monotonic):
        self.api_base = api_base.rstrip("/")
        self.timeout = timeout
        self._bot_token = bot_token
        self._session = requests.Session()
        #: For observers (mailgate.ops.metrics adds a response hook, as for Redmine).
        self.session = self._session
        # Attachments come from Discord's CDN, which needs no token: none is sent there.
        self._cdn = requests.Session()
        self._session.headers["User-Agent"] = "DiscordBot (mailgate, 0.1)"
        if bot_token:
            self._session.headers["Authorization"] = f"Bot {bot_token}"
        self.limits = RateLimits(clock, sleep)

    # -- webhooks ----------------------------------------------------------

    def execute_webhook(self, hook: Webhook, content: str, *, thread_id: str | None = None,
                        thread_name: str | None = None) -> Posted:
        """Post through a webhook; ``thread_name`` opens a thread (a forum post) with it.

        Always ``wait=true``: without it Discord answers 204 even for a message it
        did not save, and we could not learn the new thread's id.
        """
        body = message_body(content)
        if thread_name is not None:
            body["thread_name"] = thread_name
        params = {"wait": "true"}
        if thread_id is not None:
            params["thread_id"] = thread_id
        answer = self._request("POST", f"/webhooks/{hook.id}/{hook.token}", f"webhook:{hook.id}",
                               body, params, secret=hook.token)
        return Posted(str(answer["id"]), str(answer["channel_id"]))

    # -- bot -----------------------------------------------------------------

    def start_thread(self, channel_id: str, name: str) -> str:
        """A public thread without a starter message in a text channel; its id."""
        body = {"name": name, "type": PUBLIC_THREAD,
                "auto_archive_duration": THREAD_ARCHIVE_MINUTES}
        answer = self._request("POST", f"/channels/{channel_id}/threads",
                               f"threads:{channel_id}", body)
        return str(answer["id"])

    def create_message(self, channel_id: str, content: str, *, nonce: str | None = None) -> Posted:
        """Post as the bot.  With a ``nonce``, Discord drops a repeat sent within minutes."""
        body = message_body(content)
        if nonce:
            body.update(nonce=nonce[:25], enforce_nonce=True)
        answer = self._request("POST", f"/channels/{channel_id}/messages",
                               f"messages:{channel_id}", body)
        return Posted(str(answer["id"]), str(answer["channel_id"]))

    # -- reading (a bot reads its threads back: mailgate.intake.discord_threads) ---

    def current_user(self) -> dict:
        """The bot itself: its ``id`` tells its own messages apart."""
        return self._request("GET", "/users/@me", "me", None)

    def messages_after(self, channel_id: str, after: int, limit: int = MAX_PAGE) -> list[dict]:
        """Up to ``limit`` messages just after the message id ``after``, oldest first
        (Discord answers newest first).  Fewer than ``limit``: nothing newer is there."""
        answer = self._request("GET", f"/channels/{channel_id}/messages", f"read:{channel_id}",
                               None, {"after": str(after), "limit": str(limit)})
        if not isinstance(answer, list):
            raise DiscordUnavailable(f"read:{channel_id}: not a list of messages")
        return sorted(answer, key=lambda message: int(message["id"]))

    def download(self, url: str, max_bytes: int) -> bytes:
        """An attachment, at most ``max_bytes + 1`` bytes of it: whoever asks for a file
        of ``max_bytes`` learns from one byte more that it is too big, without the rest."""
        try:
            with self._cdn.get(url, stream=True, timeout=self.timeout) as response:
                if response.status_code >= 500:
                    raise DiscordUnavailable(f"attachment: Discord's CDN answered"
                                             f" {response.status_code}")
                if response.status_code != 200:
                    raise DiscordRejected(f"attachment: {response.status_code}"
                                          f" {response.reason}", response.status_code)
                data = bytearray()
                for chunk in response.iter_content(64 * 1024):
                    data += chunk
                    if len(data) > max_bytes:
                        return bytes(data[:max_bytes + 1])
                return bytes(data)
        except requests.Timeout:
            raise DiscordUnavailable(f"attachment: no answer within {self.timeout} s") from None
        except requests.RequestException as exc:
            raise DiscordUnavailable(f"attachment: {type(exc).__name__}") from None

    # -- the wire ------------------------------------------------------------

    def _request(self, method: str, path: str, bucket: str, body: dict | None,
                 params: dict | None = None, secret: str | None = None) -> Any:
        self.limits.wait(bucket)
        try:
            response = self._session.request(method, self.api_base + path, json=body,
                                             params=params, timeout=self.timeout)
        except requests.Timeout:
            raise DiscordUnavailable(f"{bucket}: no answer within {self.timeout} s") from None
        except requests.RequestException as exc:
            raise DiscordUnavailable(f"{bucket}: {_scrub(str(exc), secret)}") from None
        self.limits.update(bucket, response)
        return _answer(bucket, response)

    def close(self) -> None:
        self._session.close()
        self._cdn.close()


def _scrub(text: str, secret: str | None) -> str:
    # requests puts the URL, and so a webhook's token, into its messages.
    return text.replace(secret, "***") if secret else text


def _answer(what: str, response: requests.Response) -> Any:
    status = response.status_code
    if 200 <= status < 300:
        return response.json() if response.content else {}
    if status >= 500:
        raise DiscordUnavailable(f"{what}: Discord answered {status}")
    try:
        error = response.json()
    except ValueError:
        error = {}
    error = error if isinstance(error, dict) else {}
    code, text = error.get("code"), error.get("message") or response.reason
    detail = f"{what}: {status} {text} (code {code}){_form_errors(error.get('errors'))}"
    if code == UNKNOWN_CHANNEL:
        raise UnknownChannel(detail, code)
    if status in (401, 403, 404) or code in CONFIG_CODES:
        # A deleted webhook, a wrong token, a bot without access: no message will pass.
        raise DiscordConfigError(detail)
    raise DiscordRejected(detail, code, error.get("errors"))


def _form_errors(errors: Any, where: str = "") -> str:
    """Discord's nested ``errors`` object, flattened: ``; content: Must be 2000 or fewer``."""
    if not isinstance(errors, dict):
        return ""
    found = []
    for key, value in errors.items():
        if key == "_errors":
            found += [f"; {where or 'body'}: {e.get('message')}" for e in value
                      if isinstance(e, dict)]
        else:
            found.append(_form_errors(value, f"{where}.{key}" if where else key))
    return "".join(found)


def message_body(content: str) -> dict:
    """Every message's fixed safety: no pings, no link previews."""
    return {"content": content, "allowed_mentions": {"parse": []}, "flags": SUPPRESS_EMBEDS}


# -- making text safe for Discord -----------------------------------------------

_URL = re.compile(r"https?://[^\s<>\"]+")
_INLINE = re.compile(r"([\\*_~`|\[\]<>])")
# At a line's start: headings, lists, quotes, subtext ("-# ").
_LINE_START = re.compile(r"^([ \t]*)([#+-]|\d+\.)", re.MULTILINE)


def discord_length(text: str) -> int:
    """Counted in UTF-16 units, as a JavaScript client would: never less than Discord counts."""
    return len(text.encode("utf-16-le")) // 2


def link(url: str) -> str:
    """A clickable link that does not unfurl into a preview."""
    return f"<{url}>"


def escape_markdown(text: str) -> str:
    """Mail text shown as written: markdown escaped, links kept clickable but quiet."""
    parts, last = [], 0
    for match in _URL.finditer(text):
        url = match.group().rstrip(".,;:!?)'")
        parts.append(_escape_plain(text[last:match.start()]))
        parts.append(link(url))
        last = match.start() + len(url)
    parts.append(_escape_plain(text[last:]))
    return "".join(parts)


def _escape_plain(text: str) -> str:
    text = _INLINE.sub(r"\\\1", text)
    return _LINE_START.sub(lambda m: m.group(1) + _escape_marker(m.group(2)), text)


def _escape_marker(marker: str) -> str:
    # ">" is escaped everywhere by _INLINE; "12." becomes "12\." so it is not a list.
    return marker[:-1] + "\\." if marker.endswith(".") else "\\" + marker


def one_line(text: str) -> str:
    return " ".join(text.split())


def fit(text: str, limit: int, ellipsis: str = "…") -> str:
    """``text`` cut to ``limit`` (Discord's count) with an ellipsis, never mid-escape or mid-link."""
    if discord_length(text) <= limit:
        return text
    if limit < discord_length(ellipsis):
        return ""
    budget = limit - discord_length(ellipsis)
    cut = _cut_point(text, budget)
    return text[:cut].rstrip() + ellipsis


def _cut_point(text: str, budget: int) -> int:
    used, cut = 0, 0
    for token in re.finditer(r"<https?://[^>]*>|\\.|.", text, re.DOTALL):
        used += discord_length(token.group())
        if used > budget:
            break
        cut = token.end()
    return cut
