"""Who sent it: is a mail's From: address proven, or only written there?

A sender's role (ticket owner, admin) comes from the From: address, which
anyone can write.  ``verify_sender`` says whether that address is *verified*:

1. an Authentication-Results field from our own MTA (its authserv-id is listed
   in ``trust.trusted_authserv_ids``) says ``dkim=pass`` for a domain aligned
   with the From: domain, or ``dmarc=pass`` for the From: domain itself; or
2. a DKIM signature on the mail verifies here and its ``d=`` is aligned: the
   From: domain or a parent of it that is not a public suffix (relaxed
   alignment, as DMARC and Launchpad use it).

Anything else is "not verified".  A key lookup that failed or timed out is
"not verified, temporary": the same mail may verify later, so the caller may
defer it.  Like the stdlib parser, this never raises on bad input; the answer
is always a ``Verdict`` whose ``how`` says why, for logs and ``explain``.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from email import policy
from email.parser import BytesHeaderParser
from email.utils import getaddresses
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

from mailgate.settings.read import read_section
from mailgate.settings.schema import TrustSettings

if TYPE_CHECKING:  # only for annotations: the modules themselves are imported late
    import dkim
    import dns.resolver

#: Public suffixes of more than one label that a d= may not be.  A tiny list
#: on purpose (the full Public Suffix List changes weekly); one-label suffixes
#: ("org", "com") are refused by the two-label rule instead.
PUBLIC_SUFFIXES = frozenset({
    "co.uk", "org.uk", "ac.uk", "gov.uk", "me.uk", "com.au", "net.au", "org.au",
    "co.nz", "co.jp", "ne.jp", "or.jp", "com.br", "com.cn", "co.in", "co.za",
    "com.mx", "com.tr", "co.kr", "com.ar",
})
#: Aligned signatures checked per mail: each costs a DNS lookup and a body hash
#: (dkimpy canonicalizes 5 MB in about 0.4 s).
MAX_SIGNATURES = 3
#: RSA keys shorter than this prove nothing (RFC 8301).
MIN_KEY_BITS = 1024
#: A Verdict's ``how`` is cut here: a mail may carry any number of signatures.
MAX_HOW = 600

_HOSTNAME = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)+")

DnsFunc = Callable[..., "bytes | None"]


@dataclass(frozen=True)
class Verdict:
    verified: bool
    #: Why, for people: "dkim d=example.org", "no signature", ...
    how: str
    #: Not verified only because a key lookup failed: trying later may verify it.
    temporary: bool = False
    #: Our MTA said the check failed: nothing after this may verify the mail.
    final: bool = False


def load_trust_settings(section: Mapping[str, Any] | None) -> TrustSettings:
    """The ``trust:`` section of the config file (absent: the defaults); its keys are
    declared in mailgate.settings.schema."""
    return read_section(section, TrustSettings, "trust")


def verify_sender(raw: bytes, from_address: str,
                  headers: Mapping[str, Any] | None = None,
                  settings: TrustSettings = TrustSettings(),
                  dnsfunc: DnsFunc | None = None, *, via_our_mta: bool = True) -> Verdict:
    """Whether ``from_address`` is proven to have sent ``raw``.

    ``headers``: every value of each field, by lower-case name; None (best)
    reads them from ``raw``.  ``dnsfunc(name: bytes, timeout=...)`` returns a
    TXT record's bytes or None, as dkimpy's does; the default asks DNS.
    ``via_our_mta``: the mail reached us through our own MTA (LMTP, the pipe, or
    SMTP from a trusted relay); otherwise no Authentication-Results is believed,
    since nothing removed the forged ones (RFC 8601 §5).
    """
    fields = headers if headers is not None else _header_fields(raw)
    domain, problem = _author_domain(_values(fields, "from"), from_address)
    if problem:
        return Verdict(False, problem)
    failures = []
    for verdict in _evidence(raw, domain, settings, dnsfunc or resolver_lookup(), via_our_mta):
        if verdict.verified:
            return verdict
        failures.append(verdict)
        if verdict.final:
            break
    if not failures:
        return Verdict(False, "no trusted authentication-results (DKIM checking is off)")
    return Verdict(False, "; ".join(v.how for v in failures)[:MAX_HOW],
                   temporary=any(v.temporary for v in failures))


def return_path_proven(raw: bytes, envelope_sender: str, settings: TrustSettings, *,
                       via_our_mta: bool) -> bool:
    """Whether our MTA's own result says SPF passed for ``envelope_sender`` (so a
    notice sent back to it reaches whoever sent the mail, not a forged victim)."""
    sender = envelope_sender.strip().strip("<>").lower()
    if not via_our_mta or "@" not in sender:
        return False
    top, _ = _results_fields(raw)
    for value in top:
        authserv_id, results = _parse_authentication_results(value)
        if authserv_id not in settings.trusted_authserv_ids:
            continue
        for method, result, props in results:
            checked = props.get("smtp.mailfrom", "").strip().strip("<>").lower()
            # RFC 8601 §2.7.2: smtp.mailfrom is the address, or only its domain.
            if method == "spf" and result == "pass" and checked in (
                    sender, sender.rpartition("@")[2]):
                return True
    return False


def _evidence(raw: bytes, domain: str, settings: TrustSettings, dnsfunc: DnsFunc,
              via_our_mta: bool) -> Iterator[Verdict]:
    # The MTA's word first: it costs no DNS lookup.
    if via_our_mta:
        yield from _mta_results(raw, domain, settings.trusted_authserv_ids)
    else:
        yield Verdict(False, "authentication-results ignored: the mail did not come"
                             " through our MTA")
    if settings.verify_dkim:
        yield from _signatures(raw, domain, settings.dns_timeout, dnsfunc)


def aligns(signing_domain: str, from_domain: str) -> bool:
    """Relaxed alignment: the From: domain is the signing domain or below it."""
    signer, author = _ascii_domain(signing_domain), _ascii_domain(from_domain)
    # d=org or d=co.uk would vouch for every domain under it.
    if not signer or not author or signer in PUBLIC_SUFFIXES:
        return False
    return author == signer or author.endswith("." + signer)


# -- From: ------------------------------------------------------------------------------


def _author_domain(from_values: list[str], from_address: str) -> tuple[str, str | None]:
    """The From: domain, or why this mail's author cannot be verified at all."""
    # DKIM signs the From: field in the mail, so the caller's address must be
    # that one field's one address; two From: fields are a known way to show
    # one and have the other signed (DMARC refuses them too).
    if len(from_values) != 1:
        return "", f"{len(from_values)} From: fields"
    value = re.sub(r"\r?\n(?=[ \t])", "", from_values[0])
    addresses = [address for _, address in getaddresses([value]) if address]
    if len(addresses) != 1:
        return "", "From: does not name exactly one address"
    if not _unambiguous(value, addresses[0]):
        return "", f"From: is ambiguous: {' '.join(value.split())[:100]!r}"
    if addresses[0].lower() != from_address.lower():
        return "", f"From: <{addresses[0]}> is not <{from_address}>"
    domain = _ascii_domain(addresses[0].rpartition("@")[2])
    if not domain:
        return "", f"From: <{addresses[0]}> has no usable domain"
    return domain, None


