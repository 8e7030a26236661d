"""A received mail, parsed once into the plain facts the handlers need.

Parsing uses mail-parser (it decodes headers, charsets and transfer
encodings, and is several times faster than the stdlib's ``policy.default``
on our fixtures).  Like the stdlib parser it tolerates broken mail; only a
mail with nothing usable in it (empty, or no headers at all) is refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass, field
from email.errors import HeaderParseError
from email.header import decode_header, make_header
from email.utils import getaddresses, parseaddr

import mailparser

from .errors import BadMessage
from .htmltext import html_to_text


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str
    data: bytes = field(repr=False)

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
    #: Recipient hints in the order the pipe transport trusts them.
    original_to: tuple[str, ...]
    headers: dict[str, str] = field(repr=False, default_factory=dict)
    #: A key that is the same for every delivery of the same mail.
    key: str = ""
    #: The mail as received (the same bytes object, not a copy).
    raw: bytes = field(repr=False, default=b"")


def parse_mail(raw: bytes) -> ParsedMail:
    if not raw or not raw.strip():
        raise BadMessage("empty message")
    try:
        mail = mailparser.parse_from_bytes(raw)
    except Exception as exc:  # mail-parser raises assorted errors on garbage
        raise BadMessage(f"unparseable message: {exc}") from None
    message = mail.message
    if not message.keys():
        raise BadMessage("unparseable message: no header fields")
    headers: dict[str, str] = {}
    for header, value in message.items():
        headers.setdefault(header.lower(), _decoded(value))
    name, address = parseaddr(str(message.get("from", "")))
    message_id = _angle(headers.get("message-id", "")) or None
    return ParsedMail(
        message_id=message_id,
        from_address=address.lower(),
        from_name=_decoded(name) or address,
        subject=" ".join((mail.subject or "").split()),
        body=_body(mail),
        attachments=tuple(_attachments(mail)),
        references=tuple(_message_ids(headers.get("in-reply-to", ""))
                         + _message_ids(headers.get("references", ""))),
        original_to=tuple(_recipient_hints(message)),
        headers=headers,
        key=message_id or "sha256:" + hashlib.sha256(raw).hexdigest(),
        raw=raw,
    )


def _body(mail) -> str:
    if mail.text_plain:
        text = "\n\n".join(mail.text_plain)
    elif mail.text_html:
        text = html_to_text("\n".join(mail.text_html))
    else:
        text = ""
    # Redmine stores what it gets; normalise line ends and trailing space.
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    return "\n".join(lines).strip("\n")


def _attachments(mail):
    for part in mail.attachments:
        payload = part.get("payload") or ""
        if part.get("binary"):
            try:
                data = base64.b64decode(payload)
            except (binascii.Error, ValueError):
                data = payload.encode("utf-8", "replace")
        else:
            data = payload.encode(part.get("charset") or "utf-8", "replace")
        yield Attachment(
            filename=part.get("filename") or "attachment",
            content_type=part.get("mail_content_type") or "application/octet-stream",
            data=data,
        )


_MSGID = re.compile(r"<([^<>\s]+)>")


def _angle(value: str) -> str:
    found = _MSGID.search(value)
    return f"<{found.group(1)}>" if found else value.strip()


def _message_ids(value: str) -> list[str]:
    return [f"<{m}>" for m in _MSGID.findall(value)]


def _recipient_hints(message) -> list[str]:
    """X-Original-To, Delivered-To, then To and Cc: the order MTAs make them trustworthy."""
    hints = []
    for name in ("x-original-to", "delivered-to", "to", "cc"):
        values = [str(v) for v in message.get_all(name, [])]
        hints += [addr.lower() for _, addr in getaddresses(values) if addr]
    return hints


def _decoded(value) -> str:
    """A header value with RFC 2047 encoded words decoded and folding undone."""
    try:
        text = str(make_header(decode_header(str(value))))
    except (HeaderParseError, LookupError, UnicodeError):
        text = str(value)
    return " ".join(text.split())
