"""Per-sender rate limits, with a clock the tests move by hand."""

from __future__ import annotations

import logging

import pytest

from mailgate.errors import EX_TEMPFAIL, ConfigError, TemporaryError
from mailgate.intake.ratelimit import (Limit, Limits, RateLimited, RateLimiter, StoreRateLimiter,
                                load_limits, load_rate_limit, sender_key)


class Clock:
    def __init__(self, now: float = 1_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "sqlite"])
def make(request, tmp_path):
    """Both stores answer the same tests."""
    made = []

    def make(mails: int, per_seconds: float, clock: Clock):
        if request.param == "memory":
            return RateLimiter(mails, per_seconds, clock=clock)
        limiter = StoreRateLimiter(tmp_path / "spool.db", mails, per_seconds, clock=clock)
        made.append(limiter)
        return limiter

    yield make
    for limiter in made:
        limiter.close()


def burst(limiter, key: str, count: int) -> list[bool]:
    return [limiter.allow(key) for _ in range(count)]


def test_a_burst_up_to_the_limit_passes_then_the_rest_is_refused(make):
    limiter = make(30, 600, Clock())
    assert burst(limiter, "flood@example.org", 35) == [True] * 30 + [False] * 5


def test_after_the_window_a_whole_burst_passes_again(make):
    clock = Clock()
    limiter = make(30, 600, clock)
    burst(limiter, "flood@example.org", 40)
    clock.now += 600
    assert burst(limiter, "flood@example.org", 31) == [True] * 30 + [False]


def test_tokens_come_back_one_at_a_time_during_the_window(make):
    clock = Clock()
    limiter = make(30, 600, clock)
    burst(limiter, "flood@example.org", 30)
    clock.now += 19.9
    assert not limiter.allow("flood@example.org")
    clock.now += 0.1             # 600 / 30 = one mail every 20 s
    assert burst(limiter, "flood@example.org", 2) == [True, False]


def test_refused_mail_takes_no_token(make):
    clock = Clock()
    limiter = make(2, 10, clock)
    burst(limiter, "a@example.org", 2)
    # A sender that keeps retrying while refused is not pushed further back.
    for _ in range(50):
        assert not limiter.allow("a@example.org")
    clock.now += 5
    assert limiter.allow("a@example.org")


def test_senders_are_independent(make):
    limiter = make(3, 60, Clock())
    assert burst(limiter, "flood@example.org", 4) == [True, True, True, False]
    assert burst(limiter, "alice@example.org", 3) == [True, True, True]


def test_a_clock_going_back_refills_nothing(make):
    clock = Clock()
    limiter = make(1, 60, clock)
    assert limiter.allow("a@example.org")
    clock.now -= 3600
    assert not limiter.allow("a@example.org")


def test_check_raises_a_temporary_450_for_the_edges(make):
    limiter = make(1, 60, Clock())
    limiter.check("flood@example.org")
    with pytest.raises(RateLimited) as caught:
        limiter.check("flood@example.org")
    error = caught.value
    assert isinstance(error, TemporaryError)    # the worker and the edges retry, never bounce
    assert error.smtp_reply == ("450 4.7.1 too many messages from <flood@example.org>,"
                                " try again later")
    assert error.exit_code == EX_TEMPFAIL


def test_sender_key_folds_case_and_names_the_null_sender():
    assert sender_key("<Flood@Example.ORG>") == "flood@example.org"
    assert sender_key("") == sender_key("<>") == sender_key(None) == "<>"
    limiter = RateLimiter(1, 60, clock=Clock())
    limiter.check(sender_key(""))
    with pytest.raises(RateLimited, match="too many messages from <>, try again later"):
        limiter.check(sender_key("<>"))


# --- memory stays bounded -------------------------------------------------------------

def test_keys_idle_for_a_window_are_evicted():
    clock = Clock()
    limiter = RateLimiter(5, 60, clock=clock)
    for n in range(1000):
        limiter.allow(f"sender{n}@example.org")
    assert len(limiter) == 1000
    clock.now += 60
    limiter.allow("late@example.org")
    assert len(limiter) == 1          # every other bucket was full again: nothing lost


def test_eviction_keeps_a_flooder_limited_within_its_window():
    clock = Clock()
    limiter = RateLimiter(3, 60, clock=clock)
    burst(limiter, "flood@example.org", 3)
    clock.now += 30
    limiter.allow("other@example.org")  # runs the eviction
    assert burst(limiter, "flood@example.org", 2) == [True, False]   # 1.5 tokens back


def test_max_keys_bounds_memory_under_many_senders(caplog):
    limiter = RateLimiter(5, 60, clock=Clock(), max_keys=100)
    with caplog.at_level(logging.WARNING, "mailgate.intake.ratelimit"):
        for n in range(1000):
            limiter.allow(f"sender{n}@example.org")
    assert len(limiter) == 100
    assert "more than 100 senders at once" in caplog.text


def test_sqlite_buckets_are_shared_by_processes_and_cleaned(tmp_path):
    clock = Clock()
    first = StoreRateLimiter(tmp_path / "spool.db", 2, 60, clock=clock)
    second = StoreRateLimiter(tmp_path / "spool.db", 2, 60, clock=clock)  # the next pipe run
    try:
        assert first.allow("flood@example.org")
        assert second.allow("flood@example.org")
        assert not first.allow("flood@example.org")
        clock.now += 61
        assert second.allow("someone@example.org")
        assert len(second) == 1
    finally:
        first.close()
        second.close()


def test_sqlite_failure_lets_mail_through(tmp_path, caplog):
    limiter = StoreRateLimiter(tmp_path / "spool.db", 1, 60, clock=Clock())
    limiter.allow("a@example.org")
    limiter.buckets.db.change("DROP TABLE rate_buckets")
    with caplog.at_level(logging.ERROR, "mailgate.intake.ratelimit"):
        assert limiter.allow("a@example.org")
    assert "letting <a@example.org> through" in caplog.text
    limiter.close()


# --- configuration ----------------------------------------------------------------------

def test_load_limits():
    limits = load_limits({"per_sender": {"mails": 30, "per_seconds": 600}})
    assert limits == Limits(per_sender=Limit(30, 600.0))
    assert load_limits(None) == Limits()
    assert load_rate_limit({"mails": "10", "per_seconds": "60"}) == Limit(10, 60.0)


@pytest.mark.parametrize("section, message", [
    ({"per_sender": {"mails": 0, "per_seconds": 600}}, "limits.per_sender.mails"),
    ({"per_sender": {"mails": 3.5, "per_seconds": 600}}, "limits.per_sender.mails"),
    ({"per_sender": {"mails": 30, "per_seconds": "soon"}}, "limits.per_sender.per_seconds"),
    ({"per_sender": {"mails": 30, "per_seconds": 0}}, "limits.per_sender.per_seconds"),
    ({"per_sender": {"mails": 30}}, "limits.per_sender.per_seconds: missing"),
    ({"per_sender": {"mails": 30, "per_second": 60}}, "limits.per_sender.per_second: unknown"),
    ({"per_client": 30}, "limits.per_client: expected a mapping"),
    ({"per_recipient": {}}, "limits.per_recipient: unknown"),
])
def test_bad_limits_name_their_key(section, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_limits(section)