def _unambiguous(value: str, address: str) -> bool:
    """Whether the strict RFC 5322 parser reads the same one address, without defects.

    A signer that reads "owner@example.org <x@example.org>" as x@ would sign it
    for its user x, while parseaddr (ParsedMail) reads owner@: at a shared
    provider, that is one user posing as another with a valid signature.
    """
    try:
        header = policy.default.header_factory("from", value)
        strict = [a.addr_spec.lower() for a in header.addresses]
    except Exception:  # the strict parser has raised on garbage before
        return False
    return not header.defects and strict == [address.lower()]


def _ascii_domain(domain: str) -> str:
    """A lower-case A-label domain of two labels or more, or "" when it is not one."""
    domain = domain.strip().rstrip(".").lower()
    try:
        domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        return ""
    return domain if _HOSTNAME.fullmatch(domain) else ""


# -- Authentication-Results (RFC 8601) ------------------------------------------------------


def _mta_results(raw: bytes, domain: str, trusted: frozenset[str]) -> Iterator[Verdict]:
    """What our MTA said: only the fields above the topmost Received: (the ones it
    prepended when it took the mail in) with a trusted authserv-id count; anything
    below came with the mail.  Its fail is final: no other field's pass overrides it."""
    top, below = _results_fields(raw)
    if below:
        yield Verdict(False, f"{below} authentication-results below Received: ignored"
                             " (they came with the mail)")
    said: list[tuple[str, str, str, bool]] = []     # (authserv-id, what, result, aligned)
    for value in top:
        authserv_id, results = _parse_authentication_results(value)
        if authserv_id not in trusted:
            # Anyone can write this field; only our MTA's own is believed.
            yield Verdict(False, f"authentication-results {authserv_id or '?'} ignored "
                                 "(not a trusted authserv-id)")
            continue
        said += [found for r in results if (found := _judged(authserv_id, r, domain))]
    failed = [s for s in said if s[3] and s[2] not in ("pass", "none")]
    if failed:
        authserv_id, what, _, _ = failed[0]
        yield Verdict(False, f"authentication-results {authserv_id}: {what}", final=True)
        return
    for authserv_id, what, result, aligned in said:
        if result == "pass" and aligned:
            yield Verdict(True, f"authentication-results {authserv_id}: {what}")
        elif result == "pass":
            yield Verdict(False, f"authentication-results {authserv_id}: {what} "
                                 f"does not align with {domain}")
        else:
            yield Verdict(False, f"authentication-results {authserv_id}: {what}")


