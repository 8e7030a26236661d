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



# -- which proposals mailgate already has ----------------------------------------------
#
# Some of the diffs below have since been applied to mailgate (eed9613: d-1, d-2, e-1;
# 894d32a: group commit).  Re-applying a prototype over the real thing would measure
# the prototype, not mailgate, so every apply_* that has landed returns without
# patching, and the benches leave out contenders that would only repeat "as it is".

def _source(obj) -> str:
    import inspect

    try:
        return inspect.getsource(obj)
    except (OSError, TypeError):
        return ""


def in_code(name: str) -> bool:
    """True when proposal ``name`` (a patch's prefix: gc, d-1, d-2, e-1, a-1, b-1, b-2)
    is already in the mailgate being measured.  Detected from the code itself."""
    import inspect

    if name == "gc":
        from mailgate.spool import SqliteSpool
        return "_pending" in _source(SqliteSpool) or "group" in _source(SqliteSpool.add).lower()
    if name == "d-1":       # big leaves from the raw bytes; headers_only = header block only
        from mailgate import message
        return hasattr(message, "_big_leaves") and hasattr(message, "_header_block")
    if name == "d-2":       # claim reads the raw mail through a blob handle
        from mailgate.spool import SqliteSpool
        return "claim" in SqliteSpool.__dict__ and "blobopen" in _source(SqliteSpool.claim)
    if name == "e-1":       # the sender check parses the header block only
        from mailgate import trust
        return ".find(" in _source(trust._header_fields)
    if name == "a-1":
        from mailgate import dispatch
        return hasattr(dispatch.Gateway, "check_recipient_now")
    if name == "b-1":
        from mailgate import redmine
        return "_notes_kept" in _source(redmine)
    if name == "b-2":
        from mailgate.facts import RedmineFacts
        return "ticket_seconds" in inspect.signature(RedmineFacts).parameters
    raise ValueError(name)


def _skip(name: str, what: str) -> str | None:
    return f"{what}: already in mailgate ({name}), not re-applied" if in_code(name) else None


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
    if (done := _skip("gc", "SqliteSpool.add: group commit")):
        return done
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


def parse_head(raw: bytes, headers_only: bool = True):
    """A ParsedMail with the header fields only (no body, no attachments).

    Everything ``Gateway.receive`` looks at (route, sender policy, the key for
    the log line) is in the header; the body is parsed by the worker.
    """
    from email.utils import parseaddr

    from mailgate import message as m
    from mailgate.errors import BadMessage

    # message.py is being reworked: use its header decoder under either name.
    decoded = getattr(m, "decoded_header", None) or getattr(m, "_decoded")
    if not raw or raw.isspace():        # raw.strip() would copy the whole mail
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
    if (done := _skip("d-1", "Gateway.receive: header block only")):
        return done
    from mailgate import dispatch

    dispatch.parse_mail = parse_head
    return "Gateway.receive: header-only parse"


def apply_head_only_receive_call() -> str:
    """As the proposed diff does it: Gateway.receive calls parse_head, nothing else does."""
    if (done := _skip("d-1", "Gateway.receive: header block only")):
        return done
    from mailgate import dispatch

    source = dispatch.Gateway.receive

    def receive(self, envelope, *, all_or_nothing=False):
        module = dispatch.__dict__
        full = module["parse_mail"]
        try:
            module["parse_mail"] = parse_head
            return source(self, envelope, all_or_nothing=all_or_nothing)
        finally:
            module["parse_mail"] = full

    # Not thread-safe; the D bench calls receive and the worker one after the other.
    dispatch.Gateway.receive = receive
    return "Gateway.receive: header-only parse (this process's receive calls only)"


# -- A: no thread hop per mail: RCPT inline when it needs no Redmine, DATA screened on
#       the loop, commits batched by one spool-writer thread --------------------------

