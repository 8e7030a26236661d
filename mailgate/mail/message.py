"""A received mail, parsed once into the plain facts the handlers need.

Parsing is the stdlib's (compat32, the fastest of its policies); like it, we
never raise on broken mail: a part we cannot read is skipped, a charset we
cannot trust is read with its superset (``mailgate.mail.charsets``).  Only mail
with nothing usable in it (empty, no header fields at all) is refused.

We walk the MIME tree ourselves rather than use mail-parser's results:
mail-parser re-encodes every attachment to base64 text (three copies of a
big file in memory) and decodes text with no fallback for the charsets real
mail mislabels.  The walk below keeps one decoded copy per part.

The parser descends at most MAX_MIME_DEPTH levels (the stdlib's would recurse
until Python gives up): a part nested deeper keeps its subtree as unparsed
bytes and is named in the note, not attached.  The header-only parse at DATA
cannot see the depth, so such mail is accepted and flattened, not refused.
"""

from __future__ import annotations

import binascii
import hashlib
import mimetypes
import re
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Callable, Sequence
from email.errors import HeaderParseError
from email.header import decode_header
from email.message import Message
from email.feedparser import BytesFeedParser
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import getaddresses, parseaddr

from mailgate.mail.charsets import decode_text
from mailgate.mail.fields import all_fields, first_field, header_fields
from mailgate.errors import BadMessage

# Signatures of multipart/signed mail: proof of the sender, not content.
_SIGNATURES = {"application/pgp-signature", "application/pkcs7-signature",
               "application/x-pkcs7-signature"}


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str
    data: bytes = field(repr=False)
    #: Why this part cannot be attached ("" if it can); such a part is named, not sent.
    problem: str = ""

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass(frozen=True)
class ParsedMail:
    message_id: str | None
    from_address: str
    from_name: str
    subject: str
    #: The note text: text/plain preferred, else the HTML part made readable.
    body: str
    attachments: tuple[Attachment, ...]
    #: Message-IDs this mail answers (In-Reply-To, then References).
    references: tuple[str, ...]
    headers: dict[str, str] = field(repr=False, default_factory=dict)
    #: A key that is the same for every delivery of the same mail.
    key: str = ""
    #: The mail as received (the same bytes object, not a copy).
    raw: bytes = field(repr=False, default=b"")
    #: The header fields as read, (name, value) in order (mailgate.mail.fields).
    fields: tuple[tuple[str, object], ...] = field(repr=False, default=())

    @cached_property
    def original_to(self) -> tuple[str, ...]:
        """Recipient hints in the order the pipe transport trusts them.  Read when first
        asked for: only mail without an envelope needs them, and reading addresses
        costs the SMTP listener more than the rest of the header fields."""
        return tuple(_recipient_hints(self.fields))


#: How many multipart or message/* parts may enclose a part.  Real mail rarely
#: nests past 5; the stdlib parser descends once per level and meets Python's
#: recursion limit near 1,000, which 56 KB of mail can reach.
MAX_MIME_DEPTH = 50
TOO_DEEP = f"MIME nesting deeper than {MAX_MIME_DEPTH}"

#: Leaves this big are decoded straight from the raw bytes (see _big_leaves).
BIG_LEAF = 16 * 1024
_STUB = b"\x00mailgate-big-leaf:%d\x00"