def _judged(authserv_id: str, found: tuple[str, str, dict],
            domain: str) -> tuple[str, str, str, bool] | None:
    """(authserv-id, what it said, the result, whether it is about the From: domain)."""
    method, result, props = found
    if method == "dkim":
        signer = props.get("header.d") or props.get("header.i", "").rpartition("@")[2]
        return authserv_id, f"dkim={result} header.d={signer}", result, aligns(signer, domain)
    if method == "dmarc":
        author = props.get("header.from", "")
        return (authserv_id, f"dmarc={result} header.from={author}", result,
                _ascii_domain(author) == domain)
    return None


def _results_fields(raw: bytes) -> tuple[list[str], int]:
    """(the Authentication-Results values above the topmost Received:, how many below)."""
    top: list[str] = []
    below = 0
    received = False
    for name, value in _header_block(raw).items():
        name = name.lower()
        if name == "received":
            received = True
        elif name == "authentication-results":
            if received:
                below += 1
            else:
                top.append(str(value))
    return top, below


_QUOTED = r'"(?:[^"\\]|\\.)*"'
_COMMENT_OR_QUOTED = re.compile(rf'{_QUOTED}|\([^()"]*\)')
_SEGMENT = re.compile(rf'(?:{_QUOTED}|[^";])+')
_PAIR = re.compile(rf'([\w.\-/]+)\s*=\s*({_QUOTED}|[^\s"]+)')


