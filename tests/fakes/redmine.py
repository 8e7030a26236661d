"""A fake Redmine 5.0 for fast tests: a real HTTP server on 127.0.0.1.

It serves the part of Redmine's REST API that mailgate uses, with the data
scripts/redmine-seed.rb gives a real Redmine (same ids when the real one is
seeded on a fresh database), and with Redmine's quirks, each measured on the
real thing and pinned by tests/test_redmine_contract.py, which runs the same
tests against both:

* a bad API key is the anonymous user: public reads answer 200, anything
  that needs a login (``/users/current.json``, writes, uploads) answers 401;
* ``X-Redmine-Switch-User`` counts only with an admin's key; a login that is
  unknown or not active is 412;
* a body that is not JSON (by its Content-Type) is ignored: a PUT answers 204
  and writes nothing; JSON that does not parse is 400;
* an upload that is not ``application/octet-stream`` is 406; one over Redmine's
  default ``attachment_max_size`` (5120 kB) is 422 with Redmine's message;
* a subject over 255 characters is 422 ("Subject is too long ...");
* a status change the user's roles and workflow do not allow is dropped and
  the rest of the write is kept (204); a new issue always starts in its
  tracker's default status (the seed has no "new issue" transitions);
* ``include=allowed_statuses`` lists what the workflow offers the user (the
  switched-to one), whether or not they may edit the issue: a Requester who
  is not the author is offered statuses a PUT of theirs then drops;
* ``/issues.json?issue_id=1,2`` lists those issues (ids that do not exist are
  left out);
* a stale ``lock_version`` (someone saved in between) is 422 with no message.

Tests can make it misbehave on purpose: ``fail_next(status, count)``,
``delay`` (seconds before each answer), ``stall_answer(method, path)`` (serve
the next such request, then hold its answer until ``release()``: a client
killed meanwhile never learns its write happened), and they can see what it was sent
(``requests``, ``request_count``).  ``reset()`` brings back the seed.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

from tests.fakes.http import write_answer

# ------------------------------------------------------------------ the seed
# As scripts/redmine-seed.rb leaves a fresh Redmine 5.0.4 (Debian 12).

#: status id -> (name, is_closed)
STATUSES = {7: ("Open", False), 8: ("Needs information", False), 9: ("Answered", False),
            10: ("Solved", True), 11: ("Expired", True), 12: ("Invalid", True)}
#: tracker id -> (name, default status id)
TRACKERS = {3: ("Support", 7)}
PRIORITY = {"id": 2, "name": "Normal"}
#: project id -> identifier (the name is the identifier too)
PROJECTS = {1: "site-a", 2: "site-b", 3: "triage"}
#: Projects shown as not public (only their ``is_public``: the seed's are all public).
PRIVATE_PROJECTS: set[str] = set()
#: custom field id -> (name, format)
CUSTOM_FIELDS = {1: ("discord-thread", "bool"), 2: ("discord-thread-id", "string"),
                 3: ("reporter-email", "string"), 4: ("participants", "text")}

_BASE = {"view_issues", "add_issues", "add_issue_notes", "view_issue_watchers"}
#: role -> permissions
PERMISSIONS = {
    "Requester": _BASE | {"edit_own_issues"},
    "Support": _BASE | {"edit_issues", "set_notes_private", "view_private_notes",
                        "add_issue_watchers"},
    "Manager": _BASE | {"edit_issues", "set_notes_private", "view_private_notes",
                        "add_issue_watchers", "delete_issues", "manage_members"},
    # Built in: users who are members of no project (the accounts mailgate makes).
    "Non member": _BASE | {"edit_own_issues"},
}
#: role -> allowed (from, to) status names.  Manager has no members: it is
#: there so that admin (who gets every role's transitions) may do anything.
WORKFLOWS = {
    "Requester": {("Needs information", "Open"), ("Answered", "Open"), ("Expired", "Open"),
                  ("Solved", "Open"), ("Open", "Solved"), ("Needs information", "Solved"),
                  ("Answered", "Solved")},
    "Support": {("Open", "Needs information"), ("Open", "Answered"),
                ("Needs information", "Answered"), ("Answered", "Needs information")},
    "Manager": {(a, b) for a, _ in STATUSES.values() for b, _ in STATUSES.values() if a != b},
}
WORKFLOWS["Non member"] = WORKFLOWS["Requester"]
#: role id -> name, as the seed makes them (Redmine makes its built-in roles first:
#: Non member is 1, Anonymous 2; GET /roles.json lists only the others).
ROLE_IDS = {1: "Non member", 3: "Manager", 4: "Requester", 5: "Support"}


#: Redmine's default Setting.attachment_max_size (5120 kB), in bytes.
ATTACHMENT_MAX_SIZE = 5120 * 1024


@dataclass(frozen=True)
class SeedUser:
    id: int
    login: str
    firstname: str
    lastname: str
    mail: str
    key: str | None = None
    admin: bool = False
    active: bool = True
    #: Roles in every project.
    roles: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.firstname} {self.lastname}"


def _key(suffix: str) -> str:
    return suffix.rjust(40, "0")


USERS = (
    SeedUser(1, "admin", "Redmine", "Admin", "admin@example.org", _key("a11"), admin=True),
    SeedUser(5, "owner", "Olive", "Owner", "owner@example.org", _key("11"), roles=("Requester",)),
    SeedUser(6, "support", "Sam", "Support", "support@example.org", _key("22"),
             roles=("Support",)),
    SeedUser(7, "other", "Oscar", "Other", "other@example.org", _key("33"), roles=("Requester",)),
    SeedUser(8, "gateway", "Mail", "Gateway", "mailgate@example.org", _key("44"),
             roles=("Support", "Requester")),
    SeedUser(9, "locked", "Lou", "Locked", "locked@example.org", active=False),
)
USERS_BY_LOGIN = {u.login: u for u in USERS}
#: When the seed's users were made (their created_on).
SEED_TIME = datetime(2024, 1, 1, tzinfo=timezone.utc)


def api_key(login: str) -> str:
    """The seeded API key of ``login`` (the same on the real Redmine)."""
    key = USERS_BY_LOGIN[login].key
    if key is None:
        raise KeyError(f"{login} has no API key in the seed")
    return key


# ---------------------------------------------------------------- the state


@dataclass
class FakeJournal:
    id: int
    user: SeedUser
    notes: str
    created_on: datetime
    details: list[dict]
    private: bool = False


@dataclass
class FakeIssue:
    id: int
    project_id: int
    tracker_id: int
    status_id: int
    author: SeedUser
    subject: str
    description: str | None
    custom_fields: dict[int, Any]
    created_on: datetime
    updated_on: datetime
    closed_on: datetime | None = None
    journals: list[FakeJournal] = field(default_factory=list)
    attachments: list[dict] = field(default_factory=list)
    lock_version: int = 0


@dataclass
class Seen:
    """One request as the fake received it."""
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    #: Who it is served as (None: anonymous), after any switch-user.
    user: SeedUser | None = None

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


@dataclass
class Response:
    status: int
    body: Any = None          # JSON-able, or bytes, or None for no body
    content_type: str = "application/json"


class HTTPError(Exception):
    def __init__(self, status: int, body: Any = None, content_type: str = "application/json"):
        self.response = Response(status, body, content_type)


def _unprocessable(*messages: str) -> HTTPError:
    return HTTPError(422, {"errors": list(messages)})


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _ts(moment: datetime | None) -> str | None:
    # Redmine keeps fractions of a second but shows whole seconds.
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None


def _status_id(name: str) -> int:
    return next(i for i, (n, _) in STATUSES.items() if n == name)


# ---------------------------------------------------------------- the fake


class Chaos:
    """Random trouble for fault tests: failures before a request is served, and
    after it (the write happened, the client does not learn it)."""

    BEFORE = {"500": lambda: Response(500, {"errors": ["Internal error"]}),
              "422-empty": lambda: Response(422, {"errors": []})}

    def __init__(self, rate: float, seed: int = 0, timeout: float = 1.5):
        import random

        self.rate = rate
        self.timeout = timeout
        self._random = random.Random(seed)
        self.drawn: list[str] = []

    def draw(self) -> str | None:
        if self._random.random() >= self.rate:
            return None
        trouble = self._random.choice(["500", "422-empty", "timeout-after", "500-after"])
        self.drawn.append(trouble)
        return trouble


class FakeRedmine:
    """The server and its data.  ``with FakeRedmine() as fake: ...`` starts and stops it."""

    kind = "fake"

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self.url = ""
        self.admin_key = api_key("admin")
        self.reset()

    # ------------------------------------------------------------ lifecycle

    def start(self) -> FakeRedmine:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        host, port = self._server.server_address[:2]
        self.url = f"http://{host}:{port}"
        threading.Thread(target=self._server.serve_forever, args=(0.05,), name="fake-redmine",
                         daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeRedmine:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset(self) -> None:
        """Back to the seed: no issues, no uploads, no failures, no delay, no log."""
        with self._lock:
            self.issues: dict[int, FakeIssue] = {}
            self.uploads: dict[str, dict] = {}
            self._ids = {"issue": 0, "journal": 0, "upload": 0}
            self._failures: list[tuple[Response, str | None, str | None]] = []
            self.delay = 0.0
            #: Issues the keys' users may not see (as in a private project they have no
            #: role in): 403 on the issue's page, left out of lists, as Redmine answers
            #: (tests/test_redmine_contract.py: an issue a user may not see).
            self.hidden: set[int] = set()
            #: False: answer as WEBrick does, Nagle's algorithm on (header and body are
            #: two writes, so the body waits for the client's ACK of the header).
            self.nodelay = True
            self.chaos: Chaos | None = None
            self._stall: tuple[str, str, threading.Event] | None = None
            self._released = threading.Event()
            self._released.set()
            self.requests: list[Seen] = []
            #: The seed's users, then any made over the API (POST /users.json).
            self.users: list[SeedUser] = list(USERS)

    # ---------------------------------------------------- test hooks & peeks

    def key(self, login: str) -> str:
        return api_key(login)

    def fail_next(self, status: int = 503, count: int = 1, *, body: Any = None,
                  path: str | None = None, method: str | None = None) -> None:
        """Answer the next ``count`` requests (to paths starting with ``path``, of
        ``method``) with ``status``."""
        with self._lock:
            self._failures.extend([(Response(status, body), path, method)] * count)

    def stall_answer(self, method: str, path: str) -> threading.Event:
        """Serve the next ``method`` request to a path starting with ``path``, then hold
        its answer back until ``release()`` (30 s at most).  The event returned is set
        once the request was served."""
        served = threading.Event()
        with self._lock:
            self._released.clear()
            self._stall = (method, path, served)
        return served

    def release(self) -> None:
        self._released.set()

    @property
    def request_count(self) -> int:
        return len(self.requests)

    def issue(self, issue_id: int) -> dict:
        """The issue as the API shows it to an admin, with journals and attachments."""
        with self._lock:
            return self._issue_json(self.issues[issue_id], {"journals", "attachments"})

    def journals(self, issue_id: int) -> list[dict]:
        return self.issue(issue_id)["journals"]

    def set_updated_on(self, issue_id: int, when: datetime) -> None:
        """Pretend the issue was last saved at ``when`` (for expiry tests)."""
        with self._lock:
            self.issues[issue_id].updated_on = when

    # ------------------------------------------------------------- serving

    def handle(self, request: Request) -> Response:
        with self._lock:
            self.requests.append(Seen(request.method, request.path, dict(request.query),
                                      dict(request.headers), request.body))
            failure = self._take_failure(request.path, request.method)
            trouble = self.chaos.draw() if self.chaos else None
        if self.delay:
            time.sleep(self.delay)
        if failure is not None:
            return failure
        if trouble in Chaos.BEFORE:
            return Chaos.BEFORE[trouble]()
        response = self._serve(request)
        self._hold_if_stalled(request)
        if trouble == "timeout-after":
            # The write is done, but the client gives up before it hears so.
            time.sleep(self.chaos.timeout)
        elif trouble == "500-after":
            return Response(500, {"errors": ["Internal error"]})
        return response

    def _serve(self, request: Request) -> Response:
        try:
            action = _route(request.method, request.path)
            with self._lock:
                request.user = self._authenticate(request)
                return action(self, request)
        except HTTPError as error:
            return error.response

    def _hold_if_stalled(self, request: Request) -> None:
        with self._lock:
            stall = self._stall
            if stall is None or request.method != stall[0] \
                    or not request.path.startswith(stall[1]):
                return
            self._stall = None
        stall[2].set()
        self._released.wait(30)

    def _take_failure(self, path: str, method: str) -> Response | None:
        for i, (response, prefix, only) in enumerate(self._failures):
            if (prefix is None or path.startswith(prefix)) and only in (None, method):
                del self._failures[i]
                return response
        return None

    def _authenticate(self, request: Request) -> SeedUser | None:
        key = request.header("X-Redmine-API-Key") or request.query.get("key")
        user = next((u for u in self.users if key and u.key == key and u.active), None)
        login = request.header("X-Redmine-Switch-User")
        if user and user.admin and login:
            switched = next((u for u in self.users if u.login == login), None)
            if switched is None or not switched.active:
                raise HTTPError(412)
            user = switched
        return user

    # ----------------------------------------------------------- endpoints

    def current_user(self, request: Request) -> Response:
        user = _logged_in(request)
        return Response(200, {"user": _user_json(user, request.user, own=True)})

    def list_users(self, request: Request) -> Response:
        _admin_only(request)
        wanted = request.query.get("name", "").lower()
        status = request.query.get("status", "1")
        users = [u for u in sorted(self.users, key=lambda u: u.login)
                 if (not status or int(status) == (1 if u.active else 3))
                 and (not wanted or any(wanted in s.lower() for s in
                                        (u.login, u.firstname, u.lastname, u.mail, u.name)))]
        return _page(request, "users", [_user_json(u, request.user) for u in users], 25)

    def show_user(self, request: Request, user_id: str) -> Response:
        user = next((u for u in self.users if str(u.id) == user_id), None)
        viewer = request.user
        if user is None or not (user.active or (viewer and viewer.admin)):
            raise HTTPError(404)
        return Response(200, {"user": _user_json(user, viewer)})

    def create_user(self, request: Request, *_: str) -> Response:
        """POST /users.json (admin only), with Redmine's validations of a new account."""
        _admin_only(request)
        attrs = _json_body(request).get("user") or {}
        login, mail = str(attrs.get("login") or ""), str(attrs.get("mail") or "")
        errors = []
        if not login:
            errors.append("Login cannot be blank")
        elif not _LOGIN.fullmatch(login):
            errors.append("Login is invalid")
        elif any(u.login.lower() == login.lower() for u in self.users):
            errors.append("Login has already been taken")
        if not _EMAIL.fullmatch(mail):
            errors.append("Email is invalid")
        elif any(u.mail.lower() == mail.lower() for u in self.users):
            errors.append("Email has already been taken")
        for name in ("firstname", "lastname"):
            if not str(attrs.get(name) or "").strip():
                errors.append(f"{name.capitalize().replace('name', ' name')} cannot be blank")
        if errors:
            raise _unprocessable(*errors)
        user = SeedUser(max(u.id for u in self.users) + 1, login, str(attrs["firstname"]),
                        str(attrs["lastname"]), mail, roles=("Non member",))
        self.users.append(user)
        return Response(201, {"user": _user_json(user, request.user)})

    def show_project(self, request: Request, ref: str) -> Response:
        project = _project(ref)
        if project is None:
            raise HTTPError(404)
        ident = PROJECTS[project]
        return Response(200, {"project": {"id": project, "name": ident, "identifier": ident,
                                          "description": "", "status": 1,
                                          "is_public": ident not in PRIVATE_PROJECTS}})

    def list_roles(self, request: Request) -> Response:
        return Response(200, {"roles": [{"id": i, "name": n} for i, n in ROLE_IDS.items()
                                        if i > 2]})

    def show_role(self, request: Request, ref: str) -> Response:
        name = ROLE_IDS.get(int(ref))
        if name is None:
            raise HTTPError(404)
        return Response(200, {"role": {"id": int(ref), "name": name, "assignable": True,
                                       "issues_visibility": "default",
                                       "permissions": sorted(PERMISSIONS[name])}})

    def list_statuses(self, request: Request) -> Response:
        return Response(200, {"issue_statuses": [
            {"id": i, "name": n, "is_closed": c} for i, (n, c) in STATUSES.items()]})

    def list_trackers(self, request: Request) -> Response:
        return Response(200, {"trackers": [
            {"id": i, "name": n, "default_status": {"id": s, "name": STATUSES[s][0]},
             "description": None} for i, (n, s) in TRACKERS.items()]})

    def list_custom_fields(self, request: Request) -> Response:
        _admin_only(request)
        return Response(200, {"custom_fields": [
            {"id": i, "name": n, "customized_type": "issue", "field_format": f,
             "is_required": False, "is_filter": True, "multiple": False, "visible": True,
             "trackers": [{"id": t, "name": TRACKERS[t][0]} for t in TRACKERS], "roles": []}
            for i, (n, f) in CUSTOM_FIELDS.items()]})

    def list_issues(self, request: Request) -> Response:
        q = request.query
        issues = [i for i in self.issues.values() if i.id not in self.hidden]
        if "project_id" in q:
            project = _project(q["project_id"])
            if project is None:
                raise HTTPError(404)
            issues = [i for i in issues if i.project_id == project]
        if "issue_id" in q:
            wanted = {int(i) for i in q["issue_id"].split(",") if i.strip().isdigit()}
            issues = [i for i in issues if i.id in wanted]
        issues = [i for i in issues if _status_matches(i.status_id, q.get("status_id", "open"))]
        if q.get("updated_on", "").startswith(">="):
            # Redmine reads ">=T" as "after the second before T" (Query#date_clause).
            after = _updated_bound("<=" + q["updated_on"][2:]) - timedelta(seconds=1)
            issues = [i for i in issues if i.updated_on > after]
        elif "updated_on" in q:
            bound = _updated_bound(q["updated_on"])
            issues = [i for i in issues if i.updated_on <= bound]
        if q.get("description", "").startswith("~"):
            # Redmine's "contains" operator, case-insensitive.
            wanted = q["description"][1:].lower()
            issues = [i for i in issues if wanted in (i.description or "").lower()]
        order = q.get("sort", "id:desc")
        column = "updated_on" if order.startswith("updated_on") else "id"
        # Redmine breaks ties in any sort by id, newest first.
        issues.sort(key=lambda i: -i.id)
        issues.sort(key=lambda i: getattr(i, column), reverse=order.endswith(":desc")
                    or order not in ("id", "updated_on"))
        return _page(request, "issues", [self._issue_json(i, set()) for i in issues], 25)

    def show_issue(self, request: Request, issue_id: str) -> Response:
        issue = self._find_issue(issue_id)
        if issue.id in self.hidden:
            raise HTTPError(403)
        include = set(request.query.get("include", "").split(","))
        data = self._issue_json(issue, include, request.user)
        if "allowed_statuses" in include and request.user is not None:
            # The workflow's offer only: Redmine does not check here who may edit.
            data["allowed_statuses"] = [
                {"id": i, "name": STATUSES[i][0], "is_closed": STATUSES[i][1]}
                for i in sorted(_allowed_statuses(request.user, issue.status_id))]
        return Response(200, {"issue": data})

    def create_issue(self, request: Request) -> Response:
        user = _logged_in(request)
        attrs = _issue_params(request)
        project = _project(str(attrs.get("project_id", "")))
        if project is not None and not _allowed(user, "add_issues"):
            raise HTTPError(403)
        errors = []
        if not str(attrs.get("subject") or "").strip():
            errors.append("Subject cannot be blank")
        elif len(str(attrs["subject"])) > 255:
            errors.append("Subject is too long (maximum is 255 characters)")
        if project is None:
            errors += ["Project cannot be blank", "Tracker cannot be blank",
                       "Status cannot be blank"]
        if "priority_id" in attrs and str(attrs["priority_id"]) != str(PRIORITY["id"]):
            errors.append("Priority cannot be blank")
        attachments = self._attachments(attrs.get("uploads"), user, errors)
        if errors:
            raise _unprocessable(*errors)
        # An unknown tracker is quietly replaced by the project's first one,
        # and the status by the tracker's default (no "new issue" transitions).
        tracker = int(attrs["tracker_id"]) if str(attrs.get("tracker_id")) in map(
            str, TRACKERS) else next(iter(TRACKERS))
        now = _now()
        self._ids["issue"] += 1
        issue = FakeIssue(
            id=self._ids["issue"], project_id=project, tracker_id=tracker,
            status_id=TRACKERS[tracker][1], author=user, subject=str(attrs["subject"]),
            description=attrs.get("description"), created_on=now, updated_on=now,
            custom_fields=_custom_values(attrs.get("custom_fields")), attachments=attachments)
        self.issues[issue.id] = issue
        return Response(201, {"issue": self._issue_json(issue, set())})

    def update_issue(self, request: Request, issue_id: str) -> Response:
        user = _logged_in(request)
        issue = self._find_issue(issue_id)
        attrs = _issue_params(request)
        editable = _allowed(user, "edit_issues") or (
            _allowed(user, "edit_own_issues") and issue.author.id == user.id)
        if not editable and not _allowed(user, "add_issue_notes"):
            raise HTTPError(403)
        if "lock_version" in attrs and str(attrs["lock_version"]) != str(issue.lock_version):
            # Someone saved in between: Redmine says 422 but gives no message.
            raise _unprocessable()
        errors: list[str] = []
        details = self._changes(issue, attrs, user, errors) if editable else []
        attachments = self._attachments(attrs.get("uploads"), user, errors)
        if errors:
            raise _unprocessable(*errors)
        private = str(attrs.get("private_notes", "")).lower() in ("1", "true") and \
            _allowed(user, "set_notes_private")
        self._save(issue, user, str(attrs.get("notes") or ""), details, attachments, private)
        return Response(204)

    def upload(self, request: Request) -> Response:
        user = _logged_in(request)
        if (request.header("Content-Type") or "").split(";")[0].strip() \
                != "application/octet-stream":
            raise HTTPError(406)
        if len(request.body) > ATTACHMENT_MAX_SIZE:
            raise _unprocessable("This file cannot be uploaded because it exceeds the maximum"
                                 f" allowed file size ({ATTACHMENT_MAX_SIZE})")
        self._ids["upload"] += 1
        upload_id = self._ids["upload"]
        token = f"{upload_id}.{hashlib.sha256(request.body).hexdigest()}"
        self.uploads[token] = {"id": upload_id, "data": request.body, "author": user,
                               "filename": request.query.get("filename", "")}
        return Response(201, {"upload": {"id": upload_id, "token": token}})

    # ------------------------------------------------------------ writing

    def _changes(self, issue: FakeIssue, attrs: dict, user: SeedUser,
                 errors: list[str]) -> list[dict]:
        """Apply what the user may change; return the journal details."""
        details = []
        if "subject" in attrs:
            if not str(attrs["subject"] or "").strip():
                errors.append("Subject cannot be blank")
            elif attrs["subject"] != issue.subject:
                details.append(_attr("subject", issue.subject, attrs["subject"]))
        wanted = str(attrs.get("status_id", ""))
        allowed = _allowed_statuses(user, issue.status_id)
        if wanted.isdigit() and int(wanted) in allowed and int(wanted) != issue.status_id:
            details.append(_attr("status_id", str(issue.status_id), wanted))
        for field_id, value in _custom_values(attrs.get("custom_fields")).items():
            old = issue.custom_fields.get(field_id)
            if (old or "") != (value or ""):
                details.append({"property": "cf", "name": str(field_id),
                                "old_value": old, "new_value": value})
        return details

    def _save(self, issue: FakeIssue, user: SeedUser, notes: str, details: list[dict],
              attachments: list[dict], private: bool = False) -> None:
        now = _now()
        for d in details:
            if d["property"] == "attr" and d["name"] == "status_id":
                issue.status_id = int(d["new_value"])
                issue.closed_on = now if STATUSES[issue.status_id][1] else issue.closed_on
            elif d["property"] == "attr":
                setattr(issue, d["name"], d["new_value"])
            elif d["property"] == "cf":
                issue.custom_fields[int(d["name"])] = d["new_value"]
        details = details + [{"property": "attachment", "name": str(a["id"]),
                              "old_value": None, "new_value": a["filename"]}
                             for a in attachments]
        issue.attachments += attachments
        if notes or details:
            self._ids["journal"] += 1
            issue.journals.append(FakeJournal(self._ids["journal"], user, notes, now, details,
                                              private=private and bool(notes)))
        # Redmine saves (and touches) the issue even when nothing changed.
        issue.updated_on = now
        issue.lock_version += 1

    def _attachments(self, uploads: Any, user: SeedUser, errors: list[str]) -> list[dict]:
        found, missing = [], 0
        for ref in uploads or ():
            upload = self.uploads.pop(str(ref.get("token")), None)
            if upload is None:
                missing += 1
                continue
            found.append({"id": upload["id"], "filename": ref.get("filename")
                          or upload["filename"], "filesize": len(upload["data"]),
                          "content_type": ref.get("content_type"), "author": upload["author"],
                          "created_on": _now()})
        if missing:
            errors.append(f"{missing} file(s) could not be saved.")
        return found

    # ------------------------------------------------------------ reading

    def _find_issue(self, issue_id: str) -> FakeIssue:
        issue = self.issues.get(int(issue_id)) if issue_id.isdigit() else None
        if issue is None:
            raise HTTPError(404)
        return issue

    def _issue_json(self, issue: FakeIssue, include: set[str],
                    viewer: SeedUser | None = None) -> dict:
        status, closed = STATUSES[issue.status_id]
        data = {
            "id": issue.id, "project": {"id": issue.project_id,
                                        "name": PROJECTS[issue.project_id]},
            "tracker": {"id": issue.tracker_id, "name": TRACKERS[issue.tracker_id][0]},
            "status": {"id": issue.status_id, "name": status, "is_closed": closed},
            "priority": dict(PRIORITY),
            "author": {"id": issue.author.id, "name": issue.author.name},
            "subject": issue.subject, "description": issue.description,
            "start_date": issue.created_on.strftime("%Y-%m-%d"), "due_date": None,
            "done_ratio": 0, "is_private": False, "estimated_hours": None,
            "total_estimated_hours": None,
            "custom_fields": [{"id": i, "name": n, "value": issue.custom_fields.get(i)}
                              for i, (n, _) in CUSTOM_FIELDS.items()],
            "created_on": _ts(issue.created_on), "updated_on": _ts(issue.updated_on),
            "closed_on": _ts(issue.closed_on),
        }
        if "attachments" in include:
            data["attachments"] = [self._attachment_json(a) for a in issue.attachments]
        if "journals" in include:
            # A private note is shown only to those who may see private notes.
            sees_private = viewer is not None and _allowed(viewer, "view_private_notes")
            data["journals"] = [
                {"id": j.id, "user": {"id": j.user.id, "name": j.user.name}, "notes": j.notes,
                 "created_on": _ts(j.created_on), "private_notes": j.private,
                 "details": [dict(d) for d in j.details]} for j in issue.journals
                if sees_private or not j.private]
        return data

    def _attachment_json(self, a: dict) -> dict:
        return {"id": a["id"], "filename": a["filename"], "filesize": a["filesize"],
                "content_type": a["content_type"], "description": "",
                "content_url": f"{self.url}/attachments/download/{a['id']}/{a['filename']}",
                "author": {"id": a["author"].id, "name": a["author"].name},
                "created_on": _ts(a["created_on"])}


