"""The kinds of value a setting holds: msgspec types carrying their constraints.

Each helper returns an ``Annotated`` type with the key's one-line help
(``Meta.description``: the README's "meaning") and, in ``Meta.extra``, what the
readers of the schema need besides the type: the unit of a number, ``secret``
(never echoed in an error: API keys, webhook URLs, a database URL with its
password), ``default`` (the default in words, where it is worked out) and
``expected`` (the words of an error, where the type alone says too little).
"""

import sys
from typing import Annotated, Any, Optional

from msgspec import Meta, Struct
from msgspec.structs import fields

from mailgate.settings.walk import meta

#: msgspec cannot say "finite": the largest float is the bound, so that neither an
#: infinite timeout nor NaN (which no comparison passes) can make anything wait forever.
FINITE = sys.float_info.max


class Section(Struct, frozen=True, forbid_unknown_fields=True):
    """A part of the file: a key not declared in it is an error, never ignored."""

    def __repr__(self) -> str:
        return without_secrets(self)


def without_secrets(struct: Struct) -> str:
    """repr() of ``struct`` with the value of every field typed ``secret`` hidden: a
    config in a log line or a traceback would otherwise print the API key."""
    shown = (f"{f.name}={_shown(getattr(struct, f.name), meta(f.type).get('secret'))}"
             for f in fields(struct))
    return f"{type(struct).__name__}({', '.join(shown)})"


def _shown(value: Any, secret: bool) -> str:
    return "<secret>" if secret and value else repr(value)


def _meta(help: str, **extra: Any) -> Meta:
    return Meta(description=help or None,
                extra={k: v for k, v in extra.items() if v} or None)


def seconds(help: str, *, below: float | None = None, unit: str = "seconds") -> Any:
    """A positive, finite number of seconds (or ``unit``)."""
    bound = Meta(gt=0, lt=below) if below else Meta(gt=0, le=FINITE)
    return Annotated[float, bound, _meta(help, unit=unit)]


def whole(help: str, *, least: int = 1, most: int | None = None, unit: str = "",
          default: str = "") -> Any:
    """A whole number, at least ``least`` (and at most ``most``)."""
    return Annotated[int, Meta(ge=least, le=most), _meta(help, unit=unit, default=default)]


def text(help: str, *, secret: bool = False, default: str = "", expected: str = "") -> Any:
    return Annotated[str, _meta(help, secret=secret, default=default, expected=expected)]


def maybe_text(help: str, *, secret: bool = False, default: str = "") -> Any:
    """Text, or nothing (``None``: the feature it names is off, or worked out)."""
    return Annotated[_TEXT_OR_NOTHING, _meta(help, secret=secret, default=default)]


#: Built once: each typing.Optional[...] costs the pipe 12 µs at start-up.
_TEXT_OR_NOTHING = Optional[str]


def flag(help: str) -> Any:
    return Annotated[bool, _meta(help)]


def described(kind: Any, help: str, *constraints: Meta, **extra: Any) -> Any:
    """Any other type (a choice, a list, a section) with its help."""
    return Annotated[(kind, *constraints, _meta(help, **extra))]
