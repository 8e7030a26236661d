"""Settings from the environment, so that secrets stay out of the file.

Every key that one value can hold has its variable, ``MAILGATE_<SECTION>_<KEY>``
(``MAILGATE_REDMINE_API_KEY``, ``MAILGATE_SPOOL_WORKERS``, ``MAILGATE_UNKNOWN_SENDERS``),
derived from the schema, so none is forgotten; the keys inside what the user names
(a site, a mailbox, a channel) have none.  A variable is read as the file's value
would be ("25" is a number, "true" a boolean), except for a key that takes text:
an API key stays the string it is.
"""

from typing import Any, Mapping

import yaml

from mailgate.errors import ConfigError
from mailgate.settings.walk import key_of, takes_text


def apply_environment(data: dict[str, Any], environ: Mapping[str, str],
                      section: type) -> None:
    """Set in ``data`` (the file's, as YAML gave it) every key whose variable is set."""
    for name, text in environ.items():
        key = key_of(section, name) if name.startswith("MAILGATE_") else None
        if key is not None:
            _put(data, key.path, text if takes_text(key.type) else _scalar(text))


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
