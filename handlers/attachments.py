"""Which attachments go to Redmine, and which are left out (and said so in the note).

Limits come from the config: a size per file (ours, and Redmine's own upload
limit, whichever is lower), a count per mail, and blocked types and
extensions (executables that a ticket tracker should not serve to the next
person who clicks).  Nothing is dropped silently: each file left out is named
in the note with the reason, and the whole mail stays in the spool for an
operator.
"""

from __future__ import annotations

from mailgate.mail.message import Attachment
from mailgate.settings.schema import REDMINE_MAX_ATTACHMENT_SIZE, Attachments

name = "attachments"
description = "Apply the attachment limits; name what was left out."


class AttachmentLimits(Attachments, frozen=True):
    """The ``attachments:`` section (its keys, defaults and meaning are in
    mailgate.settings.schema), with Redmine's own upload limit
    (``redmine.max_attachment_size``)."""

    redmine_max_size: int = REDMINE_MAX_ATTACHMENT_SIZE


def apply_limits(attachments: tuple[Attachment, ...],
                 limits: AttachmentLimits) -> tuple[tuple[Attachment, ...], list[str]]:
    """(the attachments to upload, a "name (reason)" for each one left out)."""
    kept: list[Attachment] = []
    dropped: list[str] = []
    for attachment in attachments:
        reason = _why_not(attachment, limits, len(kept))
        if reason:
            dropped.append(f"{attachment.filename} ({reason})")
        else:
            kept.append(attachment)
    return tuple(kept), dropped


def _why_not(attachment: Attachment, limits: AttachmentLimits, count: int) -> str | None:
    if attachment.problem:
        # The parser could not read it (nested too deep): there is nothing to send.
        return attachment.problem
    if not attachment.data:
        # Nothing to upload, but the sender sent a file by this name: say so.
        return "empty file"
    return why_not(attachment.filename, attachment.content_type, attachment.size, limits,
                   count)


def why_not(filename: str, content_type: str, size: int, limits: AttachmentLimits,
            count: int) -> str | None:
    """Why a file of this name, type and size is not attached when ``count`` files are
    already kept, or None.  Also asked before a file is fetched (a Discord message's
    attachments: ``handlers.discord``), from the size it declares."""
    lower = filename.lower()
    if content_type in limits.blocked_types or \
            any(lower.endswith(ext) for ext in limits.blocked_extensions):
        return "blocked type"
    too_large = _too_large(size, limits)
    if too_large:
        return too_large
    if count >= limits.max_count:
        return f"more than {limits.max_count} files"
    return None


def size_problem(attachment: Attachment, limits: AttachmentLimits) -> str | None:
    """Why ``attachment`` is too large to send, or None."""
    return _too_large(attachment.size, limits)


def _too_large(size: int, limits: AttachmentLimits) -> str | None:
    if size > limits.redmine_max_size and limits.redmine_max_size <= limits.max_size:
        # Redmine would answer 422 for the whole write: leave it out here instead.
        return f"larger than {_human(limits.redmine_max_size)}, Redmine's limit"
    if size > limits.max_size:
        return f"larger than {_human(limits.max_size)}"
    return None


def _human(size: int) -> str:
    for unit, scale in (("MB", 1024 * 1024), ("kB", 1024)):
        if size >= scale:
            return f"{size / scale:.3g} {unit}"
    return f"{size} bytes"


def not_attached_line(dropped: list[str]) -> str:
    return f"(not attached: {', '.join(dropped)})" if dropped else ""
