"""``mailgate spool list|show|retry|drop|stats``: what is waiting, why, since when."""

from __future__ import annotations

import sys
import time
from typing import Callable, TextIO

from mailgate.mail.message import parse_mail
from mailgate.store.spool import Spool, SpooledMail


def _age(since: float, now: float) -> str:
    seconds = max(0, int(now - since))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _summary(mail: SpooledMail) -> str:
    try:
        parsed = parse_mail(mail.raw)
        return f"{parsed.from_address} {parsed.subject[:40]!r}"
    except Exception as exc:  # the spool also holds mail we could not parse
        return f"(unparseable: {exc})"


def list_mails(spool: Spool, state: str | None, out: TextIO, now: float | None = None) -> int:
    now = time.time() if now is None else now
    mails = spool.mails(None if state == "all" else state)
    for mail in mails:
        due = "now" if mail.next_attempt_at <= now else f"in {_age(now, mail.next_attempt_at)}"
        waiting = f"next {due}" if mail.state == "queued" else ""
        print(f"{mail.id:>6} {mail.state:6} {_age(mail.received_at, now):>5} old  "
              f"tries {mail.attempts:<2} {waiting:13} <{mail.rcpt}> {_summary(mail)}"
              + (f"\n{'':>14}{mail.last_error}" if mail.last_error else ""), file=out)
    print(f"{len(mails)} mail(s)", file=out)
    dead = spool.counts().get("dead", 0) if state not in ("dead", "all") else 0
    if dead:
        # "0 mail(s)" must not read as "all is well" while mail is dead-lettered.
        print(f"and {dead} dead: mailgate spool list --state dead", file=out)
    return 0


def show(spool: Spool, mail_id: int, raw: bool, out: TextIO) -> int:
    mail = spool.get(mail_id)
    if mail is None:
        print(f"no mail {mail_id} in the spool", file=sys.stderr)
        return 1
    if raw:
        out.buffer.write(mail.raw) if hasattr(out, "buffer") else out.write(mail.raw.decode())
        return 0
    received = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(mail.received_at))
    for label, value in (("id", mail.id), ("state", mail.state), ("received", received),
                         ("from", mail.mail_from), ("to", mail.rcpt),
                         ("attempts", mail.attempts), ("last error", mail.last_error),
                         ("outcome", mail.outcome), ("size", f"{len(mail.raw)} bytes"),
                         ("mail", _summary(mail))):
        print(f"{label:>10}: {value}", file=out)
    return 0


def retry(spool: Spool, mail_id: int | None, out: TextIO) -> int:
    count = spool.retry(mail_id)
    print(f"{count} mail(s) due now", file=out)
    return 0 if count or mail_id is None else 1


def drop(spool: Spool, mail_id: int, confirmed: bool, ask: Callable[[str], str],
         out: TextIO) -> int:
    mail = spool.get(mail_id)
    if mail is None or mail.state == "done":
        print(f"no waiting or dead mail {mail_id}", file=sys.stderr)
        return 1
    if not confirmed:
        answer = ask(f"Drop mail {mail_id} to <{mail.rcpt}> ({_summary(mail)})? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("kept", file=out)
            return 1
    spool.drop(mail_id)
    print(f"dropped {mail_id}", file=out)
    return 0


def stats(spool: Spool, out: TextIO, now: float | None = None) -> int:
    now = time.time() if now is None else now
    counts = spool.counts()
    for state in ("queued", "done", "dead"):
        print(f"{state:>7}: {counts.get(state, 0)}", file=out)
    oldest = spool.oldest_queued()
    print(f" oldest: {_age(oldest, now) if oldest else '-'} (queued)", file=out)
    return 0
