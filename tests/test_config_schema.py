"""One declarative schema (issue 17, point 1), through the real command: a key the
schema does not know is refused wherever it is written, with its full path and the
nearest valid key; a wrong value names its key and what it must be; every section's
variables reach their keys.  ``mailgate check-config FILE``: exit 78, one line."""

from __future__ import annotations

import pytest

from mailgate.errors import EX_CONFIG
from mailgate.settings.schema import ConfigFile
from mailgate.settings.walk import keys, takes_text, words
from support.configs import write_config
from tests.helpers import run_mailgate

WEBHOOK = "https://discord.com/api/webhooks/1/t"
MAILBOX = {"name": "support", "host": "127.0.0.1", "user": "u", "password_env": "PW"}


def check(config, env: dict | None = None) -> tuple[int, str]:
    result = run_mailgate("check-config", str(config), env=env)
    text = result.stderr.decode()
    assert "Traceback" not in text and "internal error" not in text, text
    return result.returncode, text.strip()


def config_with(tmp_path, **overrides):
    return write_config(tmp_path / "m.yaml", "http://127.0.0.1:9", "key", **overrides)


@pytest.mark.parametrize("overrides, said", [
    ({"admin": ["boss@example.org"]}, "admin: unknown key; did you mean 'admins'?"),
    ({"unknown_sender": "accept"},
     "unknown_sender: unknown key; did you mean 'unknown_senders'?"),
    ({"server": {"max_mesage_size": 1000}},
     "server.max_mesage_size: unknown key; did you mean 'max_message_size'?"),
    ({"redmine": {"gatway_user": "gateway"}},
     "redmine.gatway_user: unknown key; did you mean 'gateway_user'?"),
    ({"spool": {"pth": "x.db"}}, "spool.pth: unknown key; did you mean 'path'?"),
    ({"sites": {"site-a": {"projcet": "site-a"}}},
     "sites.site-a.projcet: unknown key; did you mean 'project'?"),
    ({"imap": {"mailboxes": [{**MAILBOX, "folders": "INBOX"}]}},
     "imap.mailboxes[0].folders: unknown key; did you mean 'folder'?"),
    ({"discord": {"channels": {"site-a": WEBHOOK}, "show_adresses": True}},
     "discord.show_adresses: unknown key; did you mean 'show_addresses'?"),
    ({"discord": {"channels": {"site-a": {"webhok": WEBHOOK}}}},
     "discord.channels.site-a.webhok: unknown key; did you mean 'webhook'?"),
])
def test_an_unknown_key_is_refused_by_its_path_with_the_nearest_one(tmp_path, overrides, said):
    assert check(config_with(tmp_path, **overrides)) == (EX_CONFIG, f"mailgate: {said}")


def test_a_key_in_the_wrong_section_is_named_with_where_it_belongs(tmp_path):
    config = config_with(tmp_path)
    with config.open("a") as file:
        file.write("url: postgresql://db/mailgate\n")
    assert check(config) == (EX_CONFIG, "mailgate: url: unknown key; did you mean"
                             " 'redmine.url' or 'spool.url'?")


@pytest.mark.parametrize("overrides, said", [
    ({"redmine": {"timeout": -1}}, "redmine.timeout: expected a number of seconds > 0, got -1"),
    ({"redmine": {"timeout": float("nan")}},
     "redmine.timeout: expected a number of seconds > 0, got nan"),
    ({"redmine": {"timeout": float("inf")}},
     "redmine.timeout: expected a number of seconds > 0, got inf"),
    ({"spool": {"workers": "two"}}, "spool.workers: expected a positive whole number,"
                                    " got 'two'"),
    ({"domains": "example.org"},
     "domains: expected a list of mail domains, like [example.org], got 'example.org'"),
    ({"unknown_senders": "maybe"}, "unknown_senders: 'maybe' is not one of reject, accept,"
                                   " create"),
    ({"imap": {"poll_interval": 0, "mailboxes": [MAILBOX]}},
     "imap.poll_interval: expected a number of seconds > 0, got 0"),
    ({"spool": {"url": 5}}, "spool.url: expected text"),   # a secret: its value not shown
])
def test_a_wrong_value_names_its_key_and_what_it_must_be(tmp_path, overrides, said):
    assert check(config_with(tmp_path, **overrides)) == (EX_CONFIG, f"mailgate: {said}")


def _one_variable_per_section() -> dict[str, object]:
    """For each section (and the top level), its first key whose variable is read as a
    number, a boolean or a choice: "nonsense" is no value for it."""
    chosen: dict[str, object] = {}
    for key in keys(ConfigFile):
        section = key.path[0] if len(key.path) > 1 else "(top level)"
        choice = words(key.type).startswith("one of")
        if key.variable and (choice or not takes_text(key.type)) or \
                key.path == ("listen", "smtp"):
            chosen.setdefault(section, key)
    return chosen


VARIABLES = _one_variable_per_section()


def test_every_section_has_a_variable_here():
    sections = {k.path[0] for k in keys(ConfigFile) if len(k.path) > 1}
    assert sections - set(VARIABLES) == {"sites", "workflow"}      # user-named, or a table


@pytest.mark.parametrize("key", VARIABLES.values(), ids=lambda k: k.variable)
def test_a_variable_of_each_section_reaches_its_key(tmp_path, key):
    config = config_with(tmp_path)
    code, said = check(config, {key.variable: "nonsense"})
    assert code == EX_CONFIG
    assert said.startswith(f"mailgate: {key.name}: "), said
    assert "'nonsense'" in said


def test_variables_override_the_file(tmp_path):
    config = config_with(tmp_path, unknown_senders="reject", redmine={"url": "nowhere"})
    code, said = check(config, {"MAILGATE_UNKNOWN_SENDERS": "accept",
                                "MAILGATE_REDMINE_URL": "http://127.0.0.1:9",
                                "MAILGATE_REDMINE_GATEWAY_USER": "",
                                "MAILGATE_SPOOL_WORKERS": "3"})
    # The file's gateway user is gone, and accept needs one: the variables were read.
    assert (code, said) == (EX_CONFIG, "mailgate: unknown_senders: 'accept' needs"
                            " redmine.gateway_user, the login that writes for senders"
                            " Redmine does not know (or set MAILGATE_REDMINE_GATEWAY_USER)")
    code, said = check(config, {"MAILGATE_SPOOL_WORKERS": "3"})
    assert code == 0, said


def test_a_config_shown_in_a_log_or_a_traceback_shows_no_secret(tmp_path):
    """repr() of the loaded config (a log line, a traceback's locals) names every key
    but never a secret's value: the API key, a database URL, a webhook, a bot token."""
    from mailgate.config import load_config
    from support.configs import write_config

    secrets = ["k3y-0f-the-admin", "postgresql://u:pw@db/mail", "https://discord.test/api/webhooks/1/tok-a",
               "https://discord.test/api/webhooks/2/tok-b", "b0t-t0ken"]
    path = write_config(tmp_path / "m.yaml", "http://127.0.0.1:3000", secrets[0],
                        spool={"url": secrets[1]},
                        discord={"bot_token": secrets[4], "channels": {
                            "site-a": secrets[2], "site-b": {"webhook": secrets[3]}}})
    config = load_config(path, environ={})
    shown = repr(config)
    assert "api_key=<secret>" in shown
    assert [s for s in secrets if s in shown] == []
    assert "http://127.0.0.1:3000" in shown            # what is not secret is shown
