"""Walking the schema: every key with its path, type, default, help and variable.

The environment (``environment``), the error messages (``read``) and the README's
table (``doc``) are all read off the same walk, so none of them can forget a key.
"""

import types
from functools import lru_cache
from typing import Annotated, Any, Iterator, Literal, Union, get_args, get_origin

import msgspec
from msgspec import Meta

#: What a Meta says, in the order its words are read.
_META = ("gt", "ge", "lt", "le", "min_length", "pattern", "description")


class Key(msgspec.Struct, frozen=True):
    """One key of the file.  ``path`` names it as written: a user-named entry
    (``sites.<name>``) is ``<name>``, an item of a list is ``[]``."""

    path: tuple[str, ...]
    type: Any
    default: Any
    #: ``MAILGATE_<SECTION>_<KEY>``, or None: a key inside something the user names
    #: (a site, a mailbox, a channel), or one no single value can hold.
    variable: str | None

    @property
    def name(self) -> str:
        return ".".join(self.path).replace(".[]", "[]")

    @property
    def meta(self) -> dict[str, Any]:
        return meta(self.type)


def variable(path: tuple[str, ...]) -> str:
    return "MAILGATE_" + "_".join(path).upper().replace("-", "_")


def bare(tp: Any) -> tuple[Any, dict[str, Any]]:
    """The type without its Annotated layer, and what that layer's Metas say."""
    said: dict[str, Any] = {}
    if get_origin(tp) is Annotated:
        tp, *metas = get_args(tp)
        for found in metas:
            if isinstance(found, Meta):
                said.update({k: getattr(found, k) for k in _META if getattr(found, k) is not None})
                said.update(found.extra or {})
    return tp, said


def members(tp: Any) -> list[Any]:
    """The alternatives of a union (None left out), or the type itself."""
    base, _ = bare(tp)
    if get_origin(base) in (Union, types.UnionType):
        return [m for arg in get_args(base) if arg is not type(None) for m in members(arg)]
    return [tp]


def meta(tp: Any) -> dict[str, Any]:
    """What every Meta on ``tp`` and its alternatives says; the outer ones win."""
    base, said = bare(tp)
    inner: dict[str, Any] = {}
    if get_origin(base) in (Union, types.UnionType):
        for arg in get_args(base):
            inner = {**meta(arg), **inner}
    return {**inner, **said}


def bases(tp: Any) -> list[Any]:
    """The types a value of ``tp`` may have, without their Meta (None left out)."""
    base = tp.__origin__ if get_origin(tp) is Annotated else tp
    if get_origin(base) in (Union, types.UnionType):
        return [b for arg in get_args(base) if arg is not type(None) for b in bases(arg)]
    return [base]


def struct_of(tp: Any) -> type | None:
    """The section type among ``tp``'s alternatives, if there is one."""
    return _struct(bases(tp))


def container(tp: Any) -> tuple[Any, Any] | None:
    """(key type, value type) of a mapping, (None, item type) of a list, else None."""
    return _container(bases(tp))


def is_scalar(tp: Any) -> bool:
    """Whether one value written as text can be this key's value."""
    return _scalar(bases(tp))


def takes_text(tp: Any) -> bool:
    """Whether text is one of the key's values (then a variable is taken as it is)."""
    return any(b is str or str in map(type, get_args(b)) for b in bases(tp))


def _struct(found: list[Any]) -> type | None:
    return next((b for b in found if isinstance(b, type) and issubclass(b, msgspec.Struct)),
                None)


def _container(found: list[Any]) -> tuple[Any, Any] | None:
    for base in found:
        origin, args = get_origin(base), get_args(base)
        if origin is dict:
            return args[0], args[1]
        if origin in (list, tuple, frozenset, set):
            return None, args[0]
    return None


def _scalar(found: list[Any]) -> bool:
    return any(b in (str, int, float, bool) or get_origin(b) is Literal for b in found)


@lru_cache(maxsize=None)
def keys(section: type) -> tuple[Key, ...]:
    """Every key of ``section`` and of the sections in it, in the order declared."""
    return tuple(_walk(section, (), named=False))


def key_of(section: type, name: str) -> Key | None:
    """The key whose variable is ``name``, found by following the name through the
    sections: the pipe reads its config once a mail, and the whole walk costs 1 ms."""
    return next((k for k in _walk(section, (), False, name) if k.variable == name), None)


def _walk(section: type, prefix: tuple[str, ...], named: bool,
          wanted: str = "") -> Iterator[Key]:
    """The keys under ``section``; with ``wanted`` (a variable's name) only those on
    the way to it."""
    for field in msgspec.structs.fields(section):
        path = (*prefix, field.encode_name)
        if wanted and not (wanted + "_").startswith(variable(path) + "_"):
            continue
        default = field.default if field.default_factory is msgspec.NODEFAULT else \
            field.default_factory()
        found = bases(field.type)
        inner, scalar = _struct(found), _scalar(found)
        yield Key(path, field.type, default,
                  variable(path) if scalar and not named else None)
        if inner is not None:
            # A key that is text or a mapping (a Discord channel) has one variable, for
            # the text: the mapping's keys have none.
            yield from _walk(inner, path, named or scalar, wanted)
        elif (found := _container(found)) and (inner := struct_of(found[1])):
            yield from _walk(inner, (*path, "[]" if found[0] is None else "<name>"), True,
                             wanted)


# -- in words ---------------------------------------------------------------------------

def words(tp: Any) -> str:
    """What a value of ``tp`` must be, as an error message says it ("a number > 0")."""
    if meta(tp).get("expected"):
        return meta(tp)["expected"]
    alternatives = members(tp)
    if len(alternatives) > 1:
        return " or ".join(dict.fromkeys(words(m) for m in alternatives))
    base, said = bare(alternatives[0])
    said = {**meta(tp), **said}
    if base is bool:
        return "true or false"
    if base in (int, float):
        return _number_words(base, said)
    if get_origin(base) is Literal:
        return "one of " + ", ".join(str(v) for v in get_args(base) if v != "")
    if (found := container(base)) and found[0] is None:
        return "a list of " + words(found[1])
    return "text" if base is str else "a mapping"


def _number_words(base: type, said: dict[str, Any]) -> str:
    unit = f" of {said['unit']}" if said.get("unit") else ""
    if base is int:
        least, most = said.get("ge", said.get("gt", -1) + 1), said.get("le")
        if most is not None:
            return f"a whole number{unit} from {least} to {most}"
        return f"a positive whole number{unit}" if least == 1 else \
            f"a whole number{unit} >= {least}"
    below = f" and < {said['lt']:g}" if "lt" in said else ""
    return f"a number{unit} > {said.get('gt', 0):g}{below}"
