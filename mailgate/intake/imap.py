"""The IMAP source: mail taken out of a mailbox, exactly once (``mailgate fetch``, and
``serve`` through mailgate.intake.imap_watch).

Each mail goes through the same intake as SMTP and the pipe (``Intake.take``):
the recipient is the first address we serve in the header fields, in the
mailbox's order (``recipient_headers``), or its site's address for a mailbox
bound to a site.  Then, per UID batch:

* spooled: the spool commits the mail together with its receipt (mailbox,
  UIDVALIDITY, UID, key: mailgate.store.receipts); only then is the mail
  moved to the processed folder (or flagged \\Seen);
* refused (a permanent error: an address we do not serve, a sender the site
  refuses, a mail too big or empty): a receipt says so, the reason is
  logged, and the mail is moved to the rejected folder;
* a temporary failure (Redmine or the store down): nothing is recorded and the
  mail stays where it is, for the next pass.

A mail that already has a receipt (a crash came between the commit and the
move, or another process took it) is only filed.  After a UIDVALIDITY change
every UID is new: a mail this mailbox gave us before is known by its key, and
filed, never spooled again; and the spool's Message-ID idempotency holds as
for all mail.

Big mail is fetched in pieces into a temporary file, and read from it once:
the fetch holds about 1x the mail (IMAPClient's whole-mail FETCH: 3-4x).
"""

from __future__ import annotations

import hashlib
import logging
import ssl
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from imapclient import DELETED, SEEN, IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError

from mailgate.errors import (BadMessage, ConfigError, MailboxLoginFailed, MailboxUnavailable,
                             MailgateError, MailTakenElsewhere, MessageTooBig, PermanentError)
from mailgate.intake.imap_settings import ImapSettings, MailboxSettings
from mailgate.intake.receive import HeaderHints, Intake
from mailgate.mail.message import parse_mail
from mailgate.store.receipts import Receipt, Receipts

log = logging.getLogger("mailgate.intake.imap")

#: Mails up to this size are fetched whole, several in one FETCH; bigger ones in
#: pieces of PIECE bytes.
SMALL = 256 * 1024
PIECE = 1024 * 1024
#: At most this many bytes of small mails in one FETCH.
FETCH_BUDGET = 4 * 1024 * 1024
#: Seconds an OAuth2 token command may take.
TOKEN_TIMEOUT = 30.0

#: What becomes of a mail, and which folder it goes to ("processed" may mean \Seen).
PROCESSED, REJECTED = "processed", "rejected"


# -- connecting -----------------------------------------------------------------------

def connect(box: MailboxSettings) -> IMAPClient:
    """A logged-in connection to ``box``.  Raises MailboxUnavailable (cannot reach it:
    try again), MailboxLoginFailed (the server refused the login) or ConfigError."""
    context = _tls_context(box)
    try:
        client = IMAPClient(box.host, box.port, ssl=box.tls == "implicit",
                            ssl_context=context, timeout=box.timeout)
    except ssl.SSLCertVerificationError as exc:
        raise ConfigError(f"imap mailbox {box.name}: {box.host}'s certificate is not"
                          f" trusted ({exc.verify_message}); set ca_file") from None
    except (OSError, IMAPClientError) as exc:
        raise MailboxUnavailable(f"imap mailbox {box.name}: cannot connect to"
                                 f" {box.host}:{box.port}: {_said(exc)}") from None
    try:
        if box.tls == "starttls":
            _starttls(client, box, context)
        _login(client, box)
    except BaseException:
        _close(client)
        raise
    return client


def _tls_context(box: MailboxSettings) -> ssl.SSLContext | None:
    if box.tls == "none":
        return None
    context = ssl.create_default_context(cafile=box.ca_file)
    if not box.verify:
        log.warning("imap mailbox %s: certificate verification is off", box.name)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _starttls(client: IMAPClient, box: MailboxSettings, context: ssl.SSLContext) -> None:
    if not client.has_capability("STARTTLS"):
        raise ConfigError(f"imap mailbox {box.name}: {box.host} offers no STARTTLS"
                          " (tls: implicit?)")
    try:
        client.starttls(context)
    except ssl.SSLCertVerificationError as exc:
        raise ConfigError(f"imap mailbox {box.name}: {box.host}'s certificate is not"
                          f" trusted ({exc.verify_message}); set ca_file") from None
    except (OSError, IMAPClientError) as exc:
        raise MailboxUnavailable(f"imap mailbox {box.name}: STARTTLS failed: "
                                 f"{_said(exc)}") from None