class SpoolWriter:
    """One thread that commits, in one transaction, every mail queued since its last commit.

    ``await writer.add(...)`` returns the ids once the COMMIT holding that mail
    has returned (fsync done): the 250 still follows the commit.  The loop is
    woken once per batch, not once per mail.
    """

    def __init__(self, spool):
        self.spool = spool
        self._queue: list = []
        self._ready = threading.Condition()
        threading.Thread(target=self._run, name="spool-writer", daemon=True).start()

    async def add(self, mail_from, recipients, raw):
        import asyncio

        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._ready:
            self._queue.append((mail_from, recipients, raw, loop, future))
            self._ready.notify()
        return await future

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._queue:
                    self._ready.wait()
                batch, self._queue = self._queue, []
            try:
                ids = add_many(self.spool, [(f, r, raw) for f, r, raw, _, _ in batch])
                answers = [(fut, i, None) for (_, _, _, _, fut), i in zip(batch, ids)]
            except Exception as exc:  # every mail of the batch is answered 451
                answers = [(fut, None, exc) for *_, fut in batch]
            for loop in {item[3] for item in batch}:
                loop.call_soon_threadsafe(_settle, answers)


def _settle(answers) -> None:
    for future, ids, error in answers:
        if future.cancelled():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(ids)


def add_many(spool, mails) -> list[list[int]]:
    """Spool.add for several mails in one transaction (one fsync)."""
    import time

    now = time.time()
    out = []
    with spool._transaction() as cur:
        for mail_from, recipients, raw in mails:
            ids = []
            for rcpt, order_key in recipients:
                cur.execute("INSERT INTO messages (received_at, mail_from, rcpt, raw, order_key)"
                            " VALUES (?, ?, ?, ?, ?) RETURNING id",
                            (now, mail_from, rcpt, raw, order_key))
                ids.append(cur.fetchone()[0])
            out.append(ids)
    return out


def apply_async_ingest() -> str:
    if (done := _skip("a-1", "SMTP: no thread hop")):
        return done
    import asyncio
    import logging
    import time

    from mailgate import dispatch, smtp
    from mailgate.errors import MailgateError
    from mailgate.routing import resolve_recipient

    log = logging.getLogger("mailgate")

    def check_recipient_now(self, address):
        """The RCPT check if it needs no Redmine; None when it does (then use a thread)."""
        recipient = resolve_recipient(address, self.config)
        if recipient.kind == "ticket":
            confirmed = self._known_tickets.get(recipient.ticket)
            if confirmed is None or time.monotonic() - confirmed >= dispatch.KNOWN_TICKET_SECONDS:
                return None
        return recipient

    def needs_redmine_to_screen(self, recipients) -> bool:
        for address in recipients:
            site = self.config.site_for_address(address.strip().strip("<>").lower())
            policy = site.unknown_senders if site else self.config.unknown_senders
            if policy == "reject":
                return True
        return False

    def screen(self, envelope, all_or_nothing=False):
        """receive() up to the commit: (mail, refusals, [(address, order key)] to spool)."""
        self.check_size(envelope.raw)
        mail = parse_head(envelope.raw)
        results, order_keys = {}, {}
        for address in envelope.recipients:
            try:
                order_keys[address] = self._screen(address, mail)
            except MailgateError as exc:
                results[address] = dispatch.Delivery(address, error=exc)
        if all_or_nothing and results:
            raise next(iter(results.values())).error
        accepted = [(a, order_keys[a]) for a in envelope.recipients if a not in results]
        return mail, results, accepted

    dispatch.Gateway.check_recipient_now = check_recipient_now
    dispatch.Gateway.needs_redmine_to_screen = needs_redmine_to_screen
    dispatch.Gateway.screen = screen

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if len(envelope.rcpt_tos) >= self.gateway.config.max_recipients:
            return smtp.S452_TOO_MANY
        try:
            if self.gateway.check_recipient_now(address) is None:
                await asyncio.to_thread(self.gateway.check_recipient, address)
        except MailgateError as exc:
            smtp.log.info("RCPT <%s> refused: %s", address, exc)
            return exc.smtp_reply
        envelope.rcpt_tos.append(address)
        return smtp.S250_RCPT_OK

    async def handle_DATA(self, server, session, envelope):
        gateway = self.gateway
        mail = dispatch.Envelope(envelope.mail_from or "", tuple(envelope.rcpt_tos),
                                 envelope.original_content or b"")
        if not hasattr(gateway, "spool_writer"):
            gateway.spool_writer = SpoolWriter(gateway.spool)
        try:
            if gateway.needs_redmine_to_screen(mail.recipients):
                parsed, results, accepted = await asyncio.to_thread(
                    gateway.screen, mail, all_or_nothing=not self.lmtp)
            else:
                parsed, results, accepted = gateway.screen(mail, all_or_nothing=not self.lmtp)
            ids = (await gateway.spool_writer.add(mail.mail_from, accepted, mail.raw)
                   if accepted else [])
        except MailgateError as exc:
            smtp.log.info("DATA refused: %s", exc)
            count = len(mail.recipients) if self.lmtp else 1
            return "\r\n".join([exc.smtp_reply] * count)
        results.update({a: dispatch.Delivery(a, spool_id=i)
                        for (a, _), i in zip(accepted, ids)})
        for address in mail.recipients:
            log.info("received %s for <%s>: %s", parsed.key, address,
                     results[address].error or f"spooled as {results[address].spool_id}")
        self.on_spooled()
        if self.lmtp:
            return "\r\n".join(smtp._reply(results[a]) for a in mail.recipients)
        return smtp.S250_ACCEPTED

    smtp.GatewayHandler.handle_RCPT = handle_RCPT
    smtp.GatewayHandler.handle_DATA = handle_DATA
    return "SMTP: RCPT inline when no Redmine is needed, DATA screened on the loop, batched commits"


