"""Every setting that holds one value can come from the environment (the README says
so, and a forgotten variable would leave a secret in the file).  The variables are
derived from the schema; these tests check the derivation against msgspec's own
view of the schema, and that each variable reaches its key."""

from __future__ import annotations

from typing import Any, Iterator

import msgspec
import pytest

from mailgate.config import env_name, load_config
from mailgate.settings.read import read_file
from mailgate.settings.schema import ConfigFile
from mailgate.settings.walk import keys

SCALARS = (msgspec.inspect.StrType, msgspec.inspect.IntType, msgspec.inspect.FloatType,
           msgspec.inspect.BoolType, msgspec.inspect.LiteralType)


def one_valued(info: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """The keys outside anything the user names whose value may be one scalar, read from
    msgspec.inspect (not from mailgate.settings.walk, whose result this checks)."""
    for field in info.fields:
        here, kinds = (*path, field.encode_name), _alternatives(field.type)
        if any(isinstance(k, SCALARS) for k in kinds):
            yield here
        for kind in kinds:
            if isinstance(kind, msgspec.inspect.StructType):
                if not any(isinstance(k, SCALARS) for k in kinds):
                    yield from one_valued(kind, here)


def _alternatives(kind: Any) -> list[Any]:
    kind = kind.type if isinstance(kind, msgspec.inspect.Metadata) else kind
    if isinstance(kind, msgspec.inspect.UnionType):
        return [a for t in kind.types for a in _alternatives(t)]
    return [kind]


VARIABLES = {key.path: key for key in keys(ConfigFile) if key.variable}


def test_every_one_valued_setting_has_its_variable():
    expected = set(one_valued(msgspec.inspect.type_info(ConfigFile)))
    assert len(expected) > 80
    assert sorted(expected - set(VARIABLES)) == []
    # ... and nothing inside a site, a mailbox or a channel has one.
    assert sorted(set(VARIABLES) - expected) == []


def test_the_variables_are_named_after_their_keys_and_differ():
    names = [key.variable for key in VARIABLES.values()]
    assert len(set(names)) == len(names)
    for path, key in VARIABLES.items():
        assert key.variable == "MAILGATE_" + "_".join(path).upper()
    assert env_name("redmine", "api_key") == "MAILGATE_REDMINE_API_KEY"
    assert env_name(None, "unknown_senders") == "MAILGATE_UNKNOWN_SENDERS"


def other_value(key) -> tuple[str, Any]:
    """A value for ``key`` other than its default: (the variable's text, as read)."""
    kinds = [k for k in _alternatives(msgspec.inspect.type_info(key.type))
             if isinstance(k, SCALARS)]
    kind = kinds[0]
    if isinstance(kind, msgspec.inspect.BoolType):
        return str(not key.default).lower(), not key.default
    if isinstance(kind, msgspec.inspect.LiteralType):
        value = next(v for v in kind.values if v not in (key.default, ""))
        return value, value
    if isinstance(kind, (msgspec.inspect.IntType, msgspec.inspect.FloatType)):
        number = (kind.ge or 0) + 7
        return str(number), number
    return "text-007", "text-007"


def at(file: Any, path: tuple[str, ...]) -> Any:
    for name in path:
        fields = {f.encode_name: f.name for f in msgspec.structs.fields(type(file))}
        file = getattr(file, fields[name])
    return file


@pytest.mark.parametrize("path", sorted(VARIABLES), ids=lambda p: VARIABLES[p].variable)
def test_each_variable_sets_its_key(path):
    key = VARIABLES[path]
    text, expected = other_value(key)
    # The sections that are off unless written, each with what it needs besides.
    data = {"domains": ["example.org"], "imap": {"mailboxes": [{"host": "h", "user": "u"}]},
            "limits": {"per_sender": {"mails": 1, "per_seconds": 1},
                       "per_client": {"mails": 1, "per_seconds": 1}}}
    found = at(read_file(data, {key.variable: text}, ConfigFile), path)
    assert found == expected or found == frozenset({expected})


@pytest.mark.parametrize("section, key, text, expected", [
    ("notify", "max_per_hour", "7", 7),
    ("trust", "verify_dkim", "false", False),
    ("trust", "verify_dkim", "no", False),
    ("discord", "excerpt_length", "120", 120),
    ("redmine", "api_key", "0123", "0123"),     # text stays the text it is
])
def test_a_variable_is_read_as_the_file_would_be(tmp_path, section, key, text, expected):
    path = tmp_path / "m.yaml"
    path.write_text("domains: [example.org]\nredmine: {url: http://127.0.0.1:9, api_key: k}\n"
                    "notify: {from: mailgate@elsewhere.example}\n"
                    "discord: {channels: {}, triage: 'https://discord.com/api/webhooks/1/t'}\n")
    loaded = load_config(path, {env_name(section, key): text})
    value = {"notify": lambda c: c.notify.max_per_hour,
             "trust": lambda c: c.trust.verify_dkim,
             "discord": lambda c: c.discord.excerpt_length,
             "redmine": lambda c: c.redmine.api_key}[section](loaded)
    assert value == expected


def test_a_misspelt_variable_is_named_with_the_one_meant(tmp_path):
    """A variable that sets nothing is said, not silently ignored: the config file's
    unknown keys are errors, and an operator's MAILGATE_SPOOL_WORKER=4 meant something.
    The test suite's own MAILGATE_TEST_* variables are not settings and are not named."""
    from support.configs import write_config
    from support.processes import closed_url
    from tests.helpers import run_mailgate

    config = write_config(tmp_path / "m.yaml", closed_url(), "key")
    result = run_mailgate("check-config", str(config),
                          env={"MAILGATE_SPOOL_WORKER": "4", "MAILGATE_TEST_PG_URL": "x"})
    said = result.stderr.decode()
    assert result.returncode == 0, said
    assert "MAILGATE_SPOOL_WORKER is not a setting: ignored" in said, said
    assert "did you mean MAILGATE_SPOOL_WORKERS?" in said, said
    assert "MAILGATE_TEST_PG_URL" not in said and "Traceback" not in said