def parse_mail(raw: bytes, *, headers_only: bool = False) -> ParsedMail:
    """The mail's facts; ``headers_only`` skips the body and attachments (for routing
    and screening at DATA time, where only the header fields matter)."""
    if not raw or raw.isspace():        # raw.strip() would copy the whole mail
        raise BadMessage("empty message")
    if headers_only:
        # Only the header block: the parser would otherwise decode the whole mail
        # to text and split it into lines (about 8x a big mail, and its CPU).
        return _parse(raw, header_fields(_header_block(raw)))
    try:
        leaves = _big_leaves(raw)
    except Exception:  # anything odd in the structure: the stdlib parser decides alone
        leaves = []
    if not leaves:
        return _parsed(raw, _parse_bounded(raw))
    # The stdlib parser keeps a str per line of a body before joining them: big
    # leaves (attachments and long texts alike) are cut out of a copy of the mail (a
    # stub in their place, which their transfer encoding leaves as it is), the small
    # rest is parsed as always, and each big one is decoded once, from a memoryview
    # of the raw bytes.  Peak: the mail plus its decoded parts (a 25 MB text: 214 MB
    # before, when every line was a str of its own).
    pieces, at = [], 0
    for n, (start, stop, encoding) in enumerate(leaves):
        pieces += [raw[at:start], binascii.b2a_base64(_STUB % n) if encoding == "base64"
                   else _STUB % n + b"\n"]
        at = stop
    view = memoryview(raw)

    def big(data: bytes) -> bytes:
        n = _stub(data.rstrip(b"\r\n"))
        if n is None:
            return data
        start, stop, encoding = leaves[n]
        return _decoded(view[start:stop], encoding)

    return _parsed(raw, _parse_bounded(b"".join(pieces + [raw[at:]])), big)


def _parsed(raw: bytes, message: Message,
            big: Callable[[bytes], bytes] = lambda data: data) -> ParsedMail:
    """The whole mail: its header fields, and its MIME tree walked."""
    return _parse(raw, message.items(), message, big)


def _parse(raw: bytes, fields: list[tuple[str, object]], message: Message | None = None,
           big: Callable[[bytes], bytes] = lambda data: data) -> ParsedMail:
    """The facts of a mail from its header ``fields``; its body and attachments from
    ``message``'s MIME tree, if given (None: the header fields only)."""
    if not fields:
        raise BadMessage("unparseable message: no header fields")
    headers: dict[str, str] = {}
    for name, value in fields:
        headers.setdefault(name.lower(), decoded_header(value))
    name, address = parseaddr(str(first_field(fields, "from", "")))
    message_id = _angle(headers.get("message-id", "")) or None
    plain, html, attachments = ([], [], []) if message is None else _walk(message, big)
    return ParsedMail(
        message_id=message_id,
        from_address=address.lower(),
        from_name=decoded_header(name) or address,
        subject=headers.get("subject", ""),
        body=_body(plain, html) if message is not None else "",
        attachments=tuple(attachments),
        references=tuple(_message_ids(headers.get("in-reply-to", ""))
                         + _message_ids(headers.get("references", ""))),
        headers=headers,
        key=message_id or "sha256:" + hashlib.sha256(raw).hexdigest(),
        raw=raw,
        fields=tuple(fields),
    )


class _Part(Message):
    """A part as ``_BoundedParser`` makes it: one nested too deep is a leaf."""

    too_deep = False

    def get_content_type(self) -> str:
        # The parser asks this to decide whether to descend into the part: one
        # too deep answers "opaque data", and its subtree stays unparsed bytes.
        return "application/octet-stream" if self.too_deep else super().get_content_type()

    def declared_type(self) -> str:
        return super().get_content_type()


class _BoundedParser(BytesFeedParser):
    """The stdlib parser (compat32), descending no deeper than MAX_MIME_DEPTH.

    ``_new_message`` is where the parser starts each part, before it reads the
    part's header fields and asks its type: the one place to stop the descent
    without copying the parser.
    """

    def __init__(self):
        super().__init__(_factory=_Part, policy=compat32)

    def _new_message(self) -> None:
        super()._new_message()
        # The stack holds the part and every part enclosing it.
        if len(self._msgstack) - 1 > MAX_MIME_DEPTH:
            self._cur.too_deep = True


def _parse_bounded(raw: bytes) -> Message:
    parser = _BoundedParser()
    parser.feed(raw)
    return parser.close()


def _decoded(body: memoryview, encoding: str) -> bytes:
    """A leaf's body as its Content-Transfer-Encoding says, as the stdlib decodes it."""
    try:
        if encoding == "base64":
            return binascii.a2b_base64(body)
        if encoding == "quoted-printable":
            return binascii.a2b_qp(bytes(body))
    except (binascii.Error, ValueError):
        return b""
    return bytes(body)


def _stub(data: bytes) -> int | None:
    if data.startswith(b"\x00mailgate-big-leaf:") and data.endswith(b"\x00"):
        return int(data[19:-1])
    return None


