"""ISO-2022-JP with NEC and IBM characters, checked cell by cell against Python's cp932.

Japanese mailers write Windows' cp50220: JIS X 0208 plus the NEC special row
and the NEC-selected IBM rows.  Our decoder maps each JIS cell to Shift_JIS
and reads it with cp932, so the reference is cp932 itself: for every cell
cp932 defines in a row, the JIS bytes of that cell must decode to the
character cp932 gives for its Shift_JIS code.  The test reaches each cell
from the Shift_JIS side (the inverse of the decoder's arithmetic), so one
mistake cannot hide in both.
"""

from __future__ import annotations

import pytest

from mailgate.mail.charsets import decode_text

NEC_ROW = [13]
NEC_SELECTED_IBM_ROWS = [89, 90, 91, 92]
JIS_X_0208_ROWS = list(range(1, 9)) + list(range(16, 85))   # symbols, kana, kanji
# Any NEC character makes Python's strict iso2022_jp codec give up, so the
# mail is read by our decoder, not by the stdlib's (which has no NEC rows).
FORCE_OUR_DECODER = "\x1b$B-!\x1b(B".encode()     # ① (row 13, cell 1)


def sjis_to_kuten(lead: int, trail: int) -> tuple[int, int]:
    """Row and cell (1-94) of a Shift_JIS code, by the JIS X 0208 Annex 1 definition."""
    row = 2 * (lead - (0x81 if lead <= 0x9F else 0xC1)) + 1
    if trail >= 0x9F:
        return row + 1, trail - 0x9E
    return row, trail - (0x3F if trail <= 0x7E else 0x40)


def cp932_cells(row: int) -> dict[tuple[int, int], str]:
    """(row, cell) -> the character cp932 defines there, for one JIS row."""
    lead = (row + 1) // 2 + (0x80 if row <= 62 else 0xC0)
    cells = {}
    for trail in [*range(0x40, 0x7F), *range(0x80, 0xFD)]:
        kuten = sjis_to_kuten(lead, trail)
        if kuten[0] != row:
            continue
        character = cp932_char(lead, trail)
        if character is not None:       # None: a hole in the row
            cells[kuten] = character
    return cells


def cp932_char(lead: int, trail: int) -> str | None:
    try:
        return bytes((lead, trail)).decode("cp932")
    except UnicodeDecodeError:
        return None


def jis_bytes(row: int, cell: int) -> bytes:
    return bytes((0x20 + row, 0x20 + cell))


def ours(row: int, cell: int) -> str:
    mail = FORCE_OUR_DECODER + b"\x1b$B" + jis_bytes(row, cell) + b"\x1b(B"
    return decode_text(mail, "iso-2022-jp")[1:]


@pytest.mark.parametrize("row", NEC_ROW + NEC_SELECTED_IBM_ROWS + JIS_X_0208_ROWS)
def test_every_cell_reads_as_cp932_reads_it(row):
    cells = cp932_cells(row)
    assert cells, f"cp932 defines nothing in row {row}"
    wrong = {kuten: (ours(*kuten), expected) for kuten, expected in cells.items()
             if ours(*kuten) != expected}
    assert not wrong


def test_ibm_rows_115_to_119_are_reached_through_the_nec_selected_rows():
    # cp932's IBM extensions (Shift_JIS FA40-FC4B, "rows 115-119") lie beyond
    # 7-bit JIS, so ISO-2022-JP cannot carry them; cp50220 writes each as its
    # NEC-selected (rows 89-92) or NEC row 13 or JIS X 0208 twin.  Every one
    # must be readable that way.
    ibm = {cp932_char(lead, trail) for lead in (0xFA, 0xFB, 0xFC)
           for trail in range(0x40, 0xFD)} - {None}
    readable = {ours(*kuten) for row in NEC_ROW + NEC_SELECTED_IBM_ROWS + JIS_X_0208_ROWS
                for kuten in cp932_cells(row)}
    assert ibm and not ibm - readable


def test_ordinary_japanese_beside_an_nec_character():
    # The finding of issue 18: even rows were shifted by one cell ("廿本碁").
    text = "①日本語のメール、㈱テスト"
    jis = b"".join(bytes(_jis_of(character)) for character in text)
    assert decode_text(b"\x1b$B" + jis + b"\x1b(B", "iso-2022-jp") == text


def test_pure_jis_x_0208_still_goes_through_the_standard_codec():
    text = "日本語のテキスト、ルーターが落ちます"
    assert decode_text(text.encode("iso2022_jp"), "ISO-2022-JP") == text


def _jis_of(character: str) -> tuple[int, int]:
    row, cell = sjis_to_kuten(*character.encode("cp932"))
    return 0x20 + row, 0x20 + cell


# -- one decoding path for headers and bodies, and mislabelled UTF-8 (issue 17, point 6) --

def test_an_encoded_word_subject_gets_the_bodys_supersets():
    """The NEC row in an =?iso-2022-jp?B?...?= Subject stayed encoded while the same
    bytes in a body decoded."""
    import base64

    from mailgate.mail.message import parse_mail

    jis = "\x1b$B-!-\"\x1b(B".encode("ascii")       # ① ② (NEC row 13)
    word = base64.b64encode(jis).decode()
    raw = (f"From: a@example.org\nSubject: =?iso-2022-jp?B?{word}?= =?utf-8?q?caf=C3=A9?="
           f" ok\n\n" + "body").encode()
    assert parse_mail(raw).subject == "①②café ok"
    assert decode_text(jis, "iso-2022-jp") == "①②"


@pytest.mark.parametrize("data, text", [
    (b"caf\xe9 cr\xe8me", "café crème"),          # the local 8-bit charset, labelled UTF-8
    (b"\x93quoted\x94", "\u201cquoted\u201d"),     # Windows-1252 quotes
    (b"caf\xc3\xa9 \xff", "café \ufffd"),          # UTF-8 with one broken byte stays UTF-8
    (b"plain", "plain"),
])
def test_text_labelled_utf8_that_is_not_reads_as_unlabelled_text_does(data, text):
    assert decode_text(data, "utf-8") == text
    assert decode_text(data, "UTF8") == text
