"""``mailgate replay``: feed saved mail (files, directories, mbox) through the same
intake as SMTP and the pipe, and process it at once."""

from __future__ import annotations

import mailbox
import re
from collections import Counter
from pathlib import Path
from typing import Iterator

from mailgate.errors import MailgateError, NoInput, TemporaryError
from mailgate.gateway import Gateway
from mailgate.outcome import Outcome


def messages(paths: list[str]) -> Iterator[tuple[str, bytes]]:
    """(name, raw bytes) for every mail in the given files, directories and mboxes.
    A path that is not there or cannot be read is NoInput, before any mail is taken."""
    for path in map(Path, paths):
        if not path.exists():
            raise NoInput(f"{path}: no such file or directory")
    for path in map(Path, paths):
        if path.is_dir():
            yield from messages([str(p) for p in sorted(path.rglob("*")) if p.is_file()])
            continue
        raw = _read(path)
        if raw[:5] == b"From ":
            for index, message in enumerate(mailbox.mbox(path)):
                yield f"{path}[{index}]", _unescaped(message.as_bytes())
        else:
            yield str(path), raw


#: A line an mbox writer escaped: ">From " (and, in mboxrd, ">>From " for ">From ").
_ESCAPED_FROM = re.compile(rb"^>(>*From )", re.MULTILINE)


def _unescaped(raw: bytes) -> bytes:
    """The mail as it was before it went into the mbox: one ">" off each escaped From
    line, before anything reads the text (trimming took ">From " for a quote)."""
    return _ESCAPED_FROM.sub(rb"\1", raw)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise NoInput(f"{path}: cannot read: {exc.strerror}") from None


def replay(gateway: Gateway, paths: list[str], recipient: str | None, via: str,
           progress) -> Counter:
    """``via``: "replay" (nothing says which MTA the saved mail came through, so none
    of its Authentication-Results are believed) or "pipe" (the operator vouches that
    it came through ours)."""
    summary: Counter = Counter()
    total = count(paths)
    for done, (name, raw) in enumerate(messages(paths), 1):
        kind, said = _deliver(gateway, raw, recipient, via)
        summary[kind] += 1
        progress(f"{name}: {kind}: {said}", done, total)
    return summary


def count(paths: list[str]) -> int:
    """How many mails ``messages`` will give (an mbox is indexed, not parsed)."""
    total = 0
    for path in map(Path, paths):
        if path.is_dir():
            total += count([str(p) for p in path.rglob("*") if p.is_file()])
        elif path.is_file():
            with path.open("rb") as file:
                is_mbox = file.read(5) == b"From "
            total += len(mailbox.mbox(path)) if is_mbox else 1
    return total


def _deliver(gateway: Gateway, raw: bytes, recipient: str | None, via: str):
    """(outcome kind, what to say) for one mail."""
    try:
        delivery = gateway.intake.take(raw, recipient, via=via)
    except MailgateError as exc:
        return "rejected", exc.smtp_reply
    result = gateway.worker.run_once([delivery.spool_id])
    if result is None:
        return "queued", f"spooled as {delivery.spool_id}"
    outcome = result[1]
    if isinstance(outcome, Outcome):
        return outcome.kind, str(outcome)
    kind = "deferred" if isinstance(outcome, TemporaryError) else "dead-lettered"
    return kind, f"{type(outcome).__name__}: {outcome}"