# -- D: big base64 leaves decoded straight from the raw bytes ----------------------------

#: Leaves smaller than this go through the stdlib parser as they are.
BIG_LEAF = 256 * 1024
_STUB = b"\x00mailgate-big-leaf:%d\x00"


def _header_end(raw: bytes, start: int, end: int) -> int:
    """Where the body of the part at raw[start:end] begins (after the blank line)."""
    if raw.startswith((b"\r\n", b"\n"), start):      # no header fields at all
        return start + (2 if raw.startswith(b"\r\n", start) else 1)
    found = [(i, len(sep)) for sep in (b"\r\n\r\n", b"\n\n")
             if (i := raw.find(sep, start, end)) >= 0]
    if not found:
        return end
    i, n = min(found)
    return i + n


def _big_leaves(raw: bytes, start: int, end: int, out: list, depth: int = 0,
                big_leaf: int | None = None) -> None:
    """Collect (body start, body end) of the big base64 non-text leaves under raw[start:end]."""
    body = _header_end(raw, start, end)
    part = BytesHeaderParser(policy=compat32).parsebytes(raw[start:body])
    if part.get_content_maintype() == "multipart" and depth < 20:
        boundary = part.get_boundary()
        if not boundary:
            return
        delimiter = b"\n--" + boundary.encode("ascii", "replace")
        cuts = []
        at = raw.find(delimiter, body - 1, end)
        while at >= 0:
            cuts.append(at)
            at = raw.find(delimiter, at + len(delimiter), end)
        for before, after in zip(cuts, cuts[1:]):
            child = raw.find(b"\n", before + len(delimiter), end) + 1
            stop = after if raw[after - 1:after] != b"\r" else after - 1
            if 0 < child <= stop:
                _big_leaves(raw, child, stop, out, depth + 1, big_leaf)
        return
    encoding = str(part.get("content-transfer-encoding", "")).strip().lower()
    is_text = part.get_content_type() in ("text/plain", "text/html") and not part.get_filename()
    if encoding == "base64" and not is_text and end - body >= (big_leaf or BIG_LEAF):
        out.append((body, end))


