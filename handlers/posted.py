"""What a mail becomes in Redmine: a note's text, or a new ticket's description, and its files.

Built once, here, for the plan (``handlers.reply``, ``handlers.new_ticket``), in order:

1. the mail's text, cut at ``attachments.max_note_chars`` (issue 18, finding 9): a
   25 MB mail was a 25 MB note, which every later read of the ticket carried; the
   whole text then goes with it as message.txt (gzipped when only that fits under
   Redmine's upload limit), and the note says so;
2. the files, with each one left out named (``handlers.attachments``), those the
   gateway adds (the whole text, original.eml) held to Redmine's size limit only;
3. the sender named, when the gateway's user writes for them;
4. all of it made inert for Redmine's text formatting (``mailgate.mail.markup``,
   finding 8): what the mail says shows as written, never as an image, a link, a
   macro or a mention;
5. the idempotency marker, last.

``with_refused`` adds, when Redmine refuses a file the plan kept, the line naming it.
"""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass

from mailgate.config import Config
from mailgate.mail.idempotency import with_marker
from mailgate.mail.markup import neutralise
from mailgate.mail.message import Attachment
from mailgate.mail.shorten import cut_point

from .attachments import AttachmentLimits, apply_limits, not_attached_line, size_problem
from .plans import Sender
from .senders import attributed

name = "posted"
description = "The note or description as posted: capped, its files limited, no markup."

#: The file the whole text goes in when the note has only its beginning.
WHOLE_TEXT = "message.txt"

_TRAILING_MARKER = re.compile(r"\(mailgate:[0-9a-f]{16}\)\Z")


@dataclass(frozen=True)
class Posted:
    #: What Redmine is given: escaped for its text formatting, the marker last.
    text: str
    #: The same text as the mail has it (no escapes, no marker), for Discord.
    excerpt: str
    attachments: tuple[Attachment, ...]
    #: The mail brought text or files (or named some left out): something to post.
    has_content: bool


def compose(body: str, files: tuple[Attachment, ...], config: Config, *, mark: str = "",
            own: tuple[Attachment, ...] = (), sender: Sender | None = None,
            whole: str | None = None) -> Posted:
    """``body``: the mail's text as it is to be read (trimmed, marker-like text
    defused); ``files``: the mail's attachments; ``own``: files the gateway adds;
    ``sender``: set when the gateway's user writes, to name them; ``whole``: the
    text ``body`` is the beginning of, when it is only that (a huge mail)."""
    limits = config.attachment_limits
    shown, file = _capped(body, whole, limits)
    kept, dropped = apply_limits(files, limits)
    added, left_out = _within_redmines_limit(own + file, limits)
    length = len(whole if whole is not None else body)
    text = "\n\n".join(filter(None, [shown, _cut_line(length, shown, file, added),
                                     not_attached_line(dropped + left_out)]))
    has_content = bool(text or kept or added)
    if sender is not None:
        text = attributed(text, sender)
    posted = neutralise(text, config.redmine.text_formatting)
    return Posted(with_marker(posted, mark) if mark else posted, text, kept + added,
                  has_content)


def with_refused(text: str, refused: list[str], formatting: str) -> str:
    """``text`` (a plan's note or description) naming the files Redmine refused,
    the marker still last.  Names come from the mail: they are escaped too."""
    line = neutralise(not_attached_line(refused), formatting)
    found = _TRAILING_MARKER.search(text)
    if found is None:
        return "\n\n".join(filter(None, [text, line]))
    head = text[:found.start()].rstrip("\n")
    return with_marker("\n\n".join(filter(None, [head, line])), found.group())


def _capped(body: str, whole: str | None,
            limits: AttachmentLimits) -> tuple[str, tuple[Attachment, ...]]:
    """(what the note shows of ``body``, the whole text as a file when that is not all)."""
    if len(body) <= limits.max_note_chars:
        return body, () if whole is None else (_whole(whole, limits),)
    at = cut_point(body, limits.max_note_chars)
    # At the end of a line when there is one in the second half: a line read whole.
    line_end = body.rfind("\n", 0, at)
    if line_end >= at // 2:
        at = line_end
    return body[:at].rstrip(), (_whole(body if whole is None else whole, limits),)


def _whole(body: str, limits: AttachmentLimits) -> Attachment:
    data = body.encode("utf-8")
    plain = Attachment(WHOLE_TEXT, "text/plain", data)
    if size_problem(plain, limits) is None:
        return plain
    # Text compresses (a log five to ten times): too large for Redmine as it is, the
    # whole of it may still go gzipped.  No timestamp: the same mail, the same file.
    packed = Attachment(f"{WHOLE_TEXT}.gz", "application/gzip",
                        gzip.compress(data, compresslevel=6, mtime=0))
    return packed if size_problem(packed, limits) is None else plain


def _cut_line(length: int, shown: str, file: tuple[Attachment, ...],
              added: tuple[Attachment, ...]) -> str:
    if not file:
        return ""
    attached = any(attachment is file[0] for attachment in added)
    where = f": the whole message is attached as {file[0].filename}" if attached else ""
    return f"(Only the first {len(shown):,} of {length:,} characters are here{where}.)"


def _within_redmines_limit(files: tuple[Attachment, ...], limits: AttachmentLimits) -> tuple[
        tuple[Attachment, ...], list[str]]:
    """The gateway's own files are no mail attachments (no count, no blocked types),
    but Redmine refuses them over its size limit like any other."""
    kept: list[Attachment] = []
    dropped: list[str] = []
    for attachment in files:
        problem = size_problem(attachment, limits)
        if problem:
            dropped.append(f"{attachment.filename} ({problem})")
        else:
            kept.append(attachment)
    return tuple(kept), dropped