def _header_block(raw: bytes, start: int = 0, end: int | None = None) -> bytes:
    """raw[start:end] up to and with the blank line that ends its header fields."""
    end = len(raw) if end is None else end
    if raw.startswith((b"\r\n", b"\n"), start):
        return b""
    crlf = raw.find(b"\r\n\r\n", start, end)
    # A bare-LF blank line counts only before the first CRLF one: no need to look
    # for one in the whole body of a CRLF mail.
    lf = raw.find(b"\n\n", start, crlf + 4 if crlf >= 0 else end)
    found = [i + n for i, n in ((crlf, 4), (lf, 2)) if i >= 0]
    return raw[start:min(found) if found else end]


def _big_leaves(raw: bytes, start: int = 0, end: int | None = None,
                depth: int = 0) -> list[tuple[int, int]]:
    """(start, end, transfer encoding) of the body of each big leaf."""
    end = len(raw) if end is None else end
    head = _header_block(raw, start, end)
    body = start + len(head) + (0 if head else (2 if raw.startswith(b"\r\n", start) else 1))
    part = BytesHeaderParser(policy=compat32).parsebytes(head)
    if part.get_content_maintype() == "multipart":
        boundary = part.get_boundary()
        if not boundary or depth > 20:
            return []
        delimiter = b"\n--" + boundary.encode("ascii", "replace")
        cuts, at = [], raw.find(delimiter, body - 1, end)
        while at >= 0:
            cuts.append(at)
            at = raw.find(delimiter, at + len(delimiter), end)
        found = []
        for before, after in zip(cuts, cuts[1:]):
            child = raw.find(b"\n", before + len(delimiter), end) + 1
            stop = after - 1 if raw[after - 1:after] == b"\r" else after
            if 0 < child <= stop:
                found += _big_leaves(raw, child, stop, depth + 1)
        return found
    if part.get_content_type() == "message/rfc822" or end - body < BIG_LEAF:
        return []       # an attached mail is parsed as the mail it is
    encoding = str(part.get("content-transfer-encoding", "")).strip().lower()
    return [(body, end, encoding)]


def decoded_header(value) -> str:
    """A header value with RFC 2047 encoded words decoded and folding undone.  Each
    word's bytes go through the body's decoding (``charsets.decode_text``), so a
    Subject gets the same supersets as the text (ISO-2022-JP's NEC row: ①)."""
    text = str(value)
    try:
        # decode_header finds no encoded word where there is no "=?" (the common case).
        words = decode_header(text) if "=?" in text else [(text, None)]
    except (HeaderParseError, LookupError, UnicodeError, ValueError):
        words = [(text, None)]
    if any(isinstance(word, bytes) for word, _ in words):
        text = "".join(word if isinstance(word, str) else decode_text(word, charset)
                       for word, charset in words)
    # NULs and control characters have no place in a subject or a name.
    return " ".join(_CONTROL.sub(" ", text).split())


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


# -- the MIME tree -------------------------------------------------------------

def _walk(message: Message, big: Callable[[bytes], bytes] = lambda data: data
          ) -> tuple[list[str], list[str], list[Attachment]]:
    """Inline text/plain parts, inline text/html parts, and every other leaf; ``big``
    gives a leaf that was cut out before parsing its decoded bytes."""
    plain: list[str] = []
    html: list[str] = []
    attachments: list[Attachment] = []
    for part in _leaves(message):
        if getattr(part, "too_deep", False):
            attachments.append(_too_deep(part, len(attachments) + 1))
            continue
        kind = part.get_content_type()
        data = big(_payload(part))
        if kind in ("text/plain", "text/html") and _is_inline_text(part):
            if data:        # an empty text part adds nothing to the note
                text = decode_text(data, part.get_content_charset())
                (plain if kind == "text/plain" else html).append(text)
        elif kind not in _SIGNATURES:
            # Empty files too: the sender sent a file by that name, and the note
            # names it (handlers.attachments) rather than lose it without a word.
            attachments.append(Attachment(_filename(part, len(attachments) + 1), kind, data))
    return plain, html, attachments


