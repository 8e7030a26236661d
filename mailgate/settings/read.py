"""Reading data (as YAML gives it) into a section of the schema, and msgspec's
errors into ours: one ``ConfigError`` naming the key by its full path
(``sites.site-a.projcet: unknown key; did you mean 'project'?``), what its value
must be and what it is (a secret is never shown), never a traceback.

Values are read as msgspec's lax mode reads them ("25" is a number, "true" a
boolean), as the environment's text and hand-written YAML both need.
"""

import re
from typing import Any, Mapping, get_args

import msgspec

from mailgate.errors import ConfigError, unknown_key
from mailgate.settings.environment import apply_environment
from mailgate.settings.walk import bases, container, keys, meta, struct_of, words

_SEGMENT = re.compile(r"\.([^.\[]+)|\[(\d+)\]|(\[\.\.\.\])")
_MISSING = object()


def read_section(data: Any, section: type, where: str = "") -> Any:
    """``data`` as ``section`` (``None``: its defaults), or a ConfigError saying why not."""
    try:
        return msgspec.convert({} if data is None else data, section, strict=False)
    except msgspec.ValidationError as exc:
        raise config_error(str(exc), data, section, where) from None


def config_error(message: str, data: Any, section: type, where: str = "") -> ConfigError:
    """msgspec's ``message`` about ``data`` read as ``section`` (found at ``where``)."""
    what, at, path = message.rpartition(" - at `")
    if not at:
        what, path = message, "$`"
    if path.startswith("key` in `"):
        return _bad_name(_Spot.find(path[len("key` in `"):-1], data, section, where))
    spot = _Spot.find(path[:-1], data, section, where)
    if (found := re.match(r"Object contains unknown field `(.*)`$", what)):
        elsewhere = [k.name for k in keys(section) if k.path[-1] == found.group(1)
                     and not {"<name>", "[]"} & set(k.path)]
        return unknown_key(spot.where, found.group(1), _names(struct_of(spot.type)),
                           [f"{where}.{e}" if where else e for e in elsewhere])
    if (found := re.match(r"Object missing required field `(.*)`$", what)):
        return ConfigError(f"{spot.join(found.group(1))}: missing")
    if what.startswith("Invalid enum value"):
        choices = [str(v) for b in bases(spot.type) for v in get_args(b) if v != ""]
        return ConfigError(f"{spot.where}: {spot.value!r} is not one of {', '.join(choices)}")
    if not what.startswith("Expected"):
        return ConfigError(f"{spot.where}: {what}")     # a section's own check
    return ConfigError(f"{spot.where}: expected {words(spot.type)}{spot.shown()}")


def _names(section: type | None) -> list[str]:
    return [f.encode_name for f in msgspec.structs.fields(section)] if section else []


def _bad_name(spot: "_Spot") -> ConfigError:
    key_type, _ = container(spot.type) or (str, None)
    wrong = next((k for k in spot.value if not _fits(k, key_type)), "?")
    return ConfigError(f"{spot.join(str(wrong))}: not a valid name ({words(key_type)})")


def _fits(value: Any, tp: Any) -> bool:
    try:
        msgspec.convert(value, tp, strict=False)
    except msgspec.ValidationError:
        return False
    return True


class _Spot:
    """Where in the file an error is: the key's path in words, its type, its value."""

    def __init__(self, where: str, tp: Any, value: Any):
        self.where, self.type, self.value = where, tp, value

    def join(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def shown(self) -> str:
        if self.value is _MISSING or meta(self.type).get("secret"):
            return ""
        return f", got {self.value!r}"

    @classmethod
    def find(cls, path: str, data: Any, section: type, where: str) -> "_Spot":
        """Follow msgspec's ``$.a[0].b[...]`` through the data and the schema."""
        spot = cls(where, section, data)
        for name, index, entry in _SEGMENT.findall(path[1:]):
            spot = spot._field(name) if name else spot._item(int(index)) if index else \
                spot._entry()
        return spot

    def _field(self, name: str) -> "_Spot":
        fields = {f.encode_name: f.type for f in msgspec.structs.fields(struct_of(self.type))}
        value = self.value.get(name, _MISSING) if isinstance(self.value, Mapping) else _MISSING
        return _Spot(self.join(name), fields[name], value)

    def _item(self, index: int) -> "_Spot":
        _, item = container(self.type)
        if struct_of(item) is None:
            # One bad item of a list of names: the list is the setting to fix.
            return self
        return _Spot(f"{self.where}[{index}]", item, self.value[index])

    def _entry(self) -> "_Spot":
        # msgspec says "[...]" for a mapping's entry: the first one that does not fit is it.
        _, item = container(self.type)
        key, value = next((k, v) for k, v in self.value.items() if not _fits(v, item))
        return _Spot(self.join(str(key)), item, value)


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