def parse_mail_big(raw: bytes, parse_small, big_leaf: int | None = None):
    """parse_mail for a mail with big attachments: peak ~ raw + decoded, not ~8x raw.

    The stdlib parser splits a body into one str per line before joining them
    again (about 8x the mail at its peak).  Big base64 leaves are cut out of a
    copy of the mail (a stub in their place), the small rest is parsed as
    before, and each big leaf is decoded once, from a memoryview of the raw bytes.
    """
    import binascii
    import hashlib
    from dataclasses import replace

    leaves: list = []
    try:
        _big_leaves(raw, 0, len(raw), leaves, big_leaf=big_leaf)
    except Exception:       # anything odd: the ordinary parser decides
        leaves = []
    if not leaves:
        return parse_small(raw)
    pieces, at = [], 0
    import base64

    for n, (start, stop) in enumerate(leaves):
        pieces += [raw[at:start], base64.encodebytes(_STUB % n)]
        at = stop
    pieces.append(raw[at:])
    mail = parse_small(b"".join(pieces))
    view = memoryview(raw)
    attachments = tuple(
        replace(a, data=binascii.a2b_base64(view[leaves[int(a.data[19:-1])][0]:
                                                 leaves[int(a.data[19:-1])][1]]))
        if a.data.startswith(b"\x00mailgate-big-leaf:") else a
        for a in mail.attachments)
    key = mail.key if mail.message_id else "sha256:" + hashlib.sha256(raw).hexdigest()
    changes = {"attachments": attachments, "key": key}
    if "raw" in getattr(type(mail), "__dataclass_fields__", {}):
        changes["raw"] = raw
    return replace(mail, **changes)


def apply_bytes_leaves() -> str:
    if (done := _skip("d-1", "parse_mail: big base64 leaves from the raw bytes")):
        return done
    from mailgate import dispatch, message

    small = message.parse_mail

    def parse_mail(raw: bytes):
        return parse_mail_big(raw, small)

    message.parse_mail = parse_mail
    dispatch.parse_mail = parse_mail
    return "parse_mail: big base64 leaves decoded from the raw bytes"


# -- D: the spool writes and reads the raw mail in place (SQLite incremental blob I/O) ----
#
# SQLite builds the whole record of an INSERT in memory (the blob bound, then the
# record: ~2x a big mail), and UPDATE ... RETURNING buffers the returned rows (~6x).
# zeroblob(n) + a blob handle writes in place, but only when the blob is the LAST
# column of its table (else SQLite materialises the zeros): messages.raw is not, so
# the raw mail moves to a table of its own, bodies(id, raw).

BLOB_CHUNK = 1 << 20
BODIES = "CREATE TABLE IF NOT EXISTS bodies (id INTEGER PRIMARY KEY, raw BLOB NOT NULL)"


def _write_blob(db, rowid: int, raw: bytes) -> None:
    view = memoryview(raw)
    with db.blobopen("bodies", "raw", rowid) as blob:
        for at in range(0, len(view), BLOB_CHUNK):
            blob.write(view[at:at + BLOB_CHUNK])


def _blob_add(self, mail_from, recipients, raw):
    """Spool.add without SQLite's copies of the mail: zeroblob, then written in place."""
    import time

    now = time.time()
    ids = []
    with self._transaction() as cur:
        for rcpt, order_key in recipients:
            cur.execute("INSERT INTO messages (received_at, mail_from, rcpt, raw, order_key)"
                        " VALUES (?, ?, ?, x'', ?) RETURNING id",
                        (now, mail_from, rcpt, order_key))
            ids.append(cur.fetchone()[0])
            cur.execute("INSERT INTO bodies (id, raw) VALUES (?, zeroblob(?))",
                        (ids[-1], len(raw)))
            _write_blob(self._db, ids[-1], raw)
    return ids


