"""Settings from the environment, so that secrets stay out of the file.

Every key that one value can hold has its variable, ``MAILGATE_<SECTION>_<KEY>``
(``MAILGATE_REDMINE_API_KEY``, ``MAILGATE_SPOOL_WORKERS``, ``MAILGATE_UNKNOWN_SENDERS``),
derived from the schema, so none is forgotten; the keys inside what the user names
(a site, a mailbox, a channel) have none.  A variable is read as the file's value
would be ("25" is a number, "true" a boolean), except for a key that takes text:
an API key stays the string it is.

A ``MAILGATE_*`` variable that is no setting is named in a warning (with the
setting it looks like), as the file's unknown keys are errors: it was meant to
set something.  It is not an error, since the environment is shared: the few
variables that are not settings (``NOT_SETTINGS``) and the test suite's own
(``MAILGATE_TEST_*``) are left alone.
"""

import difflib
import logging
from typing import Any, Mapping

import yaml

from mailgate.errors import ConfigError
from mailgate.settings.walk import key_of, keys, takes_text

log = logging.getLogger("mailgate.settings")

#: Not settings of the file: the command line's (the file, the log level) and the
#: test suite's switch for its slow tests (scripts/test).
NOT_SETTINGS = frozenset({"MAILGATE_CONFIG", "MAILGATE_LOG_LEVEL", "MAILGATE_SLOW_TESTS"})


def apply_environment(data: dict[str, Any], environ: Mapping[str, str],
                      section: type) -> None:
    """Set in ``data`` (the file's, as YAML gave it) every key whose variable is set."""
    for name, text in environ.items():
        if not name.startswith("MAILGATE_"):
            continue
        key = key_of(section, name)
        if key is not None:
            _put(data, key.path, text if takes_text(key.type) else _scalar(text))
        elif name not in NOT_SETTINGS and not name.startswith("MAILGATE_TEST_"):
            _not_a_setting(name, section)


def _not_a_setting(name: str, section: type) -> None:
    known = [k.variable for k in keys(section) if k.variable]
    meant = difflib.get_close_matches(name, known, n=1)
    log.warning("environment: %s is not a setting: ignored%s", name,
                f" (did you mean {meant[0]}?)" if meant else "")


def _put(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = data
    for depth, name in enumerate(path[:-1], 1):
        if node.get(name) is None:
            node[name] = {}
        node = node[name]
        if not isinstance(node, dict):
            raise ConfigError(f"{'.'.join(path[:depth])}: expected a mapping")
    node[path[-1]] = value


def _scalar(text: str) -> Any:
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, (str, int, float, bool)) else text
