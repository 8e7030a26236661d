"""What the Redmine client knows between requests, and how long it may rely on it.

Two memories, both kept per client (each process has its own):

``Reads``: every issue the client read, with the moment it asked, and the
moment each of its own writes to an issue finished.  A read stands for the
issue only if it was asked for after the client's last write to it had
finished: it then shows everything this client wrote.  A write still on its
way when the read was asked for makes the read worthless (it may or may not
show it), unless the writer knows what Redmine kept of it (a note and a status
change known kept, ``RedmineClient.add_note``): the read then becomes the issue
as it now is, still dated when it was asked.  Changes made by others (the web
UI) are seen by the next read only, so a read is trusted for a short time
(``FRESH_SECONDS``) from when it was asked, our own writes or not.

``Proofs``: what Redmine was seen to keep, learnt from reading a note back
after writing it.  Redmine answers 204 to a note from a writer without "Add
notes" (and keeps nothing), and to a status change from a writer who may not
edit the issue (and drops it), so only a read-back shows either.  Once a
read-back has shown a writer's note kept in a project and tracker, the next
notes of that writer there are known to be kept for ``PROOF_SECONDS``; the
same for a status change, per project, tracker and whether the writer is the
issue's author (``edit_own_issues``).  A permission revoked within that time is
not seen until it runs out: the same window the user caches have.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Hashable

#: How long a read of an issue (made after our last write to it) stands for the issue.
FRESH_SECONDS = 2.0

#: How long what a read-back proved about a writer's permissions is relied on.
PROOF_SECONDS = 300.0

#: How long a read is kept at all (``seen_within``: RCPT's "it exists").
KEEP_SECONDS = 300.0
#: Above this many issues, what is older than KEEP_SECONDS is forgotten.
KEEP_AT_MOST = 512


@dataclass(frozen=True)
class _Read:
    issue: Any          # clients.redmine.Issue
    asked_at: float     # time.monotonic() when the request went out
    #: The finish of our write this read was brought up to (``Reads.wrote``'s
    #: ``becomes``): it shows that write although asked for before it.
    shows_write: float | None = None

    def shows(self, written: float) -> bool:
        """Whether the read shows our write that finished at ``written``."""
        return self.asked_at > written or self.shows_write == written


class Reads:
    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self._reads: dict[int, _Read] = {}
        self._written: dict[int, float] = {}
        self._lock = threading.Lock()

    def saw(self, issue, asked_at: float) -> None:
        with self._lock:
            known = self._reads.get(issue.id)
            if known is None or known.asked_at <= asked_at:
                self._reads[issue.id] = _Read(issue, asked_at)
            if len(self._reads) > KEEP_AT_MOST:
                self._forget(self.clock() - KEEP_SECONDS)

    def _forget(self, before: float) -> None:
        # A long-running gateway reads many tickets: keep only what can still count.
        self._reads = {k: r for k, r in self._reads.items() if r.asked_at >= before}
        self._written = {k: t for k, t in self._written.items() if t >= before}

    def wrote(self, issue_id: int, was: Any = None, becomes: Any = None) -> None:
        """A write to the issue finished (or failed: it may have happened all the same).

        ``becomes``: what the issue is after this write, when the writer knows it and
        decided on ``was`` (the read ``current`` gave it).  If that read still stood when
        the write finished (no other read replaced it, no other write of ours came
        between), it becomes ``becomes``, dated as before: the next mail to the ticket
        needs no read of its own within FRESH_SECONDS of the first."""
        with self._lock:
            before = self._written.get(issue_id, float("-inf"))
            finished = self._written[issue_id] = self.clock()
            read = self._reads.get(issue_id)
            if becomes is not None and read is not None and read.issue is was \
                    and read.shows(before):
                self._reads[issue_id] = _Read(becomes, read.asked_at, shows_write=finished)

    def current(self, issue_id: int, max_age: float = FRESH_SECONDS):
        """The issue as last read, if that read shows all our writes and is recent."""
        with self._lock:
            read = self._reads.get(issue_id)
            written = self._written.get(issue_id, float("-inf"))
        if read is None or not read.shows(written) or self.clock() - read.asked_at > max_age:
            return None
        return read.issue

    def seen_within(self, issue_id: int, seconds: float) -> bool:
        """Whether any read found the issue in the last ``seconds`` (it exists)."""
        read = self._reads.get(issue_id)
        return read is not None and self.clock() - read.asked_at <= seconds


class Proofs:
    """Facts about what Redmine keeps, each true for ``PROOF_SECONDS`` after it was shown."""

    def __init__(self, clock=time.monotonic, seconds: float = PROOF_SECONDS):
        self.clock = clock
        self.seconds = seconds
        self._until: dict[Hashable, float] = {}
        self._values: dict[Hashable, Any] = {}

    def learn(self, key: Hashable, value: Any = True) -> None:
        self._values[key] = value
        self._until[key] = self.clock() + self.seconds

    def known(self, key: Hashable) -> Any:
        """The value learnt for ``key``, or None when nothing (still) is."""
        if self._until.get(key, float("-inf")) < self.clock():
            return None
        return self._values.get(key)

    def clear(self) -> None:
        self._until.clear()
        self._values.clear()