def _login(client: IMAPClient, box: MailboxSettings) -> None:
    try:
        if box.oauth2_token_command:
            client.oauth2_login(box.user, oauth2_token(box))
        else:
            client.login(box.user, box.password())
    except LoginError as exc:
        raise MailboxLoginFailed(f"imap mailbox {box.name}: {box.host} refused the login"
                                 f" of {box.user}: {_said(exc)}") from None
    except (OSError, IMAPClientError) as exc:
        raise MailboxUnavailable(f"imap mailbox {box.name}: login failed:"
                                 f" {_said(exc)}") from None


def oauth2_token(box: MailboxSettings) -> str:
    """The access token that ``oauth2_token_command`` prints (its first line)."""
    try:
        done = subprocess.run(box.oauth2_token_command, capture_output=True, text=True,
                              timeout=TOKEN_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise MailboxLoginFailed(f"imap mailbox {box.name}: the OAuth2 token command"
                                 f" failed: {exc}") from None
    token = done.stdout.strip().splitlines()[0] if done.stdout.strip() else ""
    if done.returncode != 0 or not token:
        raise MailboxLoginFailed(f"imap mailbox {box.name}: the OAuth2 token command exited"
                                 f" {done.returncode} with no token:"
                                 f" {done.stderr.strip()[:200]}")
    return token


def _close(client: IMAPClient) -> None:
    try:
        client.logout()
    except Exception:       # noqa: BLE001 - a connection already lost needs no goodbye
        try:
            client.shutdown()
        except Exception:   # noqa: BLE001
            pass


def _said(exc: BaseException) -> str:
    """An IMAP error in one line (imaplib's come as bytes reprs)."""
    text = str(exc)
    if text.startswith(("b'", 'b"')):
        text = text[2:-1]
    return " ".join(text.split()) or type(exc).__name__


# -- one pass over a mailbox ----------------------------------------------------------

@dataclass
class PassSummary:
    """What one pass did: spool ids, and counts by what became of each mail."""

    spooled: list[int] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)

    def __str__(self) -> str:
        return ", ".join(f"{n} {kind}" for kind, n in sorted(self.counts.items())) or "no mail"


