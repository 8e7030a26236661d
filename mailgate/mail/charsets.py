"""Decoding text parts whatever charset they claim: never crash, lose as little as possible.

Mail in the wild labels text with the name of a standard charset and encodes
it with the vendor's superset of it (Outlook writes ``ks_c_5601-1987`` for
Windows code page 949, Japanese mailers put NEC and IBM characters into
``iso-2022-jp``).  Decoding strictly with the label would fail or drop
text, so each label is read with the superset that real senders meant.
Anything still undecodable becomes U+FFFD, never an exception.
"""

from __future__ import annotations

import codecs
import re

# label (lower case) -> the codec real mail with that label needs.
SUPERSETS = {
    "ks_c_5601-1987": "cp949", "ks_c_5601": "cp949", "euc-kr": "cp949", "euc_kr": "cp949",
    "gb2312": "gb18030", "gbk": "gb18030", "x-gbk": "gb18030",
    "shift_jis": "cp932", "shift-jis": "cp932", "sjis": "cp932", "x-sjis": "cp932",
    "iso-8859-1": "cp1252", "latin1": "cp1252", "us-ascii": "cp1252", "ascii": "cp1252",
    "iso-8859-11": "cp874", "tis-620": "cp874", "windows-874": "cp874",
    "iso-8859-8-i": "iso-8859-8", "big5": "big5hkscs",
}

_JIS_RUN = re.compile(rb"\x1b\$[@B](.*?)(?=\x1b|$)", re.DOTALL)


def decode_text(data: bytes, label: str | None) -> str:
    """``data`` as text, read with the charset ``label`` names (or its superset)."""
    name = (label or "").strip().strip('"').lower()
    if name in ("iso-2022-jp", "iso2022jp", "csiso2022jp"):
        return _iso2022jp(data)
    if not name:
        return _guess(data)
    codec = SUPERSETS.get(name, name) or "utf-8"
    try:
        info = codecs.lookup(codec)
    except LookupError:
        return _guess(data)
    if info.name == "utf-8":
        return _utf8(data)
    # Broken bytes in a labelled charset become U+FFFD; the rest is kept.
    return data.decode(codec, errors="replace")


#: A well-formed UTF-8 sequence of more than one byte.
_UTF8_MULTIBYTE = re.compile(rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}"
                             rb"|[\xf0-\xf4][\x80-\xbf]{3}")


def _utf8(data: bytes) -> str:
    """Text labelled UTF-8.  A mailer that labels everything UTF-8 but writes its local
    8-bit charset (caf\xe9) has no UTF-8 sequence in it at all: that reads as unlabelled
    text does.  Text that is UTF-8 with a few broken bytes keeps its UTF-8."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    if _UTF8_MULTIBYTE.search(data) is None:
        return data.decode("cp1252", errors="replace")
    return data.decode("utf-8", errors="replace")


def _guess(data: bytes) -> str:
    """An unknown or made-up label ("unknown-8bit", "x-user-defined"): most such
    text is UTF-8 these days, and what is not reads best as Windows-1252."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def _iso2022jp(data: bytes) -> str:
    """ISO-2022-JP read like Windows' cp50220: the JIS X 0208 runs through cp932,
    which has the NEC and IBM characters (①, ㈱, ...) that Python's codec rejects."""
    try:
        return data.decode("iso2022_jp")
    except UnicodeDecodeError:
        pass
    out = bytearray()
    position = 0
    for run in _JIS_RUN.finditer(data):
        out += _ascii_part(data[position:run.start()])
        out += _jis_to_sjis(run.group(1))
        position = run.end()
    out += _ascii_part(data[position:])
    return bytes(out).decode("cp932", errors="replace")


def _ascii_part(chunk: bytes) -> bytes:
    # Escapes back to ASCII / JIS-Roman are dropped; the text between is ASCII.
    return re.sub(rb"\x1b\([BJ]", b"", chunk)


def _jis_to_sjis(run: bytes) -> bytes:
    out = bytearray()
    for i in range(0, len(run) - 1, 2):
        j1, j2 = run[i], run[i + 1]
        if not (0x21 <= j1 <= 0x7E and 0x21 <= j2 <= 0x7E):
            out += b"?"
            continue
        out += bytes((_sjis_lead(j1), _sjis_trail(j1, j2)))
    return bytes(out)


def _sjis_lead(j1: int) -> int:
    # Two JIS rows share one Shift_JIS lead byte; 0xA0-0xDF is left to half-width kana.
    return (j1 + 1) // 2 + (0x70 if j1 <= 0x5E else 0xB0)


def _sjis_trail(j1: int, j2: int) -> int:
    if j1 % 2:
        # Odd rows take trail bytes 0x40-0x9E, skipping 0x7F (DEL).
        trail = j2 + 0x1F
        return trail + 1 if trail >= 0x7F else trail
    # Even rows take 0x9F-0xFC: cell 1 (0x21) must land on 0x9F.
    return j2 + 0x7E