def _parse_authentication_results(value: str) -> tuple[str, list[tuple[str, str, dict]]]:
    """(authserv-id, [(method, result, {ptype.property: value})]) of one field.

    Not the ``authres`` library: its 1.2.0 raises SyntaxError on a quoted
    authserv-id and on a value folded before it, both valid RFC 8601 (the
    id is a ``value``: token or quoted-string), and a field we cannot read
    must still be read the way a forger meant it, to be judged by its id.
    """
    text = " ".join(value.split())
    # Comments may nest: drop the innermost ones until none is left (bounded).
    for _ in range(8):
        shorter = _COMMENT_OR_QUOTED.sub(lambda m: m[0] if m[0][0] == '"' else " ", text)
        if shorter == text:
            break
        text = shorter
    segments = _SEGMENT.findall(text)
    if not segments or not segments[0].split():
        return "", []
    authserv_id = _unquote(segments[0].split()[0]).lower()
    results = []
    for segment in segments[1:]:
        pairs = _PAIR.findall(segment)
        if pairs:
            (method, result), props = pairs[0], pairs[1:]
            results.append((method.split("/")[0].lower(), _unquote(result).lower(),
                            {k.lower(): _unquote(v) for k, v in props}))
    return authserv_id, results


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return re.sub(r"\\(.)", r"\1", text[1:-1])
    return text


# -- DKIM -----------------------------------------------------------------------------------


class _LookupFailed(Exception):
    """A key lookup that did not answer; not a DKIMException, so dkimpy lets it through."""


def _signatures(raw: bytes, domain: str, timeout: float, dnsfunc: DnsFunc) -> Iterator[Verdict]:
    # Imported here: dkimpy and dnspython cost ~100 ms to import, which the
    # pipe transport's spool-and-exit path must not pay.
    import dkim

    errors = _Errors()
    try:
        signer = dkim.DKIM(raw, logger=errors, minkey=MIN_KEY_BITS, timeout=timeout)
    except Exception as exc:  # dkimpy raises assorted errors on garbage
        yield Verdict(False, f"message not readable for DKIM: {_short(exc)}")
        return
    values = [value for name, value in signer.headers if name.lower() == b"dkim-signature"]
    if not values:
        yield Verdict(False, "no signature")
        return
    lookup = _Deadline(dnsfunc, timeout)
    checked = 0
    for index, value in enumerate(values):
        tags = _tags(value)
        # The signer's text ends up in logs and SMTP replies: one short line.
        signing = " ".join(tags.get(b"d", b"?").decode("ascii", "replace").split())[:100]
        # Unaligned signatures cannot count: no need to look their keys up.
        if not aligns(signing, domain):
            yield Verdict(False, f"signature by d={signing} does not align with {domain}")
        elif b"from" not in [h.strip().lower() for h in tags.get(b"h", b"").split(b":")]:
            yield Verdict(False, f"signature by d={signing} does not sign From:")
        elif checked == MAX_SIGNATURES:
            yield Verdict(False, f"more than {MAX_SIGNATURES} aligned signatures: rest unchecked")
            return
        else:
            checked += 1
            yield _verify_one(signer, index, signing, lookup, errors)


def _verify_one(signer: dkim.DKIM, index: int, signing: str, lookup: _Deadline,
                errors: _Errors) -> Verdict:
    errors.clear()
    try:
        passed = signer.verify(idx=index, dnsfunc=lookup)
    except _LookupFailed as exc:
        return Verdict(False, f"key lookup failed: {exc}", temporary=True)
    except Exception as exc:  # DKIMException, and assorted errors on malformed tags
        return Verdict(False, f"bad signature by d={signing}: {_short(exc)}")
    if not passed:
        return Verdict(False, f"bad signature by d={signing}: "
                              f"{errors.last or 'signature does not verify'}")
    # l= lets anyone append text below the signed part (RFC 6376 §8.2).
    if not _covers_body(signer):
        return Verdict(False, f"signature by d={signing} covers only part of the body (l=)")
    return Verdict(True, f"dkim d={signing}")


def _tags(value: bytes) -> dict[bytes, bytes]:
    from dkim.util import parse_tag_value

    try:
        return parse_tag_value(value)
    except Exception:  # InvalidTagValueList and friends: verify() says it properly
        return {}


