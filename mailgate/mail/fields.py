"""A mail's header fields, (name, value) in order, as the stdlib's compat32 parser
gives them (``Message.items()``), read without the parser where that is simple.

The SMTP listener reads the header block of every mail at DATA, and the stdlib
parser (a feed parser, a Message, a policy) cost it more CPU than the rest of
mailgate's work on a small mail (docs/performance.md, A).  A block of plain
ASCII fields (``Name: value``, continuation lines starting with a blank) is cut
into fields by one regular expression; anything else (8-bit bytes, a line that
is not a field, an mbox ``From `` line, a lone CR) goes to the parser, which
decides as it always has.  tests/test_message.py checks that both read every
block alike.
"""

from __future__ import annotations

import re
from email.parser import BytesHeaderParser

#: One field: the name (printable ASCII but the colon, as the feed parser's
#: headerRE), the value (the rest of its line, white space after the colon
#: dropped, then each continuation line with its line end), and its line end.
_FIELD = re.compile(r"([!-9;-~]+):[ \t]*([^\r\n]*(?:\r?\n[ \t][^\r\n]*)*)(?:\r?\n|\Z)")


def header_fields(block: bytes) -> list[tuple[str, object]]:
    """The fields of a header block (with or without the blank line that ends it);
    a value is a str, or an ``email.header.Header`` where the parser made one."""
    fields = plain_fields(block)
    return fields if fields is not None else BytesHeaderParser().parsebytes(block).items()


def plain_fields(block: bytes) -> list[tuple[str, str]] | None:
    """The fields of a plain ASCII header block, or None if it is not one."""
    if not block.isascii():
        return None
    text = block.decode("ascii")
    fields, at = [], 0
    for found in _FIELD.finditer(text):
        if found.start() != at:
            return None     # something between two fields that is not one
        fields.append((found.group(1), found.group(2)))
        at = found.end()
    # What may follow the last field: nothing, or the blank line ending the block.
    return fields if fields and text[at:] in ("", "\n", "\r\n") else None


def first_field(fields: list[tuple[str, object]], name: str, default: object = None) -> object:
    """The first field called ``name`` (any case), as ``Message.get``."""
    name = name.lower()
    return next((value for key, value in fields if key.lower() == name), default)


def all_fields(fields: list[tuple[str, object]], name: str) -> list[object]:
    """Every field called ``name`` (any case), in order, as ``Message.get_all``."""
    name = name.lower()
    return [value for key, value in fields if key.lower() == name]