def _blob_claim(self, ids=None, now=None):
    """claim() whose UPDATE ... RETURNING leaves the raw mail out; the raw is then read
    once through a read-only blob handle (1x the mail, not 6x)."""
    import time

    from mailgate.spool import COLUMNS, SpooledMail

    now = time.time() if now is None else now
    only = f"AND m.id IN ({','.join('?' * len(ids))})" if ids else ""
    sql = self._claim_sql(only).replace(f"RETURNING {COLUMNS}",
                                        f"RETURNING {COLUMNS.replace(' raw,', ' NULL,')}")
    with self._lock:
        row = None
        try:
            self._db.execute("BEGIN IMMEDIATE")
            row = self._db.execute(sql, [now + self.lease_seconds, now, now,
                                         *(ids or [])]).fetchone()
            if row is not None:
                with self._db.blobopen("bodies", "raw", row[0], readonly=True) as blob:
                    row = (*row[:4], blob.read(), *row[5:])
            self._db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
    return SpooledMail.from_row(row) if row else None


def _claim_blob_messages(self, ids=None, now=None):
    """claim() as bench/patches/d-2-claim-blob-read.diff: RETURNING without the raw mail,
    which is then read through a read-only blob handle on messages.raw."""
    import time

    from mailgate.spool import COLUMNS, SpooledMail

    now = time.time() if now is None else now
    only = f"AND m.id IN ({','.join('?' * len(ids))})" if ids else ""
    sql = self._claim_sql(only).replace(f"RETURNING {COLUMNS}",
                                        f"RETURNING {COLUMNS.replace(' raw,', ' NULL,')}")
    with self._transaction() as cur:
        row = cur.execute(sql, [now + self.lease_seconds, now, now, *(ids or [])]).fetchone()
        if row is not None:
            with self._db.blobopen("messages", "raw", row[0], readonly=True) as blob:
                row = (*row[:4], blob.read(), *row[5:])
    return SpooledMail.from_row(row) if row else None


def apply_claim_blob() -> str:
    if (done := _skip("d-2", "SqliteSpool.claim: blob handle")):
        return done
    from mailgate.spool import SqliteSpool

    SqliteSpool.claim = _claim_blob_messages
    return "SqliteSpool.claim: the raw mail read through a blob handle (no schema change)"


