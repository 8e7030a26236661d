"""Every setting that holds one value can come from the environment (the README says
so, and a misspelt or forgotten variable would silently be the default)."""

from __future__ import annotations

import pytest

from mailgate import config as config_module
from mailgate.config import ENV_KEYS, SECTION_KEYS, env_name, load_config
from mailgate.intake.imap_settings import _SECTION_KEYS as IMAP_KEYS
from mailgate.outbound.fanout.settings import _KEYS as DISCORD_KEYS
from mailgate.outbound.notify import _KEYS as NOTIFY_KEYS
from mailgate.trust import TRUST_KEYS

#: Settings that are lists or mappings: no single value for a variable to hold.
NOT_ONE_VALUE = {("trust", "trusted_authserv_ids"), ("trust", "trusted_relays"),
                 ("discord", "channels"), ("discord", "retry"), ("discord", "users"),
                 ("imap", "mailboxes")}


def one_valued() -> set[tuple[str, str]]:
    sections = {**SECTION_KEYS, "trust": set(TRUST_KEYS), "notify": NOTIFY_KEYS,
                "discord": DISCORD_KEYS, "imap": IMAP_KEYS}
    return {(s, k) for s, keys in sections.items() for k in keys} - NOT_ONE_VALUE


def test_every_one_valued_setting_has_its_variable():
    missing = sorted(one_valued() - set(ENV_KEYS))
    assert not missing, [env_name(s, k) for s, k in missing]


@pytest.mark.parametrize("section, key, text, expected", [
    ("notify", "max_per_hour", "7", 7),
    ("trust", "verify_dkim", "false", False),
    ("discord", "excerpt_length", "120", 120),
])
def test_a_variable_is_read_as_the_file_would_be(tmp_path, section, key, text, expected):
    path = tmp_path / "m.yaml"
    path.write_text("domains: [example.org]\nredmine: {url: http://127.0.0.1:9, api_key: k}\n"
                    "notify: {from: mailgate@elsewhere.example}\n"
                    "discord: {channels: {}, triage: 'https://discord.com/api/webhooks/1/t'}\n")
    loaded = load_config(path, {env_name(section, key): text})
    value = {"notify": lambda c: c.notify.max_per_hour,
             "trust": lambda c: c.trust.verify_dkim,
             "discord": lambda c: c.discord.excerpt_length}[section](loaded)
    assert value == expected
    assert config_module.env_name(section, key) == f"MAILGATE_{section}_{key}".upper()