# ------------------------------------------------------------------ routing
# Tried in order; the first match wins.  No match is Redmine's HTML 404.

ROUTES: list[tuple[str, re.Pattern, Callable]] = [
    ("GET", re.compile(r"/users/current\.json"), FakeRedmine.current_user),
    ("GET", re.compile(r"/users\.json"), FakeRedmine.list_users),
    ("GET", re.compile(r"/users/(\d+)\.json"), FakeRedmine.show_user),
    ("POST", re.compile(r"/users\.json"), FakeRedmine.create_user),
    ("GET", re.compile(r"/issue_statuses\.json"), FakeRedmine.list_statuses),
    ("GET", re.compile(r"/projects/([^/]+)\.json"), FakeRedmine.show_project),
    ("GET", re.compile(r"/roles\.json"), FakeRedmine.list_roles),
    ("GET", re.compile(r"/roles/(\d+)\.json"), FakeRedmine.show_role),
    ("GET", re.compile(r"/trackers\.json"), FakeRedmine.list_trackers),
    ("GET", re.compile(r"/custom_fields\.json"), FakeRedmine.list_custom_fields),
    ("GET", re.compile(r"/issues\.json"), FakeRedmine.list_issues),
    ("GET", re.compile(r"/issues/([^/]+)\.json"), FakeRedmine.show_issue),
    ("POST", re.compile(r"/issues\.json"), FakeRedmine.create_issue),
    ("PUT", re.compile(r"/issues/([^/]+)\.json"), FakeRedmine.update_issue),
    ("POST", re.compile(r"/uploads\.json"), FakeRedmine.upload),
]

