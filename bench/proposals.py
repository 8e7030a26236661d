"""Prototypes of the changes docs/performance.md proposes, applied only inside bench processes.

The benches measure mailgate as it is AND with each proposal, in the same run,
so a proposed diff comes with the figure it moves.  Nothing here is imported by
mailgate; each ``apply_*`` function patches one thing and says what, and the
matching unified diff is in docs/performance.md.  The code mirrors the diff.
"""

from __future__ import annotations

import hashlib
import threading
from email.parser import BytesHeaderParser
from email.policy import compat32


# -- A: group commit in the SQLite spool ---------------------------------------------

class _Pending:
    __slots__ = ("mail_from", "recipients", "raw", "ids", "error", "done")

    def __init__(self, mail_from, recipients, raw):
        self.mail_from, self.recipients, self.raw = mail_from, recipients, raw
        self.ids, self.error, self.done = None, None, False


def _group_add(self, mail_from, recipients, raw):
    """Spool.add with group commit: whoever takes the writer lock commits every add queued.

    Each caller still returns (and its edge says 250) only once a COMMIT that
    contains its rows has returned, i.e. after that fsync.
    """
    import time

    item = _Pending(mail_from, recipients, raw)
    with self._pending_lock:
        self._pending.append(item)
    with self._lock:
        if not item.done:
            with self._pending_lock:
                batch, self._pending = self._pending, []
            self._commit_batch(batch, time.time())
    if item.error is not None:
        raise item.error
    return item.ids


def _commit_batch(self, batch, now):
    import sqlite3

    from mailgate.errors import SpoolBusy

    try:
        self._db.execute("BEGIN IMMEDIATE")
        cur = self._db.cursor()
        for item in batch:
            item.ids = []
            for rcpt, order_key in item.recipients:
                cur.execute("INSERT INTO messages (received_at, mail_from, rcpt, raw, order_key)"
                            " VALUES (?, ?, ?, ?, ?) RETURNING id",
                            (now, item.mail_from, rcpt, item.raw, order_key))
                item.ids.append(cur.fetchone()[0])
        self._db.execute("COMMIT")
    except BaseException as exc:
        self._rollback()
        error = (SpoolBusy(f"spool {self.path}: {exc}")
                 if isinstance(exc, sqlite3.OperationalError) else exc)
        for item in batch:
            item.ids, item.error = None, error
    finally:
        for item in batch:
            item.done = True


def apply_group_commit() -> str:
    from mailgate.spool import SqliteSpool

    original_init = SqliteSpool.__init__

    def __init__(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self._pending = []
        self._pending_lock = threading.Lock()

    SqliteSpool.__init__ = __init__
    SqliteSpool.add = _group_add
    SqliteSpool._commit_batch = _commit_batch
    return "SqliteSpool.add: group commit"


# -- A, C: at receive, parse the header only ---------------------------------------

def _header_block(raw: bytes) -> bytes:
    for sep in (b"\r\n\r\n", b"\n\n"):
        end = raw.find(sep)
        if end >= 0:
            return raw[:end + len(sep)]
    return raw


def parse_head(raw: bytes):
    """A ParsedMail with the header fields only (no body, no attachments).

    Everything ``Gateway.receive`` looks at (route, sender policy, the key for
    the log line) is in the header; the body is parsed by the worker.
    """
    from email.utils import parseaddr

    from mailgate import message as m
    from mailgate.errors import BadMessage

    # message.py is being reworked: use its header decoder under either name.
    decoded = getattr(m, "decoded_header", None) or getattr(m, "_decoded")
    if not raw or not raw.strip():
        raise BadMessage("empty message")
    msg = BytesHeaderParser(policy=compat32).parsebytes(_header_block(raw))
    if not msg.keys():
        raise BadMessage("unparseable message: no header fields")
    headers: dict[str, str] = {}
    for name, value in msg.items():
        headers.setdefault(name.lower(), decoded(value))
    name, address = parseaddr(str(msg.get("from", "")))
    message_id = m._angle(headers.get("message-id", "")) or None
    return m.ParsedMail(
        message_id=message_id, from_address=address.lower(),
        from_name=decoded(name) or address,
        subject=" ".join(headers.get("subject", "").split()),
        body="", attachments=(),
        references=tuple(m._message_ids(headers.get("in-reply-to", ""))
                         + m._message_ids(headers.get("references", ""))),
        original_to=tuple(m._recipient_hints(msg)), headers=headers,
        key=message_id or "sha256:" + hashlib.sha256(raw).hexdigest())


def apply_head_only_receive() -> str:
    """For an ingest-only process (worker disabled): every parse there is a receive's.

    The proposed diff instead changes the one call in ``Gateway.receive``; the
    worker's ``_apply`` keeps the full ``parse_mail``.
    """
    from mailgate import dispatch

    dispatch.parse_mail = parse_head
    return "Gateway.receive: header-only parse"
