"""Reading data (as YAML gives it) into a section of the schema: a wrong key or
value is a ``ConfigError`` naming it (``mailgate.settings.messages``), never a
traceback.

Values are read as msgspec's lax mode reads them ("25" is a number, "true" a
boolean), as the environment's text and hand-written YAML both need.
"""

from typing import Any, Mapping

import msgspec

from mailgate.settings.environment import apply_environment
from mailgate.settings.walk import container, keys, struct_of


def read_section(data: Any, section: type, where: str = "") -> Any:
    """``data`` as ``section`` (``None``: its defaults), or a ConfigError saying why not."""
    try:
        return msgspec.convert({} if data is None else data, section, strict=False)
    except msgspec.ValidationError as exc:
        # Only now: the pipe reads a good config once a mail, and never needs the words.
        from mailgate.settings.messages import config_error

        raise config_error(str(exc), data, section, where) from None


def read_file(data: dict[str, Any], environ: Mapping[str, str], section: type) -> Any:
    """The whole file (``data``, its top level as YAML gave it) with the environment's
    settings, read as ``section``."""
    data = _sections_written_empty(data, section)
    apply_environment(data, environ, section)
    _spread_defaults(data, section)
    return read_section(data, section)


def _sections_written_empty(data: dict[str, Any], section: type) -> dict[str, Any]:
    """A section written with nothing in it (``watch:``) is there, with its defaults;
    any other key written with no value is as if it were not written."""
    types = {f.encode_name: f.type for f in msgspec.structs.fields(section)}
    written = {}
    for key, value in data.items():
        tp = types.get(key)
        if value is not None or tp is None:
            written[key] = value
        elif struct_of(tp) or (container(tp) or (None,))[0] is not None:
            written[key] = {}
    return written


def _spread_defaults(data: dict[str, Any], section: type) -> None:
    """A key marked ``every=ITEMS`` (a mailbox key under ``imap:``) is the default of
    that key in each of the section's ``ITEMS``."""
    for key in keys(section):
        items, parent = key.meta.get("every"), _at(data, key.path[:-1])
        if not items or not isinstance(parent, dict) or key.path[-1] not in parent:
            continue
        # The list last: msgspec reads a mapping in its order, so that a wrong default
        # is named where it was written (imap.poll_interval), not in each item.
        found = parent.pop(items, None)
        if isinstance(found, list):
            found = [{key.path[-1]: parent[key.path[-1]], **item}
                     if isinstance(item, dict) else item for item in found]
        if found is not None:
            parent[items] = found


def _at(data: Any, path: tuple[str, ...]) -> Any:
    for name in path:
        data = data.get(name) if isinstance(data, dict) else None
    return data
