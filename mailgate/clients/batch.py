"""Questions asked at the same time, answered by one request.

Several SMTP sessions check their recipients' tickets at once (RCPT), each in
a thread of its own.  One request for a list of tickets costs Redmine about
what one for a single ticket does (a few ms more per ticket), so the threads
that ask while a request is on its way are answered together by the next one.
Nobody waits for company: the first to ask sends at once, with what is
pending then; it is the time a request takes that gathers the next batch.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Callable, Generic, Hashable, Mapping, Sequence, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Batched(Generic[K, V]):
    """``ask(key)``: ``fetch(keys)[key]``, or None where ``fetch`` has no answer for it;
    keys asked for while a fetch is on its way are fetched together next.  A failed
    fetch raises its error in every thread that asked in that batch."""

    def __init__(self, fetch: Callable[[Sequence[K]], Mapping[K, V]]):
        self._fetch = fetch
        self._pending: dict[K, Future] = {}
        self._fetching = False
        self._turn = threading.Condition()

    def ask(self, key: K) -> V | None:
        with self._turn:
            answer = self._pending.setdefault(key, Future())
            while self._fetching and not answer.done():
                self._turn.wait()
            if answer.done():
                return answer.result()
            # Our turn: everything pending goes in this fetch, ours with it.
            self._fetching = True
            batch, self._pending = self._pending, {}
        try:
            self._answer(batch)
        finally:
            with self._turn:
                self._fetching = False
                self._turn.notify_all()
        return answer.result()

    def _answer(self, batch: dict[K, Future]) -> None:
        try:
            found = self._fetch(list(batch))
        except BaseException as exc:  # noqa: BLE001 - each asker gets it, as if it had asked
            for answer in batch.values():
                answer.set_exception(exc)
            return
        for key, answer in batch.items():
            answer.set_result(found.get(key))
