"""msgspec's errors as ours: one ``ConfigError`` naming the key by its full path
(``sites.site-a.projcet: unknown key; did you mean 'project'?``), what its value
must be and what it is (a secret is never shown).

msgspec says where with a path (``$.sites[...].projcet``, ``$.imap.mailboxes[0]``);
it is followed here through the data and the schema together, so that a mapping's
entry is named by its key and a value's type is said in words.
"""

import re
from typing import Any, Mapping, get_args

import msgspec

from mailgate.errors import ConfigError, unknown_key
from mailgate.settings.walk import bases, container, keys, meta, struct_of, words

_SEGMENT = re.compile(r"\.([^.\[]+)|\[(\d+)\]|(\[\.\.\.\])")
_MISSING = object()


def config_error(message: str, data: Any, section: type, where: str = "") -> ConfigError:
    """msgspec's ``message`` about ``data`` read as ``section`` (found at ``where``)."""
    try:
        return _in_words(message, data, section, where)
    except (KeyError, IndexError, StopIteration, TypeError, AttributeError):
        # A path this module cannot follow: msgspec's own words, but never a traceback.
        return ConfigError(f"{where or 'config'}: {message}")


def _in_words(message: str, data: Any, section: type, where: str) -> ConfigError:
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
    """A key that is no text (``1:``): in a section it is unknown, in a mapping of
    names (sites, Discord users) not a name."""
    key_type, _ = container(spot.type) or (str, None)
    wrong = next((k for k in spot.value if not _fits(k, key_type)), "?")
    if struct_of(spot.type):
        return unknown_key(spot.where, wrong, _names(struct_of(spot.type)))
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