class MailboxSource:
    """One mailbox, read through the intake.  ``on_result(kind)`` is told what became
    of each mail ("spooled", "rejected", "deferred", "filed"), for /metrics."""

    def __init__(self, box: MailboxSettings, intake: Intake, receipts: Receipts, *,
                 site_address: str | None = None, on_result=lambda kind: None):
        self.box = box
        self.intake = intake
        self.receipts = receipts
        self.hints = HeaderHints(box.recipient_headers, site_address)
        self.on_result = on_result
        self._folders_checked = False

    def run_pass(self, client: IMAPClient) -> PassSummary:
        """Take every waiting mail of the folder, one UID batch at a time."""
        summary = PassSummary()
        self._make_folders(client)
        uidvalidity = int(client.select_folder(self.box.folder)[b"UIDVALIDITY"])
        wanted = ["UNSEEN", "UNDELETED"] if self.box.after == "seen" else ["UNDELETED"]
        uids = sorted(client.search(wanted))
        for start in range(0, len(uids), self.box.batch_size):
            self._batch(client, uidvalidity, uids[start:start + self.box.batch_size], summary)
        return summary

    def _make_folders(self, client: IMAPClient) -> None:
        if self._folders_checked:
            return
        wanted = [self.box.rejected_folder]
        if self.box.after == "move":
            wanted.append(self.box.processed_folder)
        for folder in wanted:
            if not client.folder_exists(folder):
                log.info("imap %s: creating the folder %s", self.box.name, folder)
                client.create_folder(folder)
        self._folders_checked = True

    def _batch(self, client: IMAPClient, uidvalidity: int, uids: list[int],
               summary: PassSummary) -> None:
        filed: dict[str, list[int]] = {PROCESSED: [], REJECTED: []}
        sizes = {uid: data[b"RFC822.SIZE"]
                 for uid, data in client.fetch(uids, ["RFC822.SIZE"]).items()}
        waiting = []
        for uid in (u for u in uids if u in sizes):
            known = self.receipts.by_uid(self.box.source, uidvalidity, uid)
            if known is not None:
                # Taken before (a crash between the commit and the move, or
                # another process): only filed, never spooled again.
                self._count(summary, "filed")
                filed[REJECTED if known == "rejected" else PROCESSED].append(uid)
            elif sizes[uid] > self.intake.config.max_message_size:
                self._refuse(client, uidvalidity, uid, sizes[uid], summary)
                filed[REJECTED].append(uid)
            else:
                waiting.append(uid)
        for uid, raw in self._bodies(client, waiting, sizes):
            place = self._take(uidvalidity, uid, raw, summary)
            if place is not None:
                filed[place].append(uid)
        self._file(client, filed)

    def _take(self, uidvalidity: int, uid: int, raw: bytes, summary: PassSummary
              ) -> str | None:
        """Spool one mail through the intake; where it goes now (None: stays)."""
        receipt = Receipt(self.box.source, uidvalidity, uid, _key(raw))
        earlier = self.receipts.by_key(self.box.source, receipt.mail_key)
        if earlier is not None:
            # A mail this mailbox gave us under another UID (a UIDVALIDITY change).
            log.info("imap %s: UID %d is %s, taken before under another UID: filed",
                     self.box.name, uid, receipt.mail_key)
            self.receipts.taken_elsewhere(receipt)
            self._count(summary, "filed")
            return REJECTED if earlier == "rejected" else PROCESSED
        try:
            delivery = self.intake.take(raw, via=self.box.via, hints=self.hints,
                                        receipt=receipt)
        except MailTakenElsewhere:
            self._count(summary, "filed")
            return PROCESSED
        except PermanentError as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            log.warning("imap %s: UID %d (%s) refused, to %s: %s", self.box.name, uid,
                        receipt.mail_key, self.box.rejected_folder, reason)
            self.receipts.refused(receipt, reason)
            self._count(summary, "rejected")
            return REJECTED
        except MailgateError as exc:
            log.warning("imap %s: UID %d (%s) left for the next pass: %s", self.box.name,
                        uid, receipt.mail_key, exc)
            self._count(summary, "deferred")
            return None
        summary.spooled.append(delivery.spool_id)
        self._count(summary, "spooled")
        return PROCESSED

    def _refuse(self, client: IMAPClient, uidvalidity: int, uid: int, size: int,
                summary: PassSummary) -> None:
        """Too big to take: refused on its size, only its header fields fetched."""
        header = client.fetch([uid], ["BODY.PEEK[HEADER]"]).get(uid, {}).get(b"BODY[HEADER]")
        error = MessageTooBig(f"message of {size} bytes exceeds"
                              f" {self.intake.config.max_message_size} bytes")
        receipt = Receipt(self.box.source, uidvalidity, uid,
                          _key(header or b"", fallback=f"uid:{uidvalidity}:{uid}"))
        log.warning("imap %s: UID %d (%s) refused, to %s: %s", self.box.name, uid,
                    receipt.mail_key, self.box.rejected_folder, error)
        self.receipts.refused(receipt, str(error))
        self._count(summary, "rejected")

    def _bodies(self, client: IMAPClient, uids: list[int], sizes: dict[int, int]
                ) -> Iterator[tuple[int, bytes]]:
        """(uid, raw) in UID order: small mails several to a FETCH, big ones in pieces."""
        group: list[int] = []
        for uid in uids:
            if sizes[uid] > SMALL:
                yield from self._fetch_whole(client, group)
                group = []
                raw = _fetch_in_pieces(client, uid, sizes[uid])
                if raw is not None:
                    yield uid, raw
                continue
            if group and sum(sizes[u] for u in group) + sizes[uid] > FETCH_BUDGET:
                yield from self._fetch_whole(client, group)
                group = []
            group.append(uid)
        yield from self._fetch_whole(client, group)

    @staticmethod
    def _fetch_whole(client: IMAPClient, uids: list[int]) -> Iterable[tuple[int, bytes]]:
        if not uids:
            return []
        found = client.fetch(uids, ["BODY.PEEK[]"])
        return [(uid, found[uid][b"BODY[]"]) for uid in uids
                if uid in found and found[uid].get(b"BODY[]") is not None]

    def _file(self, client: IMAPClient, filed: dict[str, list[int]]) -> None:
        """Out of the folder, now that the spool (or a receipt) has each mail."""
        if filed[PROCESSED]:
            if self.box.after == "move":
                _move(client, filed[PROCESSED], self.box.processed_folder)
            else:
                client.add_flags(filed[PROCESSED], [SEEN])
        if filed[REJECTED]:
            _move(client, filed[REJECTED], self.box.rejected_folder)

    def _count(self, summary: PassSummary, kind: str) -> None:
        summary.counts[kind] += 1
        self.on_result(kind)


