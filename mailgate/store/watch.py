"""The Redmine watcher's state, in the store (SQLite or PostgreSQL): two tables.

* ``watch_state``: one row per thing watched (``redmine``): the watermark
  (Redmine's ``updated_on`` the polls have reached), the issues already
  handled near it, when the next poll is due, and a lease on the poll, so that
  the hosts sharing a store take turns rather than all poll at once.
* ``watch_journals``: each journal a poll found, keyed by Redmine's journal
  id.  The key is the guard: a journal found again (the overlap of two polls,
  a poll repeated after a crash, another host's poll) is not added again, so
  each journal becomes events once.  A row waits as ``queued`` until its
  events are queued (``done``) or it is given up on (``dead``), claimed under
  a lease like every durable queue's items.

Every method is one durable commit.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from mailgate.store.connect import connect
from mailgate.store.database import Location

#: The one watched thing today.
REDMINE = "redmine"


@dataclass(frozen=True)
class PollState:
    """Where the polls stand, as a claimed poll starts from it."""

    #: Redmine's ``updated_on`` reached (ISO, UTC, to the second); None: never polled.
    watermark: str | None
    #: The first watermark: journals older than it are history, never told.
    started: str | None
    #: {issue id: updated_on} of the issues already handled near the watermark.
    handled: dict[int, str]
    #: Polls failed in a row.
    failures: int


@dataclass(frozen=True)
class FoundJournal:
    """A journal waiting to become events (a queue item of ``mailgate.runner``)."""

    id: int                     # Redmine's journal id
    ticket: int
    #: The journal and its issue as the poll saw them (mailgate.watcher.snapshot).
    snapshot: dict
    created_at: float
    failures: int


# Each statement in both dialects: {p} is the parameter, {skip} PostgreSQL's way of
# passing over rows another host is claiming.
_SQL = {
    "ensure": "INSERT INTO watch_state (name) VALUES ({p}) ON CONFLICT (name) DO NOTHING",
    # A forced poll (the one-shot `mailgate worker`) is due whenever nobody holds it.
    "claim_poll": "UPDATE watch_state SET lease_until = {p} WHERE name = {p}"
                  " AND lease_until <= {p} AND (next_poll_at <= {p} OR {p} = 1)"
                  " RETURNING watermark, started, handled, failures",
    "renew_poll": "UPDATE watch_state SET lease_until = {p} WHERE name = {p}"
                  " AND lease_until > 0",
    "polled": "UPDATE watch_state SET watermark = {p}, started = COALESCE(started, {p}),"
              " handled = {p}, next_poll_at = {p}, lease_until = 0, failures = 0,"
              " last_error = NULL, polled_at = {p} WHERE name = {p}",
    # The watermark stays where it was: the next poll starts from it again.
    "poll_failed": "UPDATE watch_state SET next_poll_at = {p}, lease_until = 0,"
                   " failures = failures + 1, last_error = {p} WHERE name = {p}",
    "state": "SELECT watermark, started, handled, failures, last_error, polled_at,"
             " next_poll_at, lease_until FROM watch_state WHERE name = {p}",
    "add": "INSERT INTO watch_journals (journal_id, ticket, snapshot, created_at)"
           " VALUES ({p}, {p}, {p}, {p}) ON CONFLICT (journal_id) DO NOTHING",
    # The oldest due journal whose ticket has no older one still waiting: a ticket's
    # events are queued in the order its journals were written.
    "claim": "UPDATE watch_journals SET lease_until = {p} WHERE journal_id = ("
             "SELECT j.journal_id FROM watch_journals j WHERE j.state = 'queued'"
             " AND j.next_attempt_at <= {p} AND j.lease_until <= {p}"
             " AND NOT EXISTS (SELECT 1 FROM watch_journals e WHERE e.ticket = j.ticket"
             " AND e.state = 'queued' AND e.journal_id < j.journal_id)"
             " ORDER BY j.journal_id LIMIT 1{skip})"
             " RETURNING journal_id, ticket, snapshot, created_at, failures",
    "renew": "UPDATE watch_journals SET lease_until = {p} WHERE journal_id = {p}"
             " AND state = 'queued' AND lease_until > 0",
    "done": "UPDATE watch_journals SET state = 'done', outcome = {p}, finished_at = {p},"
            " lease_until = 0, last_error = NULL WHERE journal_id = {p}",
    "defer": "UPDATE watch_journals SET next_attempt_at = {p}, last_error = {p},"
             " lease_until = 0, failures = failures + {p} WHERE journal_id = {p}",
    "bury": "UPDATE watch_journals SET state = 'dead', last_error = {p}, finished_at = {p},"
            " lease_until = 0 WHERE journal_id = {p}",
    "journal_due": "SELECT min(CASE WHEN next_attempt_at > lease_until THEN next_attempt_at"
                   " ELSE lease_until END) FROM watch_journals WHERE state = 'queued'",
    "poll_due": "SELECT CASE WHEN next_poll_at > lease_until THEN next_poll_at"
                " ELSE lease_until END FROM watch_state WHERE name = {p}",
    "counts": "SELECT state, count(*) FROM watch_journals GROUP BY state",
    "journal": "SELECT state, outcome, last_error FROM watch_journals WHERE journal_id = {p}",
}


def _dialect(backend: str) -> dict[str, str]:
    postgres = backend != "sqlite"
    return {name: sql.format(p="%s" if postgres else "?",
                             skip=" FOR UPDATE SKIP LOCKED" if postgres else "")
            for name, sql in _SQL.items()}


class WatchStore:
    """``watch_state`` and ``watch_journals``, through a connection of their own."""

    def __init__(self, where: Location | str | os.PathLike[str], name: str = REDMINE):
        self.db = connect(where)
        self.sql = _dialect(self.db.backend)
        self.name = name
        self.db.change(self.sql["ensure"], (name,))

    def close(self) -> None:
        self.db.close()

    # -- the poll ----------------------------------------------------------------

    def claim_poll(self, now: float, lease: float, force: bool = False) -> PollState | None:
        """The poll, if it is due (or ``force``) and no other process holds it."""
        rows = self.db.rows(self.sql["claim_poll"],
                            (now + lease, self.name, now, now, 1 if force else 0))
        if not rows:
            return None
        watermark, started, handled, failures = rows[0]
        return PollState(watermark, started,
                         {int(k): v for k, v in json.loads(handled or "{}").items()}, failures)

    def renew_poll(self, until: float) -> None:
        self.db.change(self.sql["renew_poll"], (until, self.name))

    def polled(self, watermark: str, handled: dict[int, str], next_poll: float,
               now: float) -> None:
        """A poll went through: the watermark moves on, the next poll is due then."""
        self.db.change(self.sql["polled"], (watermark, watermark, json.dumps(handled),
                                            next_poll, now, self.name))

    def poll_failed(self, error: str, next_poll: float) -> None:
        self.db.change(self.sql["poll_failed"], (next_poll, error[:1000], self.name))

    def state(self) -> dict[str, Any]:
        """The watch's row, for people and tests."""
        row = self.db.rows(self.sql["state"], (self.name,))[0]
        keys = ("watermark", "started", "handled", "failures", "last_error", "polled_at",
                "next_poll_at", "lease_until")
        return dict(zip(keys, row))

    # -- the journals --------------------------------------------------------------

    def add(self, journal_id: int, ticket: int, snapshot: dict, now: float) -> bool:
        """Queue a journal found by a poll; False when it was found before."""
        return self.db.change(self.sql["add"], (journal_id, ticket, json.dumps(snapshot),
                                                now)) == 1

    def claim(self, now: float, lease: float) -> FoundJournal | None:
        rows = self.db.rows(self.sql["claim"], (now + lease, now, now))
        if not rows:
            return None
        journal_id, ticket, snapshot, created_at, failures = rows[0]
        return FoundJournal(journal_id, ticket, json.loads(snapshot), created_at, failures)

    def renew(self, journal_id: int, until: float) -> None:
        self.db.change(self.sql["renew"], (until, journal_id))

    def done(self, journal_id: int, outcome: dict, now: float) -> None:
        self.db.change(self.sql["done"], (json.dumps(outcome), now, journal_id))

    def defer(self, journal_id: int, error: str, until: float, failed: bool) -> None:
        self.db.change(self.sql["defer"], (until, error[:1000], 1 if failed else 0,
                                           journal_id))

    def bury(self, journal_id: int, error: str, now: float) -> None:
        self.db.change(self.sql["bury"], (error[:1000], now, journal_id))

    def journal(self, journal_id: int) -> dict | None:
        """What became of one journal: its state, outcome and last error (None: never found)."""
        rows = self.db.rows(self.sql["journal"], (journal_id,))
        if not rows:
            return None
        state, outcome, error = rows[0]
        return {"state": state, "outcome": json.loads(outcome) if outcome else None,
                "last_error": error}

    # -- for the runner --------------------------------------------------------------

    def next_due(self) -> float | None:
        """When a journal or the poll is due next (None: nothing waits)."""
        journal = self.db.rows(self.sql["journal_due"])[0][0]
        poll = self.db.rows(self.sql["poll_due"], (self.name,))
        times = [t for t in (journal, poll[0][0] if poll else None) if t is not None]
        return min(times) if times else None

    def counts(self) -> dict[str, int]:
        counts = {"queued": 0, "done": 0, "dead": 0}
        counts.update(dict(self.db.rows(self.sql["counts"])))
        return counts
