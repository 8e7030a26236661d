"""The Redmine REST client: the only module that talks HTTP to Redmine.

It reads tickets and users, and writes notes, status changes, new tickets and
attachments, always as JSON through one ``requests.Session``.  What went wrong
is told by the error's class, chosen by what the caller can do about it::

    connection refused, timeout, 5xx, 429,
    422 with an empty error list (a concurrent edit)   RedmineUnavailable  retry later
    401, 403                                          ConfigError         fix the key
    404 on an issue                                   NoSuchTicket        refuse the mail
    412 (no active user to switch to)                 UnknownUser         refuse the mail
    422 with messages, 413 (a proxy's size limit)     RedmineRejected     refuse the mail
                                                      (an upload's: leave that file out)

Redmine 5.0 has quirks the code below works around; tests/test_redmine_contract.py
pins each of them against a real Redmine and against tests/fakes/redmine.py:

* A write without ``Content-Type: application/json`` is answered 204 and
  writes nothing, so every write here sets it.
* A status change the user's role and workflow do not allow (or an unknown
  status id) is dropped silently: the note is kept and the answer is 204.
  ``add_note`` reads the issue back and reports ``status_applied=False``.
* A new issue always starts in its tracker's default status unless the
  workflow has "new issue" transitions; ``create_issue`` moves it afterwards.
* ``X-Redmine-Switch-User`` is ignored unless the key is an admin's, so the
  client checks who it really writes as before it writes for someone.
* A bad key is served as the anonymous user on public reads (200), and only
  ``/users/current.json`` says 401: ``current_user`` is the start-up check.

What it read and what a read-back proved are remembered (``knowledge``): a
note's read-back is skipped when what Redmine keeps of it is already known
(``add_note(read_back=False)``).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import requests

from mailgate.clients import transport
from mailgate.clients.batch import Batched
from mailgate.clients.knowledge import FRESH_SECONDS, Proofs, Reads
from mailgate.errors import (ConfigError, Forbidden, NoSuchTicket, RedmineRejected,
                             RedmineUnavailable, UnknownUser)

if TYPE_CHECKING:
    from mailgate.config import RedmineSettings

log = logging.getLogger(__name__)

#: How ``NoteResult.outcome`` names a status change Redmine dropped.
STATUS_REFUSED = "status change refused by Redmine's workflow"

#: Redmine's largest page for list endpoints.
PAGE_SIZE = 100
#: The id of Redmine's built-in Non member role (``non_member_permissions``).
NON_MEMBER_ROLE = 1

#: How long what we learnt about a user (email, login) is trusted.
USER_CACHE_SECONDS = 300.0


@dataclass(frozen=True)
class User:
    id: int
    login: str
    email: str | None
    name: str


@dataclass(frozen=True)
class Journal:
    id: int
    user_id: int
    user_name: str
    notes: str
    created_on: str
    #: (old, new) status ids when this journal changed the status.
    status_change: tuple[int | None, int | None] | None
    #: Everything else the journal changed, as Redmine lists it.
    details: tuple[Mapping[str, Any], ...] = ()
    #: A private note: only roles allowed to see private notes read it.
    private: bool = False


@dataclass(frozen=True)
class Attachment:
    id: int
    filename: str
    filesize: int
    content_type: str | None
    author_id: int | None


@dataclass(frozen=True)
class Issue:
    id: int
    project_id: int
    project_name: str
    tracker_id: int
    subject: str
    description: str
    status_id: int
    status_name: str
    author_id: int
    author_name: str
    author_email: str | None
    journals: tuple[Journal, ...]
    #: custom field name -> value as Redmine stores it (a bool field is "1"/"0"/"" or None).
    custom_fields: Mapping[str, Any]
    updated_on: str
    attachments: tuple[Attachment, ...] = ()
    status_closed: bool = False
    assigned_to_id: int | None = None
    parent_id: int | None = None


@dataclass(frozen=True)
class Change:
    """An issue in the list of what changed: which, and when it last did."""

    id: int
    updated_on: str


@dataclass(frozen=True)
class NoteResult:
    #: None when the note was not read back (what Redmine kept was known).
    journal_id: int | None
    status_requested: int | None
    status_applied: bool
    #: The issue as read back after the write (None: not read back).
    issue: Issue | None

    @property
    def status_refused(self) -> bool:
        return self.status_requested is not None and not self.status_applied

    @property
    def outcome(self) -> str:
        if self.status_refused:
            return STATUS_REFUSED
        return "status changed" if self.status_requested is not None else "note added"


class _Cache:
    """A dict whose entries are forgotten after ``ttl`` seconds, safe across threads.

    A missing entry is computed by one thread at a time per key: spool workers that
    start together need the same writer, and would each ask Redmine for it."""

    def __init__(self, ttl: float):
        self.ttl = ttl
        self._items: dict[Any, tuple[float, Any]] = {}
        self._locks: dict[Any, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, key: Any, compute: Callable[[], Any]) -> Any:
        hit = self._fresh(key)
        if hit is not None:
            return hit[0]
        with self._lock_for(key):
            hit = self._fresh(key)      # the thread before us may have computed it
            if hit is not None:
                return hit[0]
            value = compute()
            self.put(key, value)
            return value

    def _fresh(self, key: Any) -> tuple[Any] | None:
        """(the value,) if it is there and not expired."""
        hit = self._items.get(key)
        return (hit[1],) if hit and hit[0] > time.monotonic() else None

    def _lock_for(self, key: Any) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def put(self, key: Any, value: Any) -> None:
        self._items[key] = (time.monotonic() + self.ttl, value)

    def clear(self) -> None:
        self._items.clear()


class RedmineClient:
    def __init__(self, url: str, api_key: str, *, timeout: float = 10.0,
                 connect_timeout: float = 3.05):
        self.url = url.rstrip("/")
        self.timeout = (connect_timeout, timeout)
        self._api_key = api_key
        #: Called with every response, whichever thread's session got it (metrics).
        self.response_hooks: list[Callable[..., Any]] = []
        # requests.Session is not thread-safe: each thread (the SMTP intake, each
        # spool runner) gets a session of its own.
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()
        self._users = _Cache(USER_CACHE_SECONDS)      # user id -> User | None
        self._by_email = _Cache(USER_CACHE_SECONDS)   # lower-case address -> User | None
        self._by_login = _Cache(USER_CACHE_SECONDS)   # login (None: the key's own) -> User
        self._custom_field_ids: dict[str, int] | None = None
        self._statuses: dict[int, tuple[str, bool]] | None = None  # id -> (name, closed)
        self.reads = Reads()
        self._proofs = Proofs()
        self._exists = Batched(self.read_issues)

    @classmethod
    def from_settings(cls, settings: RedmineSettings) -> RedmineClient:
        return cls(settings.url, settings.api_key, timeout=settings.timeout)

    @property
    def session(self) -> requests.Session:
        """This thread's HTTP session (keep-alive connections are per thread)."""
        session = getattr(self._local, "session", None)
        if session is None:
            session = transport.session()
            session.headers.update({"X-Redmine-API-Key": self._api_key,
                                    "Accept": "application/json"})
            session.hooks["response"] = self.response_hooks
            self._local.session = session
            with self._sessions_lock:
                self._sessions.append(session)
        return session

    def close(self) -> None:
        with self._sessions_lock:
            for session in self._sessions:
                session.close()
            self._sessions.clear()
        self._local = threading.local()

    def __enter__(self) -> RedmineClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ HTTP

    def _request(self, method: str, path: str, *, as_user: str | None = None,
                 missing: Callable[[str], Exception] | None = None,
                 **kwargs: Any) -> requests.Response:
        """Send one request; any answer but 2xx becomes the error the caller can act on."""
        headers = kwargs.pop("headers", {})
        if as_user is not None:
            headers["X-Redmine-Switch-User"] = as_user
        where = f"{method} {path}"
        try:
            response = self.session.request(method, self.url + path, headers=headers,
                                            timeout=self.timeout, **kwargs)
        except requests.Timeout:
            raise RedmineUnavailable(f"Redmine did not answer {where} in time") from None
        except requests.RequestException as exc:
            raise RedmineUnavailable(f"cannot reach Redmine at {self.url}: {exc}") from None
        if response.status_code >= 400:
            raise _error_for(response, where, as_user, missing)
        return response

    def _get(self, path: str, **kwargs: Any) -> dict:
        return _json(self._request("GET", path, **kwargs), f"GET {path}")

    def _write(self, method: str, path: str, body: Mapping[str, Any],
               **kwargs: Any) -> requests.Response:
        # Without this Content-Type Redmine answers 204 and writes nothing.
        return self._request(method, path, json=body,
                             headers={"Content-Type": "application/json"}, **kwargs)

    # ------------------------------------------------------- start-up checks

    def current_user(self) -> User:
        """Who the API key belongs to: the start-up check of the key (never cached)."""
        user = self._whoami(None)
        self._by_login.put(None, user)
        return user

    def status_ids(self, names: Mapping[str, str]) -> dict[str, int]:
        """{state id: status name} -> {state id: status id}; a missing status is a ConfigError."""
        statuses = self._get("/issue_statuses.json")["issue_statuses"]
        self._statuses = _statuses(statuses)
        known = {s["name"]: s["id"] for s in statuses}
        missing = sorted(f"{name!r} (for state {state})" for state, name in names.items()
                         if name not in known)
        if missing:
            raise ConfigError(f"Redmine has no issue status {', '.join(missing)};"
                              f" it has {', '.join(map(repr, known))}")
        return {state: known[name] for state, name in names.items()}

    def project_exists(self, identifier: str) -> bool:
        """Whether the project is there and the key may see it."""
        return self.project(identifier) is not None

    def project(self, identifier: str) -> dict | None:
        """The project as Redmine shows it, or None if it is not there (or not visible)."""
        try:
            response = self._request("GET", f"/projects/{identifier}.json",
                                     missing=lambda where: _NotFound(where))
        except _NotFound:
            return None
        return _json(response, f"GET /projects/{identifier}.json")["project"]

    def non_member_permissions(self) -> frozenset[str]:
        """What Redmine's built-in Non member role may do in public projects: all that
        an account which is a member of no project (``unknown_senders: create``) may do.
        Redmine makes its built-in roles first, so Non member is role 1."""
        role = self._get(f"/roles/{NON_MEMBER_ROLE}.json")["role"]
        return frozenset(role.get("permissions") or ())

    def acting_user(self, login: str) -> User:
        """The active user ``login``, as a write as them would be made (UnknownUser when
        Redmine has no such active user)."""
        return self._actor(login)

    def issue_custom_field_names(self) -> set[str]:
        return set(self._custom_fields())

    def tracker_id(self, name: str) -> int:
        trackers = {t["name"]: t["id"] for t in self._get("/trackers.json")["trackers"]}
        if name not in trackers:
            raise ConfigError(f"Redmine has no tracker {name!r}; it has"
                              f" {', '.join(map(repr, trackers))}")
        return trackers[name]

    # ----------------------------------------------------------------- reads

    def get_issue(self, issue_id: int) -> Issue:
        """The issue with its journals and attachments, and its author's address."""
        asked = time.monotonic()
        path = f"/issues/{int(issue_id)}.json"
        data = self._get(path, params={"include": "journals,attachments"},
                         missing=_no_ticket(issue_id))
        return self._read(data["issue"], asked)

    def read_issues(self, issue_ids: Sequence[int]) -> dict[int, Issue]:
        """Issues by id, any status, a page of them per request; no journals.  An id
        Redmine does not list (missing, or not visible) is not in the answer."""
        wanted = sorted({int(i) for i in issue_ids})
        found: dict[int, Issue] = {}
        for start in range(0, len(wanted), PAGE_SIZE):
            found.update(self._read_page(wanted[start:start + PAGE_SIZE]))
        return found

    def _read_page(self, ids: Sequence[int]) -> dict[int, Issue]:
        asked = time.monotonic()
        params = {"issue_id": ",".join(map(str, ids)), "status_id": "*", "limit": PAGE_SIZE}
        found = self._get("/issues.json", params=params)["issues"]
        return {raw["id"]: self._read(raw, asked) for raw in found}

    def current_issue(self, issue_id: int, max_age: float = FRESH_SECONDS) -> Issue | None:
        """The issue as this client last read it, if that read was asked for after our
        last write to it and is at most ``max_age`` seconds old (knowledge.Reads)."""
        return self.reads.current(int(issue_id), max_age)

    def issue_exists(self, issue_id: int) -> bool:
        """Whether the ticket is there for mail: one Redmine will not show is answered
        like a missing one, so RCPT does not tell the two apart.  Threads asking at the
        same time share one list request (``batch.Batched``)."""
        return self._exists.ask(int(issue_id)) is not None

    def allowed_statuses(self, issue_id: int, as_user: str | None) -> frozenset[int]:
        """The statuses Redmine's workflow offers ``as_user`` on the issue now (its own
        status among them when any is offered).  The workflow's answer only: a PUT by a
        writer who may not edit the issue drops any of them (tests/test_redmine_contract.py)."""
        data = self._get(f"/issues/{int(issue_id)}.json", params={"include": "allowed_statuses"},
                         as_user=as_user, missing=_no_ticket(issue_id))
        return frozenset(s["id"] for s in data["issue"].get("allowed_statuses") or ())

    def find_user_by_email(self, email: str, fresh: bool = False) -> User | None:
        """The active user whose address this is (any case), or None.  ``fresh``: ask
        Redmine even if the answer is remembered (and remember the new one)."""
        wanted = email.strip().lower()
        if "@" not in wanted:
            return None     # Redmine would search logins and names for it
        if not fresh:
            return self._by_email.get(wanted, lambda: self._search_user(wanted))
        found = self._search_user(wanted)
        self._by_email.put(wanted, found)
        return found

    def issues(self, *, status_id: int | None = None, updated_before: datetime | None = None,
               project: str | None = None) -> list[Issue]:
        """Every issue matching the filters, all pages, oldest id first; no journals."""
        params: dict[str, Any] = {"status_id": status_id if status_id is not None else "*",
                                  "sort": "id", "limit": PAGE_SIZE}
        if updated_before is not None:
            params["updated_on"] = "<=" + _before(updated_before)
        if project is not None:
            params["project_id"] = project
        pages = self._pages("/issues.json", "issues", params, _no_project(project))
        return [self._issue(raw) for raw in pages]

    def changed_since(self, since: str, offset: int = 0) -> tuple[list[Change], int]:
        """One page of the issues updated at or after ``since`` (Redmine's ISO time, to the
        second), any status, oldest update first; and how many there are in all.

        Redmine reads ``>=`` as "after the second before": an issue updated in that
        second (shown as the second before) is listed too."""
        params = {"updated_on": ">=" + since, "status_id": "*", "sort": "updated_on",
                  "limit": PAGE_SIZE, "offset": offset}
        data = self._get("/issues.json", params=params)
        return ([Change(raw["id"], raw["updated_on"]) for raw in data["issues"]],
                data.get("total_count", 0))

    def latest_update(self) -> str | None:
        """When the most recently updated issue was updated (None: there are no issues)."""
        params = {"status_id": "*", "sort": "updated_on:desc", "limit": 1}
        issues = self._get("/issues.json", params=params)["issues"]
        return issues[0]["updated_on"] if issues else None

    def issue_journals(self, issue_id: int) -> Issue:
        """The issue with its journals, in one request (its author's address is not
        looked up: ``author_email`` is None)."""
        data = self._get(f"/issues/{int(issue_id)}.json", params={"include": "journals"},
                         missing=_no_ticket(issue_id))
        return _issue(data["issue"], None)

    def status_names(self) -> dict[int, str]:
        """Redmine's issue statuses: id -> name."""
        return {s["id"]: s["name"] for s in self._get("/issue_statuses.json")["issue_statuses"]}

    def find_issue_with_text(self, project: str, text: str) -> int | None:
        """The id of an issue in ``project`` whose description contains ``text``, if any."""
        params = {"project_id": project, "status_id": "*", "description": "~" + text,
                  "sort": "id", "limit": 1}
        issues = self._get("/issues.json", params=params, missing=_no_project(project))["issues"]
        return issues[0]["id"] if issues else None

    def _pages(self, path: str, key: str, params: dict[str, Any],
               missing: Callable[[str], Exception] | None = None) -> list[dict]:
        items: list[dict] = []
        while True:
            data = self._get(path, params={**params, "offset": len(items)}, missing=missing)
            items.extend(data[key])
            if not data[key] or len(items) >= data.get("total_count", 0):
                return items

    def _search_user(self, email: str) -> User | None:
        # ?name= also matches logins and names: keep only an exact address.
        data = self._get("/users.json", params={"name": email, "status": 1, "limit": PAGE_SIZE})
        for raw in data["users"]:
            if (raw.get("mail") or "").lower() == email:
                return _user(raw)
        return None

    def user(self, user_id: int) -> User | None:
        """A user by id, with their address (None: not visible), remembered for a while."""
        return self._user(user_id)

    def user_login(self, user_id: int) -> str | None:
        """The login of a user by id (None: not visible), remembered for a while."""
        user = self._user(user_id)
        return user.login if user else None

    def _user(self, user_id: int) -> User | None:
        """A user by id, with their address (only an admin key sees it)."""
        return self._users.get(user_id, lambda: self._fetch_user(user_id))

    def _fetch_user(self, user_id: int) -> User | None:
        try:
            return _user(self._get(f"/users/{user_id}.json", missing=_NotFound)["user"])
        except _NotFound:
            # Locked users are invisible to a non-admin key: the address is unknown.
            return None

    def user_by_login(self, login: str) -> User | None:
        """The active user ``login``, with their address, as a write as them would find
        them (None: no such active user); remembered for a while."""
        try:
            actor = self._actor(login)
        except UnknownUser:
            return None
        # /users/current.json hides a user's address from themselves (their preference);
        # the admin key sees it on the user's own page.
        return actor if actor.email else (self._user(actor.id) or actor)

    def _actor(self, login: str | None) -> User:
        """The user a write as ``login`` (None: the key's own user) is really made by."""
        return self._by_login.get(login, lambda: self._whoami(login))

    def _whoami(self, login: str | None) -> User:
        user = _user(self._get("/users/current.json", as_user=login)["user"])
        if login is not None and user.login != login:
            # Redmine ignores X-Redmine-Switch-User for a non-admin key and
            # would write as the key's owner instead of the sender.
            raise ConfigError(f"the Redmine API key is not an admin's: it cannot write as"
                              f" {login!r} (it writes as {user.login!r})")
        return user

    def _issue(self, raw: Mapping[str, Any]) -> Issue:
        author = self._user(raw["author"]["id"])
        return _issue(raw, author.email if author else None)

    def _read(self, raw: Mapping[str, Any], asked: float) -> Issue:
        issue = self._issue(raw)
        self.reads.saw(issue, asked)
        return issue

    # ---------------------------------------------------------------- writes

    def upload(self, data: bytes, filename: str, content_type: str, *,
               as_user: str | None = None) -> dict:
        """Store a file in Redmine; the result goes in a write's ``uploads``."""
        # Any Content-Type but octet-stream is answered 406.
        response = self._request("POST", "/uploads.json", params={"filename": filename},
                                 data=data, as_user=as_user,
                                 headers={"Content-Type": "application/octet-stream"})
        token = _json(response, "POST /uploads.json")["upload"]["token"]
        return {"token": token, "filename": filename, "content_type": content_type}

    def create_issue(self, project: str, subject: str, description: str, *,
                     tracker_id: int | None = None, status_id: int | None = None,
                     custom_fields: Mapping[str, Any] | None = None,
                     uploads: Sequence[dict] = (), extra: Mapping[str, Any] | None = None,
                     as_user: str | None = None) -> int:
        """Open a ticket (as ``as_user``, who becomes its author) and return its id."""
        fields = dict(extra or {})
        named = {**_as_mapping(fields.pop("custom_fields", None)), **(custom_fields or {})}
        body: dict[str, Any] = {**fields, "project_id": project, "subject": subject,
                                "description": description}
        if tracker_id is not None:
            body["tracker_id"] = tracker_id
        if named:
            body["custom_fields"] = self._custom_field_values(named)
        if uploads:
            body["uploads"] = list(uploads)
        if as_user is not None:
            # With a key that cannot switch user, Redmine would make the
            # ticket the key owner's instead of the sender's.
            self._actor(as_user)
        # An unknown project is a 422 ("Project cannot be blank"), not a 404.
        created = _json(self._write("POST", "/issues.json", {"issue": body}, as_user=as_user),
                        "POST /issues.json")["issue"]
        if status_id is not None and created["status"]["id"] != status_id:
            self._move_new_issue(created["id"], status_id, as_user)
        return created["id"]

    def _move_new_issue(self, issue_id: int, status_id: int, as_user: str | None) -> None:
        # Redmine starts every issue in the tracker's default status unless the
        # workflow has "new issue" transitions: take the ordinary transition.
        result = self.add_note(issue_id, "", status_id=status_id, as_user=as_user)
        if result.status_refused:
            log.warning("new issue #%s stays in %r: %s to status %s for %s", issue_id,
                        result.issue.status_name, STATUS_REFUSED, status_id, as_user)

    def add_note(self, issue_id: int, notes: str, *, status_id: int | None = None,
                 uploads: Sequence[dict] = (), as_user: str | None = None,
                 read_back: bool = True) -> NoteResult:
        """Post a note (and a status change) as ``as_user``; say what Redmine really kept.

        Redmine answers 204 whatever it kept, so the issue is read back after the write.
        ``read_back=False``: not when what Redmine keeps of this write is already known
        (``_kept_unread``); the result then has no journal id and no issue."""
        actor = self._actor(as_user)
        body: dict[str, Any] = {"notes": notes}
        if status_id is not None:
            body["status_id"] = status_id
        if uploads:
            body["uploads"] = list(uploads)
        known = None if read_back else self._kept_unread(issue_id, notes, status_id, actor,
                                                         as_user)
        self._write_issue(issue_id, {"issue": body}, as_user=as_user,
                          was=known, becomes=self._after(known, status_id) if known else None)
        if known is not None:
            return NoteResult(None, status_id, True, None)
        issue = self.get_issue(issue_id)
        journal = _written_journal(issue, actor.id, notes)
        if notes.strip() and journal is None:
            raise RedmineRejected(f"Redmine answered 204 but kept no note on #{issue_id}"
                                  f" (may {actor.login!r} add notes there?)")
        applied = status_id is None or issue.status_id == status_id or bool(
            journal and journal.status_change and journal.status_change[1] == status_id)
        self._learn(issue, actor, notes, journal, status_id if applied else None)
        return NoteResult(journal.id if journal else None, status_id, applied, issue)

    # What Redmine keeps of a note, known without reading it back (knowledge.Proofs).

    def _kept_unread(self, issue_id: int, notes: str, status_id: int | None, actor: User,
                     as_user: str | None) -> Issue | None:
        """The issue as read since our last write to it, if that read shows Redmine will
        keep all of this write; else None (read it back)."""
        issue = self.current_issue(issue_id)
        if issue is None or not self._all_kept(issue, notes, status_id, actor, as_user):
            return None
        return issue

    def _all_kept(self, issue: Issue, notes: str, status_id: int | None, actor: User,
                  as_user: str | None) -> bool:
        """Whether Redmine keeps the note, since this writer's notes were shown kept in
        its project and tracker, and the status change, since Redmine's workflow offers
        it to this writer (allowed_statuses, per issue shape) and this writer's status
        changes were shown kept on such issues.  A closing status, or an issue with a
        parent, is always read back: whether they may close or reopen depends on
        subtasks and blocking relations, which the shape does not show."""
        if issue.parent_id is not None:
            return False
        where = (actor.login, issue.project_id, issue.tracker_id)
        if notes.strip() and not self._proofs.known(("notes", *where)):
            return False
        if status_id is None:
            return True
        if self._is_closed(status_id):
            return False
        author = issue.author_id == actor.id
        if not self._proofs.known(("status", *where, author)):
            return False
        return status_id in self._offered(issue, actor, as_user, author)

    def _after(self, issue: Issue, status_id: int | None) -> Issue:
        """The issue once a write known kept (``_all_kept``) set ``status_id``.  Its
        journals and attachments are not known, so it has none: a current read is used
        for the ticket's state, never for its history."""
        unknown = replace(issue, journals=(), attachments=())
        if status_id is None:
            return unknown
        name, closed = self._status(status_id)
        return replace(unknown, status_id=status_id, status_name=name, status_closed=closed)

    def _offered(self, issue: Issue, actor: User, as_user: str | None,
                 author: bool) -> frozenset[int]:
        """allowed_statuses for this writer on issues of this shape.  For a parentless
        issue and an open status, Redmine's answer depends only on the writer's roles in
        the project, the tracker, the current status, and whether the writer is the
        author or the assignee (Issue#new_statuses_allowed_to)."""
        key = ("offered", actor.login, issue.project_id, issue.tracker_id, issue.status_id,
               author, issue.assigned_to_id)
        offered = self._proofs.known(key)
        if offered is None:
            offered = self.allowed_statuses(issue.id, as_user)
            self._proofs.learn(key, offered)
        return offered

    def _learn(self, issue: Issue, actor: User, notes: str, journal: Journal | None,
               status_kept: int | None) -> None:
        where = (actor.login, issue.project_id, issue.tracker_id)
        if notes.strip() and journal is not None:
            self._proofs.learn(("notes", *where))
        # Only a change this write made proves the writer may change the status here.
        if status_kept is not None and journal is not None and journal.status_change \
                and journal.status_change[1] == status_kept:
            self._proofs.learn(("status", *where, issue.author_id == actor.id))

    def _status(self, status_id: int) -> tuple[str, bool] | None:
        """The status's name and whether it closes; None: Redmine has no such status."""
        if self._statuses is None:
            self._statuses = _statuses(self._get("/issue_statuses.json")["issue_statuses"])
        return self._statuses.get(status_id)

    def _is_closed(self, status_id: int) -> bool:
        # An unknown status is dropped by Redmine: read back, as for a closing one.
        status = self._status(status_id)
        return status is None or status[1]

    def create_user(self, login: str, mail: str, firstname: str, lastname: str, *,
                    tell_them: bool = False) -> User:
        """Make an active account, as Redmine's ``unknown_user=create`` does: a password
        nobody knows (``generate_password``), mail about their own issues only, and
        Redmine's "your account" mail only when ``tell_them``.  Needs an admin key.
        A refusal (a login or address already taken) is RedmineRejected, with
        Redmine's messages."""
        body = {"user": {"login": login, "mail": mail, "firstname": firstname,
                         "lastname": lastname, "generate_password": True,
                         "mail_notification": "only_my_events"},
                "send_information": tell_them}
        created = _user(_json(self._write("POST", "/users.json", body), "POST /users.json")
                        ["user"])
        self._by_email.put(mail.lower(), created)
        return created

    def set_custom_field(self, issue_id: int, name: str, value: Any) -> None:
        """Set one custom field by name, and check that Redmine kept it."""
        values = self._custom_field_values({name: value})
        path = f"/issues/{int(issue_id)}.json"
        self._write_issue(issue_id, {"issue": {"custom_fields": values}})
        kept = _issue(self._get(path, missing=_no_ticket(issue_id))["issue"], None)
        if not _same_value(kept.custom_fields.get(name), values[0]["value"]):
            raise RedmineRejected(f"Redmine did not keep {name}={value!r} on #{issue_id}"
                                  f" (it has {kept.custom_fields.get(name)!r})")

    def _write_issue(self, issue_id: int, body: Mapping[str, Any],
                     as_user: str | None = None, *, was: Issue | None = None,
                     becomes: Issue | None = None) -> None:
        """PUT the issue; ``becomes``: what it is then, known from ``was`` (Reads.wrote)."""
        try:
            self._write("PUT", f"/issues/{int(issue_id)}.json", body, as_user=as_user,
                        missing=_no_ticket(issue_id))
        except BaseException:
            # Even a failed write may have happened: earlier reads no longer stand for it.
            self.reads.wrote(int(issue_id))
            raise
        self.reads.wrote(int(issue_id), was=was, becomes=becomes)

    def _custom_field_values(self, named: Mapping[str, Any]) -> list[dict]:
        ids = self._custom_fields()
        unknown = sorted(set(named) - set(ids))
        if unknown:
            raise ConfigError(f"Redmine has no issue custom field {', '.join(map(repr, unknown))}")
        return [{"id": ids[name], "value": _field_value(value)} for name, value in named.items()]

    def custom_field_names(self) -> dict[int, str]:
        """The issue custom fields, id -> name (a journal names a field by its id)."""
        return {field_id: name for name, field_id in self._custom_fields().items()}

    def _custom_fields(self) -> dict[str, int]:
        # Only an admin key may list custom fields; they change rarely.
        if self._custom_field_ids is None:
            fields = self._get("/custom_fields.json")["custom_fields"]
            self._custom_field_ids = {f["name"]: f["id"] for f in fields
                                      if f.get("customized_type") == "issue"}
        return self._custom_field_ids

    def clear_caches(self) -> None:
        for cache in (self._users, self._by_email, self._by_login):
            cache.clear()
        self._custom_field_ids = None
        self._statuses = None
        self._proofs.clear()