NOT_FOUND_PAGE = b"<!DOCTYPE html><html><head><title>Redmine 404 error</title></head>" \
                 b"<body><h1>Page not found</h1></body></html>"


def _route(method: str, path: str) -> Callable[[FakeRedmine, Request], Response]:
    for verb, pattern, action in ROUTES:
        match = pattern.fullmatch(path)
        if verb == method and match:
            return lambda fake, request: action(fake, request, *match.groups())
    raise HTTPError(404, NOT_FOUND_PAGE, "text/html; charset=utf-8")


# ------------------------------------------------------- rules of Redmine


def _logged_in(request: Request) -> SeedUser:
    if request.user is None:
        raise HTTPError(401)
    return request.user


def _admin_only(request: Request) -> None:
    if not _logged_in(request).admin:
        raise HTTPError(403)


def _allowed(user: SeedUser, permission: str) -> bool:
    # Every member is a member of every project, with the same roles.
    return user.admin or any(permission in PERMISSIONS[r] for r in user.roles)


def _allowed_statuses(user: SeedUser, current: int) -> set[int]:
    """Redmine's Issue#new_statuses_allowed_to: the workflow of the user's roles."""
    roles = PERMISSIONS if user.admin else user.roles
    name = STATUSES[current][0]
    allowed = {_status_id(b) for r in roles for a, b in WORKFLOWS[r] if a == name}
    return allowed | {current} if allowed else allowed