def _covers_body(signer: dkim.DKIM) -> bool:
    from dkim.canonicalization import CanonicalizationPolicy

    fields = signer.signature_fields
    if b"l" not in fields:
        return True
    canon = CanonicalizationPolicy.from_c_value(fields.get(b"c", b"simple/simple"))
    return int(fields[b"l"]) >= len(canon.canonicalize_body(signer.body))


class _Errors:
    """A logger for dkimpy that keeps its last error: why a signature failed."""

    last: str | None = None

    def clear(self) -> None:
        self.last = None

    def error(self, message: str, *args) -> None:
        self.last = _short(message)  # dkimpy formats its messages itself

    def debug(self, *args) -> None:
        pass

    info = warning = debug


def _short(error: object) -> str:
    # dkimpy quotes both body hashes and whole keys; the first words are the reason.
    text = " ".join(str(error).split()) or type(error).__name__
    return text.split(" (got ")[0][:200]


class _Deadline:
    """A dnsfunc for dkimpy: one time budget for all of a mail's key lookups."""

    def __init__(self, dnsfunc: DnsFunc, seconds: float):
        self.dnsfunc = dnsfunc
        self.ends = time.monotonic() + seconds

    def __call__(self, name: bytes, timeout: float | None = None) -> bytes | None:
        where = name.decode("ascii", "replace").rstrip(".")
        left = self.ends - time.monotonic()
        if left <= 0:
            raise _LookupFailed(f"timeout ({where})")
        # A thread, so that even a resolver that ignores its timeout cannot
        # hold the worker: we stop waiting, it finishes on its own.
        box: dict[str, Any] = {}
        thread = threading.Thread(target=self._run, args=(name, left, box),
                                  name="mailgate-dkim-dns", daemon=True)
        thread.start()
        thread.join(left)
        if thread.is_alive():
            raise _LookupFailed(f"timeout ({where})")
        if "error" in box:
            raise _LookupFailed(f"{_short(box['error'])} ({where})")
        return box.get("txt")

    def _run(self, name: bytes, seconds: float, box: dict) -> None:
        try:
            box["txt"] = self.dnsfunc(name, timeout=seconds)
        except Exception as exc:  # any failure to answer is temporary
            box["error"] = exc


def resolver_lookup(resolver: dns.resolver.Resolver | None = None) -> DnsFunc:
    """A dnsfunc over dnspython: no such key is None, a failure to answer raises."""

    import dns.name
    import dns.resolver

    def lookup(name: bytes, timeout: float = 5.0) -> bytes | None:
        try:
            text = name.decode("ascii")
        except UnicodeDecodeError:
            return None  # no such name can exist
        asker = resolver or dns.resolver.get_default_resolver()
        try:
            answer = asker.resolve(text, "TXT", lifetime=timeout, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.name.EmptyLabel,
                dns.name.LabelTooLong, dns.name.NameTooLong):
            return None  # a permanent "no key"; timeouts and SERVFAIL raise
        return b"".join(answer[0].strings)

    return lookup


# -- headers --------------------------------------------------------------------------------


def _header_block(raw: bytes):
    # compat32 never raises on bad headers, and keeps every field in its order.
    # The header block only: given the whole mail, the parser decodes all of it to
    # text and splits it into lines (1.4 ms a mail on E's corpus, ~8x a big mail).
    end = min((i + len(sep) for sep in (b"\r\n\r\n", b"\n\n") if (i := raw.find(sep)) >= 0),
              default=len(raw))
    return BytesHeaderParser(policy=policy.compat32).parsebytes(raw[:end])


def _header_fields(raw: bytes) -> dict[str, list[str]]:
    # ParsedMail.headers keeps only the first of repeated fields; we need every From:.
    fields: dict[str, list[str]] = {}
    for name, value in _header_block(raw).items():
        fields.setdefault(name.lower(), []).append(str(value))
    return fields


def _values(fields: Mapping[str, Any], name: str) -> list[str]:
    value = fields.get(name)
    if value is None:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]