def _statuses(listed: Sequence[Mapping[str, Any]]) -> dict[int, tuple[str, bool]]:
    return {s["id"]: (s["name"], bool(s.get("is_closed"))) for s in listed}


# ---------------------------------------------------------------- errors


class _NotFound(Exception):
    """A 404 the caller turns into an answer rather than an error."""


def _no_ticket(issue_id: int) -> Callable[[str], Exception]:
    return lambda where: NoSuchTicket(f"Redmine has no ticket #{issue_id}")


def _no_project(project: str | None) -> Callable[[str], Exception]:
    return lambda where: ConfigError(f"Redmine has no project {project!r} ({where})")


def _error_for(response: requests.Response, where: str, as_user: str | None,
               missing: Callable[[str], Exception] | None) -> Exception:
    code = response.status_code
    if code == 401:
        return ConfigError(f"API key rejected by Redmine (401 on {where})")
    if code == 403 and (as_user is not None or where.split()[-1].startswith("/issues/")):
        # This ticket, for this user: a refusal of the mail, not of the gateway.
        who = f"{as_user} may" if as_user else "the gateway may"
        return Forbidden(f"{who} not {where} (403: no permission in that project)")
    if code == 403:
        return ConfigError(f"the API key may not {where} (403): does it need to be an admin's?")
    if code == 404:
        return (missing or _wrong_url)(where)
    if code == 412:
        return UnknownUser(f"Redmine has no active user {as_user!r}")
    if code == 422:
        return _unprocessable(response, where)
    if code == 413:
        # A proxy in front of Redmine (nginx's client_max_body_size) refusing an upload.
        return RedmineRejected(f"Redmine answered 413 to {where}",
                               ["the file is larger than the server in front of Redmine"
                                " takes (413)"])
    if code == 429 or code >= 500:
        return RedmineUnavailable(f"Redmine answered {code} to {where}")
    # 400, 406, ...: a request this client should never send; retrying cannot help.
    return RedmineRejected(f"Redmine answered {code} to {where}")