def _too_deep(part: Message, number: int) -> Attachment:
    """The part where the parser stopped descending: named in the note, never sent."""
    kind = part.declared_type()
    return Attachment(_filename(part, number, kind), kind, b"", problem=TOO_DEEP)


def _leaves(message: Message):
    """Every non-multipart part, depth first; an attached mail stays one leaf.

    A loop with a stack, not recursion: the depth is bounded by the parser,
    but nothing here should depend on that to stay within Python's limit.
    """
    pending = [message]
    while pending:
        part = pending.pop()
        if part.get_content_maintype() == "multipart" and part.is_multipart():
            children = [c for c in part.get_payload() if isinstance(c, Message)]
            pending.extend(reversed(children))
        else:
            yield part


def _payload(part: Message) -> bytes:
    if part.get_content_type() == "message/rfc822" or part.is_multipart():
        # An attached mail is kept as the mail it is.
        inner = part.get_payload()
        inner = inner[0] if isinstance(inner, list) and inner else inner
        return inner.as_bytes() if isinstance(inner, Message) else b""
    try:
        data = part.get_payload(decode=True)
    except Exception:  # the stdlib's decoders raise assorted errors on garbage
        return b""
    return data or b""


def _is_inline_text(part: Message) -> bool:
    # str(): a header with 8-bit bytes comes back as an email.header.Header.
    disposition = str(part.get("content-disposition") or "").split(";")[0].strip().lower()
    return disposition != "attachment" and not part.get_param("name") \
        and not part.get_filename()


def _filename(part: Message, number: int, kind: str | None = None) -> str:
    try:
        name = part.get_filename()
    except (HeaderParseError, LookupError, UnicodeError, ValueError):
        name = None
    if name:
        # A name is shown and stored; path separators and controls are not welcome.
        name = decoded_header(name).replace("/", "_").replace("\\", "_").strip(". ")
    if not name:
        kind = kind or part.get_content_type()
        extension = ".eml" if kind == "message/rfc822" else (
            mimetypes.guess_extension(kind) or ".bin")
        name = f"attachment-{number}{extension}"
    return name[:200]


def _body(plain: list[str], html: list[str]) -> str:
    texts = [t for t in plain if t.strip()]
    html = [h for h in html if h.strip()]
    if texts or not html:
        text = "\n\n".join(texts)
    else:
        # No text part, or only empty ones: the HTML is what the sender wrote.
        # Imported here: html.parser costs 2 ms of every `mailgate pipe`, which reads
        # the header fields only, and most mail has a text part.
        from mailgate.mail.htmltext import html_to_text

        text = "\n\n".join(html_to_text(h) for h in html)
    # Redmine stores what it gets; normalise line ends, trailing space and NULs.
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").replace("\x00", "").split("\n")]
    return "\n".join(lines).strip("\n")


# -- addresses and ids ---------------------------------------------------------------

_MSGID = re.compile(r"<([^<>\s]+)>")


def _angle(value: str) -> str:
    found = _MSGID.search(value)
    return f"<{found.group(1)}>" if found else value.strip()


def _message_ids(value: str) -> list[str]:
    return [f"<{m}>" for m in _MSGID.findall(value)]


#: Where a mail without an envelope names its recipients, most trustworthy first.
RECIPIENT_HEADERS = ("x-original-to", "delivered-to", "to", "cc")


def recipient_hints(mail: ParsedMail, names: Sequence[str]) -> tuple[str, ...]:
    """The addresses in the header fields ``names``, in that order (the IMAP source's
    configurable order; ``ParsedMail.original_to`` is RECIPIENT_HEADERS')."""
    fields = header_fields(_header_block(mail.raw))
    return tuple(_recipient_hints(fields, [n.lower() for n in names]))


def _recipient_hints(fields: list[tuple[str, object]],
                     names: Sequence[str] = RECIPIENT_HEADERS) -> list[str]:
    """X-Original-To, Delivered-To, then To and Cc: the order MTAs make them trustworthy."""
    hints = []
    for name in names:
        values = [str(v) for v in all_fields(fields, name)]
        hints += [addr.lower() for _, addr in getaddresses(values) if addr]
    return hints
