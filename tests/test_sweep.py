"""Expiry with a clock the test controls: `sweep(now=...)`, and `mailgate sweep`."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from mailgate.config import load_config
from mailgate.gateway import build_gateway
from mailgate.clients.redmine import RedmineClient
from mailgate.ops.sweep import sweep
from support.configs import write_config
from tests.helpers import run_mailgate, without_marker

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def setup(fake_redmine, tmp_path):
    config = write_config(tmp_path / "m.yaml", fake_redmine.url, fake_redmine.admin_key,
                          sweep={"expire_after_days": 15})
    gateway = build_gateway(load_config(config, environ={}))
    client = RedmineClient(fake_redmine.url, fake_redmine.admin_key)
    ids = gateway.facts.status_ids

    def ticket(state: str, idle_days: float) -> int:
        n = client.create_issue("site-a", f"{state} {idle_days}", "x", as_user="owner")
        if state != "open":
            client.add_note(n, "", status_id=ids[state])
        fake_redmine.set_updated_on(n, NOW - timedelta(days=idle_days))
        return n

    return gateway, client, ticket, config


def test_open_and_needs_info_expire_after_15_idle_days(setup):
    gateway, client, ticket, _ = setup
    due = [ticket("open", 16), ticket("needs-info", 30)]
    not_due = [ticket("open", 14), ticket("answered", 40), ticket("solved", 40)]
    actions = sweep(gateway, now=NOW)
    assert sorted(a.ticket for a in actions) == due and all(a.done for a in actions)
    for n in due:
        issue = client.get_issue(n)
        assert issue.status_name == "Expired"
        assert without_marker(issue.journals[-1].notes).startswith(
            "This ticket has expired: nobody wrote on it for 15 days.")
    for n in not_due:
        assert client.get_issue(n).status_name != "Expired"


def test_sweeping_twice_changes_nothing_more(setup):
    gateway, client, ticket, _ = setup
    n = ticket("open", 20)
    sweep(gateway, now=NOW)
    journals = len(client.get_issue(n).journals)
    assert sweep(gateway, now=NOW + timedelta(hours=1)) == []
    assert len(client.get_issue(n).journals) == journals


def test_dry_run_writes_nothing(setup):
    gateway, client, ticket, _ = setup
    n = ticket("open", 20)
    [action] = sweep(gateway, now=NOW, dry_run=True)
    assert str(action) == f"#{n}: would expire open -> expired"
    assert client.get_issue(n).status_name == "Open"


def test_the_command(setup):
    gateway, client, ticket, config = setup
    n = ticket("open", 400)      # idle long before the real "now"
    result = run_mailgate("sweep", "--config", str(config), "--dry-run")
    assert result.returncode == 0 and f"#{n}: would expire" in result.stdout.decode()
    result = run_mailgate("sweep", "--config", str(config))
    assert result.stdout.decode().strip().endswith("1 ticket(s) swept")
    assert client.get_issue(n).status_name == "Expired"


def test_reminders_in_discord_once_per_period(fake_redmine, tmp_path):
    from tests.fakes.discord import FakeDiscord

    with FakeDiscord() as discord:
        hook = discord.add_webhook(forum=True)
        config = write_config(tmp_path / "m.yaml", fake_redmine.url, fake_redmine.admin_key,
                              sweep={"remind_after_hours": 24, "expire_after_days": 15},
                              discord={"api_base": discord.api_base,
                                       "channels": {"site-a": hook}, "triage": hook})
        gateway = build_gateway(load_config(config, environ={}))
        client = RedmineClient(fake_redmine.url, fake_redmine.admin_key)
        idle = client.create_issue("site-a", "Waiting", "x", as_user="owner")
        busy = client.create_issue("site-a", "Fresh", "x", as_user="owner")
        fake_redmine.set_updated_on(idle, NOW - timedelta(hours=30))
        fake_redmine.set_updated_on(busy, NOW - timedelta(hours=2))

        def posts():
            while gateway.fanout.run_once():
                pass
            return [m["content"] for t in discord.threads() for m in t.messages]

        actions = sweep(gateway, now=NOW)
        assert [(a.ticket, a.action) for a in actions] == [(idle, "remind")]
        assert posts() == [f"**Reminder: #{idle}** is waiting for an answer: Waiting\n"
                           f"> No update for 30 hours.\n<{fake_redmine.url}/issues/{idle}>"]
        sweep(gateway, now=NOW + timedelta(hours=1))          # same period: nothing new
        assert len(posts()) == 1
        sweep(gateway, now=NOW + timedelta(hours=25))         # the next period: again
        later = posts()[1:]
        # The idle ticket's second reminder, and now the other one's first (idle 27 h).
        assert sorted(p.split("**")[1] for p in later) == [f"Reminder: #{idle}",
                                                            f"Reminder: #{busy}"]


def test_an_expiry_is_told_in_the_tickets_discord_thread(fake_redmine, tmp_path):
    """Its note carries mailgate's marker, so the Redmine watcher leaves it alone: the
    sweep tells Discord itself, as it tells reminders (issue 13, point 4)."""
    from tests.fakes.discord import FakeDiscord

    with FakeDiscord() as discord:
        hook = discord.add_webhook(forum=True)
        config = write_config(tmp_path / "m.yaml", fake_redmine.url, fake_redmine.admin_key,
                              sweep={"expire_after_days": 15},
                              discord={"api_base": discord.api_base,
                                       "channels": {"site-a": hook}, "triage": hook})
        gateway = build_gateway(load_config(config, environ={}))
        client = RedmineClient(fake_redmine.url, fake_redmine.admin_key)
        n = client.create_issue("site-a", "Printer on fire", "x", as_user="owner")
        fake_redmine.set_updated_on(n, NOW - timedelta(days=20))

        sweep(gateway, now=NOW)
        sweep(gateway, now=NOW + timedelta(hours=1))        # nothing more to tell
        while gateway.fanout.run_once():
            pass
        [thread] = discord.threads()
        assert thread.name == f"#{n} Printer on fire"
        [post] = [m["content"] for m in thread.messages]
        assert post.startswith(f"**#{n}** expire (Open → Expired): Printer on fire\n")
        assert "> This ticket has expired: nobody wrote on it for 15 days." in post
        assert "(mailgate:" not in post