def _wrong_url(where: str) -> Exception:
    return ConfigError(f"Redmine answered 404 to {where}: is this the Redmine URL?")


def _unprocessable(response: requests.Response, where: str) -> Exception:
    try:
        messages = [str(m) for m in response.json().get("errors") or []]
    except (ValueError, AttributeError):
        messages = []
    if not messages:
        # What Redmine says when someone else saved the issue in between.
        return RedmineUnavailable(f"Redmine refused {where} without a reason"
                                  " (a concurrent edit?); try again")
    return RedmineRejected(f"Redmine refused {where}: {'; '.join(messages)}", messages)


def _json(response: requests.Response, where: str) -> dict:
    try:
        data = response.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise ConfigError(f"{where} did not answer JSON: is this the Redmine URL?")
    return data


# --------------------------------------------------------------- parsing


def _user(raw: Mapping[str, Any]) -> User:
    name = " ".join(filter(None, (raw.get("firstname"), raw.get("lastname"))))
    return User(id=raw["id"], login=raw.get("login", ""), email=raw.get("mail"),
                name=name or raw.get("login", ""))


def _issue(raw: Mapping[str, Any], author_email: str | None) -> Issue:
    return Issue(
        id=raw["id"], project_id=raw["project"]["id"], project_name=raw["project"]["name"],
        tracker_id=raw["tracker"]["id"], subject=raw["subject"],
        description=raw.get("description") or "",
        status_id=raw["status"]["id"], status_name=raw["status"]["name"],
        status_closed=bool(raw["status"].get("is_closed")),
        author_id=raw["author"]["id"], author_name=raw["author"]["name"],
        author_email=author_email,
        journals=tuple(_journal(j) for j in raw.get("journals", ())),
        custom_fields={f["name"]: f.get("value") for f in raw.get("custom_fields", ())},
        updated_on=raw["updated_on"],
        attachments=tuple(_attachment(a) for a in raw.get("attachments", ())),
        assigned_to_id=(raw.get("assigned_to") or {}).get("id"),
        parent_id=(raw.get("parent") or {}).get("id"),
    )