#: Redmine 5's User validations (app/models/user.rb: LOGIN_LENGTH_LIMIT, the login
#: format; the address format of lib/redmine/... is stricter than this, never looser).
_LOGIN = re.compile(r"[a-z0-9_\-@.]{1,60}", re.IGNORECASE)
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


def _json_body(request: Request) -> dict:
    try:
        params = json.loads(request.body or b"{}")
    except ValueError:
        raise HTTPError(400, b"", "text/html; charset=utf-8") from None
    return params if isinstance(params, dict) else {}


def _issue_params(request: Request) -> dict:
    """The ``issue`` parameters, parsed as Rails would by the Content-Type."""
    kind = (request.header("Content-Type") or "").split(";")[0].strip().lower()
    params: Any = {}
    if kind == "application/json" and request.body:
        try:
            params = json.loads(request.body)
        except ValueError:
            raise HTTPError(400, b"", "text/html; charset=utf-8") from None
    elif kind == "application/x-www-form-urlencoded":
        form = parse_qs(request.body.decode("utf-8", "replace"))
        params = {"issue": {m[1]: v[0] for k, v in form.items()
                            if (m := re.fullmatch(r"issue\[(\w+)\]", k))}}
    # Anything else (no Content-Type, text/plain, ...) is not read at all.
    issue = params.get("issue", {}) if isinstance(params, dict) else {}
    if not isinstance(issue, dict):
        raise HTTPError(500, {"status": 500, "error": "Internal Server Error"})
    return issue


