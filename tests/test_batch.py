"""mailgate.clients.batch: questions asked at once, one request (the RCPT checks)."""

from __future__ import annotations

import threading

from mailgate.clients.batch import Batched


class Fetcher:
    """Records each batch; the first one waits until told, so the others gather."""

    def __init__(self, fail: BaseException | None = None):
        self.batches: list[list[int]] = []
        self.first_in = threading.Event()
        self.go_on = threading.Event()
        self.fail = fail

    def __call__(self, keys):
        self.batches.append(sorted(keys))
        if len(self.batches) == 1:
            self.first_in.set()
            self.go_on.wait(5)
        if self.fail is not None:
            raise self.fail
        return {k: f"ticket {k}" for k in keys if k % 2 == 0}


def ask_all(batched, keys, answers):
    def ask(key):
        try:
            answers[key] = batched.ask(key)
        except Exception as exc:    # noqa: BLE001 - the test looks at it
            answers[key] = exc
    threads = [threading.Thread(target=ask, args=(k,)) for k in keys]
    for thread in threads:
        thread.start()
    return threads


def test_asks_made_while_a_fetch_is_on_its_way_go_together_in_the_next():
    fetch = Fetcher()
    batched = Batched(fetch)
    answers: dict = {}
    [first] = ask_all(batched, [2], answers)
    assert fetch.first_in.wait(5)
    others = ask_all(batched, [3, 4, 6, 4], answers)
    while len(batched._pending) < 3:        # the three distinct keys are waiting
        threading.Event().wait(0.01)
    fetch.go_on.set()
    for thread in [first, *others]:
        thread.join(5)
    assert fetch.batches == [[2], [3, 4, 6]]
    assert answers == {2: "ticket 2", 3: None, 4: "ticket 4", 6: "ticket 6"}


def test_a_failed_fetch_is_the_error_of_every_asker_in_it():
    fetch = Fetcher(fail=ConnectionError("Redmine is down"))
    batched = Batched(fetch)
    answers: dict = {}
    [first] = ask_all(batched, [1], answers)
    assert fetch.first_in.wait(5)
    others = ask_all(batched, [5, 7], answers)
    while len(batched._pending) < 2:
        threading.Event().wait(0.01)
    fetch.go_on.set()
    for thread in [first, *others]:
        thread.join(5)
    assert {k: type(v) for k, v in answers.items()} == dict.fromkeys([1, 5, 7], ConnectionError)
    # And the next ask is a fetch of its own.
    fetch.fail = None
    assert batched.ask(8) == "ticket 8"
    assert fetch.batches[-1] == [8]


def test_one_ask_alone_is_fetched_at_once():
    fetch = Fetcher()
    fetch.go_on.set()
    assert Batched(fetch).ask(4) == "ticket 4"
    assert Batched(fetch).ask(5) is None        # the fetch has no answer for it
    assert fetch.batches == [[4], [5]]
