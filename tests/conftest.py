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
def _fake_discord_server():
    from tests.fakes.discord import FakeDiscord

    with FakeDiscord() as fake:
        yield fake


@pytest.fixture
def fake_discord(_fake_discord_server):
    """The fake Discord (a real HTTP server on 127.0.0.1), reset for each test."""
    _fake_discord_server.reset()
    _fake_discord_server.bucket_limit, _fake_discord_server.bucket_window = 50, 1.0
    return _fake_discord_server


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


@pytest.fixture
def pg_url() -> str:
    """A fresh schema in the test PostgreSQL (scripts/postgres-local), as a URL using it."""
    import uuid
    from urllib.parse import quote

    import psycopg

    base = os.environ.get("MAILGATE_TEST_PG_URL", "")
    if not base:
        _unavailable("MAILGATE_TEST_PG_URL is not set (scripts/test sets it:"
                     " eval \"$(scripts/postgres-local start)\")")
    schema = f"test_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(base, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"CREATE SCHEMA {schema}")
    except psycopg.OperationalError as exc:
        _unavailable(f"no PostgreSQL answers at {base}: {exc}")
    sep = "&" if "?" in base else "?"
    yield f"{base}{sep}options={quote(f'-csearch_path={schema}')}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=["sqlite", "postgres"])
def spool_backend(request, tmp_path):
    """Each spool test twice: on the SQLite default and on PostgreSQL."""
    from mailgate.store import open_spool

    url = request.getfixturevalue("pg_url") if request.param == "postgres" else None
    spool = open_spool(tmp_path / "spool.db", url=url, lease_seconds=60)
    yield spool
    spool.close()


@pytest.fixture(scope="session")
def dovecot():
    """The real Dovecot of scripts/dovecot-local (tests/mailboxes.py)."""
    from tests.mailboxes import start_dovecot

    found = start_dovecot()
    if isinstance(found, str):
        _unavailable(found)
    return found


@pytest.fixture
def mailbox(dovecot):
    """A fresh, empty mailbox (a new Dovecot user) for this test."""
    return dovecot.new_mailbox()


@pytest.fixture
def gateways():
    """Gateways as ``serve`` builds them (``gateways(config_path)``), closed after the test."""
    from mailgate.config import load_config
    from mailgate.gateway import build_gateway

    made = []

    def make(config):
        gateway = build_gateway(load_config(config, environ={}))
        made.append(gateway)
        return gateway

    yield make
    for gateway in made:
        gateway.close()