def _journal(raw: Mapping[str, Any]) -> Journal:
    details = tuple(raw.get("details") or ())
    return Journal(id=raw["id"], user_id=raw["user"]["id"], user_name=raw["user"]["name"],
                   notes=raw.get("notes") or "", created_on=raw["created_on"],
                   status_change=_status_change(details), details=details,
                   private=bool(raw.get("private_notes")))


def _status_change(details: Sequence[Mapping[str, Any]]) -> tuple[int | None, int | None] | None:
    for d in details:
        if d.get("property") == "attr" and d.get("name") == "status_id":
            return _int_or_none(d.get("old_value")), _int_or_none(d.get("new_value"))
    return None


def _attachment(raw: Mapping[str, Any]) -> Attachment:
    return Attachment(id=raw["id"], filename=raw["filename"], filesize=raw["filesize"],
                      content_type=raw.get("content_type"),
                      author_id=(raw.get("author") or {}).get("id"))


def _int_or_none(value: Any) -> int | None:
    return int(value) if value not in (None, "") else None


def _written_journal(issue: Issue, user_id: int, notes: str) -> Journal | None:
    """The newest journal by ``user_id`` with exactly these notes (our write, read back)."""
    for journal in reversed(issue.journals):
        # An empty note matches only a journal that changed something.
        if journal.user_id == user_id and journal.notes == notes and (notes or journal.details):
            return journal
    return None


# ----------------------------------------------------------------- values


def _field_value(value: Any) -> Any:
    """A custom field value as Redmine stores it: booleans are "1" and "0"."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return [_field_value(v) for v in value]
    return str(value)


def _same_value(stored: Any, sent: Any) -> bool:
    # Redmine answers null for a field that was set to "".
    return (stored if stored is not None else "") == sent


def _as_mapping(value: Any) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"custom_fields: expected a mapping of field name to value,"
                          f" got {value!r}")
    return value


def _before(moment: datetime) -> str:
    """Redmine's ``updated_on=<=`` bound for "updated before ``moment``".

    Redmine keeps fractions of a second but takes the bound in whole seconds:
    ``moment`` is rounded down, so the answer is right to the second (naive
    datetimes are UTC).
    """
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    moment = moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