def _custom_values(values: Any) -> dict[int, Any]:
    # Unknown field ids are ignored.  Values are kept as Ruby's to_s makes
    # them, unchecked: JSON true in a boolean field is "true", not "1".
    found = {}
    for item in values or ():
        field_id = int(item.get("id", 0))
        if field_id in CUSTOM_FIELDS:
            value = item.get("value")
            found[field_id] = json.dumps(value) if isinstance(value, bool) else (
                None if value is None else str(value))
    return found


def _attr(name: str, old: Any, new: Any) -> dict:
    return {"property": "attr", "name": name, "old_value": old, "new_value": new}


def _project(ref: str) -> int | None:
    return next((i for i, ident in PROJECTS.items() if ref in (str(i), ident)), None)


def _status_matches(status_id: int, wanted: str) -> bool:
    closed = STATUSES[status_id][1]
    if wanted == "*":
        return True
    if wanted in ("open", "closed"):
        return closed == (wanted == "closed")
    return str(status_id) in wanted.split("|")


def _updated_bound(value: str) -> datetime:
    """The upper bound of ``updated_on=<=...``: a time to the second, or a whole day."""
    if value.startswith("<="):
        text = value[2:]
        for pattern, extra in (("%Y-%m-%dT%H:%M:%SZ", timedelta(0)),
                               ("%Y-%m-%d", timedelta(days=1, microseconds=-1))):
            try:
                return datetime.strptime(text, pattern).replace(tzinfo=timezone.utc) + extra
            except ValueError:
                continue
    raise _unprocessable("Updated is invalid")