def _fetch_in_pieces(client: IMAPClient, uid: int, size: int) -> bytes | None:
    """The mail, fetched PIECE bytes at a time into a temporary file and read back
    once: about 1x its size in memory (None if it went away meanwhile)."""
    with tempfile.TemporaryFile() as spill:
        offset = 0
        while True:
            found = client.fetch([uid], [f"BODY.PEEK[]<{offset}.{PIECE}>"]).get(uid)
            if found is None:
                return None
            piece = found.get(f"BODY[]<{offset}>".encode()) or b""
            spill.write(piece)
            offset += len(piece)
            # RFC822.SIZE is a hint: stop at the first short piece, not at the size.
            if len(piece) < PIECE:
                break
            del piece
        spill.seek(0)
        return spill.read()


def _move(client: IMAPClient, uids: list[int], folder: str) -> None:
    """MOVE, or COPY + \\Deleted + EXPUNGE where the server has no MOVE (RFC 6851)."""
    if client.has_capability("MOVE"):
        client.move(uids, folder)
        return
    client.copy(uids, folder)
    client.add_flags(uids, [DELETED])
    if client.has_capability("UIDPLUS"):
        client.uid_expunge(uids)
    else:
        client.expunge()


def _key(raw: bytes, fallback: str | None = None) -> str:
    """The mail's key, as the spool's idempotency record has it (ParsedMail.key)."""
    try:
        return parse_mail(raw, headers_only=True).key
    except BadMessage:
        return fallback or "sha256:" + hashlib.sha256(raw).hexdigest()


# -- ``mailgate fetch``: one pass over every mailbox ----------------------------------

def sources(gateway, settings: ImapSettings, on_result=None) -> list[MailboxSource]:
    config = gateway.config
    made = []
    for box in settings.mailboxes:
        site = (config.sites.get(box.site) or (config.triage if box.site == "triage" else None)
                if box.site else None)
        made.append(MailboxSource(box, gateway.intake, gateway.spool.receipts,
                                  site_address=site.address if site else None,
                                  on_result=(lambda kind, name=box.name: on_result(name, kind))
                                  if on_result else (lambda kind: None)))
    return made


def fetch_once(gateway, settings: ImapSettings, progress=lambda line: None
               ) -> tuple[list[int], list[MailgateError]]:
    """One pass over every mailbox (the cron form): the spool ids of what was taken,
    and the errors of the mailboxes that could not be read (the others still are)."""
    spooled: list[int] = []
    errors: list[MailgateError] = []
    for source in sources(gateway, settings):
        try:
            client = connect(source.box)
        except MailgateError as exc:
            errors.append(exc)
            continue
        try:
            summary = source.run_pass(client)
        except (OSError, IMAPClientError) as exc:
            errors.append(MailboxUnavailable(f"imap mailbox {source.box.name}: connection"
                                             f" lost: {_said(exc)}"))
            continue
        except MailgateError as exc:
            errors.append(exc)
            continue
        finally:
            _close(client)
        spooled += summary.spooled
        progress(f"imap {source.box.name}: {summary}")
    return spooled, errors


def worst(errors: list[MailgateError]) -> MailgateError:
    """The error ``fetch`` exits with: what the operator must fix comes first."""
    return next((e for e in errors if isinstance(e, ConfigError)), errors[0])
