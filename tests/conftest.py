"""Fixtures shared by mailgate's tests: a fake Redmine and the real one.

Both have the same seed (scripts/redmine-seed.rb) and the same attributes,
``.url``, ``.admin_key``, ``.key(login)`` and ``.kind``, so a test written
for one runs against the other; ``redmine`` runs a test against both.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest
import requests

from tests.fakes import FakeRedmine, api_key


@dataclass(frozen=True)
class RealRedmine:
    """The local Redmine that scripts/redmine-local runs; never reset by tests."""

    url: str
    admin_key: str
    kind: str = "real"

    def key(self, login: str) -> str:
        return api_key(login)


@pytest.fixture(scope="session")
def _fake_redmine_server():
    with FakeRedmine() as fake:
        yield fake


@pytest.fixture
def fake_redmine(_fake_redmine_server: FakeRedmine) -> FakeRedmine:
    """The fake Redmine, back in its seed state for this test."""
    _fake_redmine_server.reset()
    return _fake_redmine_server


@pytest.fixture(scope="session")
def real_redmine() -> RealRedmine:
    """The real Redmine named by MAILGATE_REDMINE_URL and MAILGATE_REDMINE_API_KEY."""
    url = os.environ.get("MAILGATE_REDMINE_URL", "").rstrip("/")
    key = os.environ.get("MAILGATE_REDMINE_API_KEY", "")
    if not url or not key:
        _unavailable("MAILGATE_REDMINE_URL and MAILGATE_REDMINE_API_KEY are not set"
                     " (scripts/test sets them: eval \"$(scripts/redmine-local start)\")")
    try:
        answer = requests.get(f"{url}/users/current.json", timeout=(3, 10),
                              headers={"X-Redmine-API-Key": key})
    except requests.RequestException as exc:
        _unavailable(f"no Redmine answers at {url}: {exc}")
    # It answers: anything but the admin is a broken setup, which must fail.
    assert answer.status_code == 200, f"{url} rejects the API key: HTTP {answer.status_code}"
    assert answer.json()["user"].get("admin"), "MAILGATE_REDMINE_API_KEY is not an admin's"
    return RealRedmine(url, key)


def _unavailable(reason: str) -> None:
    # On CI a missing Redmine means the tests did not run: that is a failure.
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI is set, so the real Redmine is required", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(params=["fake", pytest.param("real", marks=pytest.mark.real_redmine)])
def redmine(request: pytest.FixtureRequest):
    """Each test twice: against the fake Redmine and against the real one."""
    return request.getfixturevalue(f"{request.param}_redmine")