def _page(request: Request, key: str, items: list, default_limit: int) -> Response:
    limit = min(int(request.query.get("limit", default_limit)), 100)
    offset = int(request.query.get("offset", 0))
    return Response(200, {key: items[offset:offset + limit], "total_count": len(items),
                          "offset": offset, "limit": limit})


def _user_json(user: SeedUser, viewer: SeedUser | None, own: bool = False) -> dict:
    data: dict[str, Any] = {"id": user.id, "login": user.login}
    # Others see no address (users hide it by default) and no admin flag.
    if own or (viewer and viewer.admin):
        data["admin"] = user.admin
    data.update(firstname=user.firstname, lastname=user.lastname)
    if viewer and viewer.admin:
        data["mail"] = user.mail
    stamp = _ts(SEED_TIME)
    data.update(created_on=stamp, updated_on=stamp, last_login_on=None, passwd_changed_on=stamp)
    if own or (viewer and viewer.admin):
        data.update(twofa_scheme=None, api_key=user.key)
    if viewer and viewer.admin:
        data["status"] = 1 if user.active else 3
    return data


# ---------------------------------------------------------------- the wire


def _handler_for(fake: FakeRedmine) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"   # keep-alive, as Redmine's WEBrick

        def setup(self) -> None:
            super().setup()
            # Headers and body go out in two writes: without this, Nagle's
            # algorithm and delayed ACKs add 40 ms to every answer.
            if fake.nodelay:
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def _serve(self) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            request = Request(
                method=self.command, path=url.path,
                query={k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()},
                headers={k.lower(): v for k, v in self.headers.items()},
                body=self.rfile.read(length) if length else b"")
            try:
                self._send(fake.handle(request))
            except (BrokenPipeError, ConnectionResetError):
                pass   # the client gave up (a timeout test): nobody to answer

        def _send(self, response: Response) -> None:
            write_answer(self, response.status, response.body, response.content_type)

        do_GET = do_POST = do_PUT = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass   # tests read fake.requests instead

    return Handler