def apply_blob_io() -> str:
    from mailgate.spool import SqliteSpool

    original_init = SqliteSpool.__init__

    def __init__(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self._db.execute(BODIES)

    SqliteSpool.__init__ = __init__
    SqliteSpool.add = _blob_add
    SqliteSpool.claim = _blob_claim
    return "SqliteSpool: the raw mail in bodies(id, raw), written and read through blob handles"


# -- B: fewer Redmine requests per note --------------------------------------------------

def apply_fewer_requests(kept_seconds: float = 300.0) -> str:
    """Per reply the worker asks Redmine three times: GET the issue (journals and
    attachments) to decide, PUT the note, GET the issue again to read the write back.

    * The read-back is what catches a note Redmine dropped: without the "Add notes"
      permission, ``notes`` is an unsafe attribute, ignored, and the answer is still
      204.  So it stays for a status change (dropped silently too), for uploads, and
      for the first plain note of a (writer, ticket); once a read-back has found that
      writer's note on that ticket, further plain notes by the same writer there
      skip it for ``kept_seconds`` (a permission revoked within that time is missed;
      journal_id is then None: it is only recorded).
    * The GET before deciding asks for journals only: attachments are not looked at.
    """
    if (done := _skip("b-1", "Redmine: fewer read-backs")):
        return done
    import time

    from mailgate import facts, redmine

    full_add_note = redmine.RedmineClient.add_note

    def get_issue(self, issue_id, include="journals,attachments"):
        path = f"/issues/{int(issue_id)}.json"
        data = self._get(path, params={"include": include},
                         missing=redmine._no_ticket(issue_id))
        return self._issue(data["issue"])

    def add_note(self, issue_id, notes, *, status_id=None, uploads=(), as_user=None):
        kept = self.__dict__.setdefault("_notes_kept", {})
        key = (as_user, int(issue_id))
        if status_id is None and not uploads and kept.get(key, 0.0) > time.monotonic():
            self._actor(as_user)
            self._write("PUT", f"/issues/{int(issue_id)}.json", {"issue": {"notes": notes}},
                        as_user=as_user, missing=redmine._no_ticket(issue_id))
            return redmine.NoteResult(None, None, True, None)
        result = full_add_note(self, issue_id, notes, status_id=status_id, uploads=uploads,
                               as_user=as_user)
        if result.journal_id is not None:
            kept[key] = time.monotonic() + kept_seconds
        return result

    class _JournalsOnly:
        def __init__(self, client):
            self._client = client

        def __getattr__(self, name):
            return getattr(self._client, name)

        def get_issue(self, issue_id):
            return self._client.get_issue(issue_id, include="journals")

    full_ticket = facts.RedmineFacts.ticket

    def ticket(self, ticket_id):
        client, self.client = self.client, _JournalsOnly(self.client)
        try:
            return full_ticket(self, ticket_id)
        finally:
            self.client = client

    redmine.RedmineClient.get_issue = get_issue
    redmine.RedmineClient.add_note = add_note
    facts.RedmineFacts.ticket = ticket
    return ("Redmine: read-back skipped for plain notes by a writer already seen keeping"
            " notes on that ticket; the GET before asks for journals only")


def apply_ticket_cache(ttl: float = 10.0) -> str:
    """The worker trusts what it last read of a ticket for ``ttl`` seconds.

    facts.ticket(N) answers from memory when Redmine was read for N less than
    ``ttl`` ago; after each applied reply the remembered view gets what was written
    (the note's marker, the new state).  A change made in Redmine by someone else
    within ``ttl`` of our read is not seen: the window that exists today between the
    GET and the PUT, made up to ``ttl`` long.  One worker per spool only (several
    worker processes or hosts: ttl 0, today's behaviour).  Mirrors
    bench/patches/b-2-ticket-facts-ttl.diff.
    """
    if (done := _skip("b-2", "worker: ticket facts ttl")):
        return done
    import time
    from dataclasses import replace as _replace

    from mailgate import dispatch, facts
    from mailgate.idempotency import marker

    full_ticket = facts.RedmineFacts.ticket

    def ticket(self, ticket_id):
        cache = self.__dict__.setdefault("_tickets", {})
        hit = cache.get(ticket_id)
        if hit is not None and time.monotonic() - hit[1] < ttl:
            return hit[0]
        view = full_ticket(self, ticket_id)
        cache[ticket_id] = (view, time.monotonic())
        return view

    full_apply = dispatch.Gateway._apply

    def _apply(self, spooled):
        outcome, mail, route, plan = full_apply(self, spooled)
        cache = self.facts.__dict__.setdefault("_tickets", {})
        hit = cache.get(route.ticket) if route.kind == "reply" else None
        if hit is not None and outcome.kind in ("applied", "status-refused"):
            view, read_at = hit
            changes = {"markers": view.markers | {marker(mail.key, dispatch._route_key(route))}}
            if outcome.kind == "applied" and outcome.to_state:
                changes["state"] = outcome.to_state
                changes["has_answer"] = view.has_answer or outcome.to_state == "answered"
            cache[route.ticket] = (_replace(view, **changes), read_at)
        elif hit is not None:
            cache.pop(route.ticket, None)
        return outcome, mail, route, plan

    facts.RedmineFacts.ticket = ticket
    dispatch.Gateway._apply = _apply
    return f"worker: ticket facts trusted for {ttl:g} s after a read, updated with our writes"
