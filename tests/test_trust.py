"""Who sent it: DKIM and the local MTA's Authentication-Results (mailgate.trust).

Mails are signed here with dkimpy and the test-only key in fixtures/dkim/;
keys are served by a dnsfunc from a dict, or by a DNS server on 127.0.0.1.
Nothing asks real DNS.
"""

from __future__ import annotations

import re

import base64
import hashlib
import socket
import threading
import time

import dkim
import dkim.crypto
import dns.message
import dns.rcode
import dns.resolver
import dns.rrset
import pytest
from dkim.canonicalization import CanonicalizationPolicy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailgate.errors import ConfigError
from mailgate.mail.message import parse_mail
from mailgate.trust import (MAX_SIGNATURES, TrustSettings, Verdict, aligns, load_trust_settings,
                            resolver_lookup, return_path_proven, verify_sender)
from tests.helpers import FIXTURES

KEY = (FIXTURES / "dkim" / "test.key").read_bytes()
RECORD = (FIXTURES / "dkim" / "test.txt").read_bytes().strip()
MX = TrustSettings(trusted_authserv_ids=frozenset({"mx.example.org"}))


def mail(sender: str = "owner@example.org", body: str = "Confirmed, it works now.\r\n") -> bytes:
    """A reply to a ticket notification."""
    return (f"From: Olive Owner <{sender}>\r\n"
            "To: ticket42@support.example.org\r\n"
            "Subject: Re: [#42] Printer on fire\r\n"
            "Date: Mon, 03 Jun 2024 10:00:00 +0000\r\n"
            "Message-ID: <reply-1@example.org>\r\n"
            "\r\n" + body).encode()


def signed(message: bytes, domain: str, **options) -> bytes:
    return dkim.sign(message, b"test", domain.encode(), KEY, **options) + message


def keys(*domains: str):
    """A dnsfunc that knows the test key at test._domainkey.<domain> for these domains."""
    records = {f"test._domainkey.{d}": RECORD for d in domains}

    def lookup(name: bytes, timeout: float = 5.0) -> bytes | None:
        return records.get(name.decode().rstrip("."))

    return lookup


def check(raw: bytes, sender: str = "owner@example.org", **kw) -> Verdict:
    kw.setdefault("dnsfunc", keys("example.org"))
    return verify_sender(raw, sender, **kw)


# -- DKIM -----------------------------------------------------------------------------------


def test_aligned_signature_verifies():
    assert check(signed(mail(), "example.org")) == Verdict(True, "dkim d=example.org")


def test_signature_by_a_parent_domain_aligns():
    raw = signed(mail("olive@mail.example.org"), "example.org")
    assert check(raw, "olive@mail.example.org") == Verdict(True, "dkim d=example.org")


def test_a_valid_signature_by_another_domain_proves_nothing():
    raw = signed(mail(), "evil.test")
    verdict = check(raw, dnsfunc=keys("evil.test"))
    assert verdict == Verdict(False, "signature by d=evil.test does not align with example.org")


def test_public_suffix_cannot_vouch_for_its_domains():
    assert not check(signed(mail(), "org"), dnsfunc=keys("org")).verified
    raw = signed(mail("olive@shop.co.uk"), "co.uk")
    assert not check(raw, "olive@shop.co.uk", dnsfunc=keys("co.uk")).verified
    raw = signed(mail("olive@shop.co.uk"), "shop.co.uk")
    assert check(raw, "olive@shop.co.uk", dnsfunc=keys("shop.co.uk")).verified


def test_tampered_body_fails():
    raw = signed(mail(), "example.org").replace(b"it works now", b"close it")
    verdict = check(raw)
    assert not verdict.verified and not verdict.temporary
    assert verdict.how == "bad signature by d=example.org: body hash mismatch"


def test_forged_from_on_a_genuinely_signed_mail_fails():
    raw = signed(mail("alice@example.org"), "example.org").replace(b"alice@", b"owner@")
    verdict = check(raw)
    assert not verdict.verified
    assert verdict.how.startswith("bad signature by d=example.org")


def test_unsigned_mail_is_not_verified():
    assert check(mail()) == Verdict(False, "no signature")


def test_any_aligned_passing_signature_counts():
    # A mailing list's own signature on top of the author's.
    raw = signed(signed(mail(), "example.org"), "lists.test")
    assert check(raw, dnsfunc=keys("example.org", "lists.test")).verified
    # A broken aligned signature does not spoil a good one below it.
    broken = signed(mail(body="other text\r\n"), "example.org").split(b"From:")[0]
    assert check(broken + signed(mail(), "example.org")).verified


def signed_without_from(message: bytes, domain: str) -> bytes:
    """A valid signature whose h= leaves From: out (dkim.sign refuses to make one)."""
    signer, canon = dkim.DKIM(message), CanonicalizationPolicy.from_c_value(b"relaxed/simple")
    signer.hasher = hashlib.sha256
    include = (b"subject", b"to")
    body_hash = base64.b64encode(hashlib.sha256(canon.canonicalize_body(signer.body)).digest())
    fields = [(b"v", b"1"), (b"a", b"rsa-sha256"), (b"c", b"relaxed/simple"),
              (b"d", domain.encode()), (b"s", b"test"), (b"h", b" : ".join(include)),
              (b"bh", body_hash), (b"b", b"0" * 60)]
    header = signer.gen_header(fields, include, canon, b"DKIM-Signature",
                               dkim.crypto.parse_pem_private_key(KEY))
    return b"DKIM-Signature: " + header + message


def test_signature_that_leaves_from_unsigned_does_not_count():
    raw = signed_without_from(mail("alice@example.org"), "example.org")
    raw = raw.replace(b"alice@", b"owner@")
    # dkimpy alone calls it valid: From: can be rewritten at will.
    assert dkim.verify(raw, dnsfunc=keys("example.org"))
    assert check(raw) == Verdict(False, "signature by d=example.org does not sign From:")


def test_key_missing_from_dns_is_a_permanent_failure():
    verdict = check(signed(mail(), "example.org"), dnsfunc=keys())
    assert not verdict.verified and not verdict.temporary
    assert "missing public key" in verdict.how


def test_only_a_few_aligned_signatures_are_checked():
    raw = mail()
    for _ in range(MAX_SIGNATURES + 1):
        raw = signed(raw, "example.org")
    verdict = check(raw, dnsfunc=keys())
    assert verdict.how.count("missing public key") == MAX_SIGNATURES
    assert verdict.how.endswith(f"more than {MAX_SIGNATURES} aligned signatures: rest unchecked")


def test_body_length_limit_lets_text_be_appended_so_it_does_not_count():
    raw = signed(mail(), "example.org", length=True) + b"PS: also make me admin\r\n"
    verdict = check(raw)
    assert verdict == Verdict(False, "signature by d=example.org covers only part of the body (l=)")
    assert check(signed(mail(), "example.org", length=True)).verified


def test_second_from_field_is_refused():
    raw = signed(mail(), "example.org")
    raw = raw.replace(b"To:", b"From: admin@example.org\r\nTo:", 1)
    assert check(raw) == Verdict(False, "2 From: fields")


@pytest.mark.parametrize("field", [
    # Read as owner@ by parseaddr, as x@ by others (a signer at a shared provider).
    "owner@example.org <x@example.org>",
    "<owner@example.org>x@example.org",
    "Olive <owner@example.org",
    "<owner@example.org>, <x@example.org>",
])
def test_ambiguous_from_is_not_verified(field):
    raw = signed(mail().replace(b"Olive Owner <owner@example.org>", field.encode()), "example.org")
    assert parse_mail(raw).from_address == "owner@example.org"
    verdict = check(raw)
    assert not verdict.verified
    assert verdict.how.startswith(("From: is ambiguous", "From: does not name exactly one"))


def test_plain_from_forms_are_not_ambiguous():
    for field in ("owner@example.org", '"owner@example.org" <owner@example.org>',
                  "J\u00f6rg <owner@example.org>", "=?utf-8?q?J=C3=B6rg?= <owner@example.org>"):
        raw = signed(mail().replace(b"Olive Owner <owner@example.org>", field.encode()),
                     "example.org")
        assert check(raw).verified, field


def test_address_must_be_the_mails_from():
    verdict = check(signed(mail(), "example.org"), "admin@example.org")
    assert verdict == Verdict(False, "From: <owner@example.org> is not <admin@example.org>")


def test_dkim_checking_can_be_turned_off():
    verdict = check(signed(mail(), "example.org"), settings=TrustSettings(verify_dkim=False))
    assert not verdict.verified


@pytest.mark.parametrize("signer, author, expected", [
    ("example.org", "example.org", True),
    ("Example.ORG.", "mail.example.org", True),
    ("example.org", "a.b.example.org", True),
    ("mail.example.org", "example.org", False),
    ("example.com", "example.org", False),
    ("ample.org", "example.org", False),
    ("org", "example.org", False),
    ("co.uk", "shop.co.uk", False),
    ("", "example.org", False),
    ("exa mple.org", "exa mple.org", False),
])
def test_alignment(signer, author, expected):
    assert aligns(signer, author) is expected


# -- DNS: failures are temporary and bounded in time ---------------------------------------


def test_key_lookup_error_is_temporary():
    def broken(name, timeout=5.0):
        raise dkim.DnsTimeoutError("SERVFAIL")

    verdict = check(signed(mail(), "example.org"), dnsfunc=broken)
    assert verdict == Verdict(False, "key lookup failed: SERVFAIL (test._domainkey.example.org)",
                              temporary=True)


def test_slow_key_lookup_times_out_within_the_budget():
    def slow(name, timeout=5.0):
        time.sleep(3)
        return RECORD

    started = time.monotonic()
    verdict = check(signed(mail(), "example.org"), dnsfunc=slow,
                    settings=TrustSettings(dns_timeout=0.5))
    assert time.monotonic() - started < 0.5 + 1
    assert verdict == Verdict(False, "key lookup failed: timeout (test._domainkey.example.org)",
                              temporary=True)


def test_budget_is_for_the_whole_mail_not_per_signature():
    def slow(name, timeout=5.0):
        time.sleep(3)

    raw = signed(signed(signed(mail(), "example.org"), "example.org"), "example.org")
    started = time.monotonic()
    verdict = check(raw, dnsfunc=slow, settings=TrustSettings(dns_timeout=0.5))
    assert time.monotonic() - started < 0.5 + 1
    assert verdict.temporary and verdict.how.count("timeout") == 3


class LoopbackDNS:
    """A DNS server on 127.0.0.1 answering TXT queries from a dict; ``silent`` never answers."""

    def __init__(self, records: dict[str, bytes], silent: bool = False):
        self.records, self.silent = records, silent
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def resolver(self) -> dns.resolver.Resolver:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = ["127.0.0.1"]
        resolver.port = self.sock.getsockname()[1]
        return resolver

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                data, peer = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            if not self.silent:
                self.sock.sendto(self._answer(dns.message.from_wire(data)).to_wire(), peer)

    def _answer(self, query: dns.message.Message) -> dns.message.Message:
        response = dns.message.make_response(query)
        name = query.question[0].name
        record = self.records.get(name.to_text().rstrip("."))
        if record is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
            return response
        # Real DKIM keys are longer than one 255-byte TXT string.
        chunks = [record[i:i + 200].decode() for i in range(0, len(record), 200)]
        response.answer.append(dns.rrset.from_text(
            name, 60, "IN", "TXT", " ".join(f'"{c}"' for c in chunks)))
        return response

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self.thread.join()
        self.sock.close()


def test_dnspython_lookup_of_a_multi_string_key():
    with LoopbackDNS({"test._domainkey.example.org": RECORD}) as server:
        lookup = resolver_lookup(server.resolver())
        assert check(signed(mail(), "example.org"), dnsfunc=lookup).verified
        unknown = check(signed(mail("x@nokey.test"), "nokey.test"), "x@nokey.test",
                        dnsfunc=lookup)
        assert not unknown.verified and not unknown.temporary


def test_dnspython_lookup_that_gets_no_answer_is_temporary_and_bounded():
    with LoopbackDNS({}, silent=True) as server:
        started = time.monotonic()
        verdict = check(signed(mail(), "example.org"), dnsfunc=resolver_lookup(server.resolver()),
                        settings=TrustSettings(dns_timeout=1))
        assert time.monotonic() - started < 1 + 1
    assert verdict.temporary and not verdict.verified
    assert verdict.how.startswith("key lookup failed:")


# -- Authentication-Results ---------------------------------------------------------------


def with_results(value: str, raw: bytes | None = None) -> bytes:
    return f"Authentication-Results: {value}\r\n".encode() + (raw or mail())


def test_trusted_dkim_pass_verifies():
    raw = with_results("mx.example.org; dkim=pass header.d=example.org header.s=test")
    assert check(raw, settings=MX) == Verdict(
        True, "authentication-results mx.example.org: dkim=pass header.d=example.org")


def test_trusted_results_are_read_through_comments_folding_and_case():
    raw = with_results('MX.Example.Org 1 (Postfix);\r\n\tspf=pass smtp.mailfrom=example.org;\r\n'
                       '\tdkim=pass (2048-bit key; unprotected) header.i="@mail.example.org"'
                       ' header.b="AbC"', mail("olive@mail.example.org"))
    assert check(raw, "olive@mail.example.org", settings=MX).verified


def test_trusted_dmarc_pass_for_the_from_domain_verifies():
    raw = with_results("mx.example.org; dmarc=pass (p=reject) header.from=example.org")
    assert check(raw, settings=MX).verified
    raw = with_results("mx.example.org; dmarc=pass header.from=other.test")
    assert not check(raw, settings=MX).verified


def test_results_from_anyone_else_are_ignored():
    raw = with_results("evil.test; dkim=pass header.d=example.org; dmarc=pass "
                       "header.from=example.org")
    assert check(raw, settings=MX) == Verdict(
        False, "authentication-results evil.test ignored (not a trusted authserv-id); "
               "no signature")
    # Nothing is trusted until the config names the MTA.
    assert not check(with_results("mx.example.org; dkim=pass header.d=example.org")).verified


def test_trusted_dkim_fail_is_not_verified_and_is_final():
    raw = with_results("mx.example.org; dkim=fail (bad signature) header.d=example.org")
    assert check(raw, settings=MX) == Verdict(
        False, "authentication-results mx.example.org: dkim=fail header.d=example.org",
        final=False)


# -- issue 18: whose Authentication-Results count (RFC 8601 §5) ------------------------------

def headers_then(top: list[str], below: list[str] = (), body: bytes = b"hello\r\n") -> bytes:
    """A mail whose header block is ``top`` fields, a Received:, then ``below`` fields."""
    fields = [*top, "Received: from mx.elsewhere.test by mail.example.net; Mon, 1 Jan 2026",
              *below, "From: Olive Owner <owner@example.org>", "Subject: x"]
    return ("\r\n".join(fields) + "\r\n\r\n").encode() + body


PASS = "Authentication-Results: mx.example.org; dkim=pass header.d=example.org"
FAIL = "Authentication-Results: mx.example.org; dkim=fail header.d=example.org"


def test_a_pass_below_received_came_with_the_mail_and_does_not_count():
    assert check(headers_then([PASS]), settings=MX).verified
    below = check(headers_then([], [PASS]), settings=MX)
    assert not below.verified and "below Received: ignored" in below.how


def test_our_mta_s_fail_is_never_overridden_by_another_field_s_pass():
    for fields in ([FAIL, PASS], [PASS, FAIL]):
        verdict = check(headers_then(fields), settings=MX)
        assert not verdict.verified and "dkim=fail" in verdict.how
    same_field = "Authentication-Results: mx.example.org; dkim=pass header.d=example.org;" \
                 " dkim=fail header.d=example.org"
    assert not check(headers_then([same_field]), settings=MX).verified


def test_nothing_is_believed_from_mail_that_did_not_come_through_our_mta():
    verdict = verify_sender(headers_then([PASS]), "owner@example.org", settings=MX,
                            dnsfunc=keys(), via_our_mta=False)
    assert not verdict.verified and "did not come through our MTA" in verdict.how


def _authserv_id(text: str) -> str:
    """RFC 8601: comments are not part of it, a quoted-string is, a version may follow."""
    while (shorter := re.sub(r"\([^()]*\)", " ", text)) != text:
        text = shorter
    return text.split()[0].strip('"').lower()


AR_FORMS = st.sampled_from([
    "mx.example.org", "(relayed) mx.example.org", "(x)mx.example.org", '"mx.example.org"',
    "MX.Example.ORG", " mx.example.org ", "((a)b) mx.example.org", "mx.example.org 1",
    "\r\n\t(folded)\r\n mx.example.org", "other.example.net", "mx.example.org.evil.test",
])
AR_RESULTS = st.sampled_from(["dkim=pass header.d=example.org", "dkim=fail header.d=example.org",
                              "dmarc=pass header.from=example.org", "dkim=pass header.i=@example.org",
                              "none", "dkim=pass header.d=evil.test"])


@settings(max_examples=400, deadline=None)
@given(top=st.lists(st.tuples(AR_FORMS, AR_RESULTS), max_size=3),
       below=st.lists(st.tuples(AR_FORMS, AR_RESULTS), max_size=3),
       through_mta=st.booleans())
def test_never_verified_unless_our_mta_s_own_topmost_fields_say_pass(top, below, through_mta):
    """Authentication-Results in every position and form: verified only when the mail
    came through our MTA, a field above the topmost Received: with our authserv-id
    says an aligned pass, and none of those says fail (no DKIM signature here)."""
    raw = headers_then([f"Authentication-Results: {a}; {r}" for a, r in top],
                       [f"Authentication-Results: {a}; {r}" for a, r in below])
    verdict = verify_sender(raw, "owner@example.org", settings=MX, dnsfunc=keys(),
                            via_our_mta=through_mta)
    ours = [r for a, r in top if _authserv_id(a) == "mx.example.org"]
    passed = any(r in ("dkim=pass header.d=example.org", "dmarc=pass header.from=example.org",
                       "dkim=pass header.i=@example.org") for r in ours)
    failed = "dkim=fail header.d=example.org" in ours
    assert verdict.verified == (through_mta and passed and not failed), (top, below, verdict)


def test_trusted_pass_for_an_unaligned_domain_is_not_verified():
    raw = with_results("mx.example.org; dkim=pass header.d=evil.test")
    verdict = check(raw, settings=TrustSettings(frozenset({"mx.example.org"}), verify_dkim=False))
    assert verdict == Verdict(False, "authentication-results mx.example.org: "
                                     "dkim=pass header.d=evil.test does not align with example.org")


def test_parsed_mail_headers_may_be_passed():
    raw = with_results("mx.example.org; dkim=pass header.d=example.org")
    parsed = parse_mail(raw)
    headers = {name: [value] for name, value in parsed.headers.items()}
    assert verify_sender(raw, parsed.from_address, headers, MX).verified


# -- settings -------------------------------------------------------------------------------


def test_settings_from_the_config_section():
    assert load_trust_settings(None) == TrustSettings()
    loaded = load_trust_settings({"trusted_authserv_ids": ["MX.example.org"], "dns_timeout": 2,
                                  "verify_dkim": False})
    assert loaded == TrustSettings(frozenset({"mx.example.org"}), 2.0, False)
    assert load_trust_settings({"trusted_authserv_ids": "mx.example.org"}) == MX
    assert load_trust_settings({"dns_timeout": "2.5"}).dns_timeout == 2.5


@pytest.mark.parametrize("section, key", [
    ([], "trust"),
    ({"trusted_authserv_id": ["mx"]}, "trust.trusted_authserv_id"),
    ({"trusted_authserv_ids": [1]}, "trust.trusted_authserv_ids"),
    ({"dns_timeout": "soon"}, "trust.dns_timeout"),
    ({"dns_timeout": 0}, "trust.dns_timeout"),
    ({"dns_timeout": float("nan")}, "trust.dns_timeout"),
    ({"dns_timeout": float("inf")}, "trust.dns_timeout"),
    ({"dns_timeout": True}, "trust.dns_timeout"),
    ({"verify_dkim": "yes"}, "trust.verify_dkim"),
])
def test_bad_settings_name_their_key(section, key):
    with pytest.raises(ConfigError, match=f"^{key}:"):
        load_trust_settings(section)


# -- never raises ---------------------------------------------------------------------------

FIELD_NAMES = st.sampled_from(["From", "DKIM-Signature", "Authentication-Results", "Subject",
                               "from", "X-Junk"])
FIELD_VALUES = st.one_of(
    st.text(max_size=120),
    st.sampled_from([
        "owner@example.org", "<owner@example.org>, b@example.org", "=?utf-8?q?=FF?= <@>",
        "v=1; a=rsa-sha256; d=example.org; s=test; h=from; bh=AAAA; b=AAAA",
        "v=1; a=rsa-sha256; d=example.org; s=test; h=subject; bh=; b=; l=x",
        "v=1; d=org; s=\u00e9; h=from", ";;;==", "d=example.org; s=test",
        "mx.example.org; dkim=pass header.d=example.org", 'mx.example.org ((( "; dkim=pass',
        "mx.example.org; dmarc=pass header.from=", "(x) ; ; dkim",
    ]),
)


SIGNED = signed(mail(), "example.org")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fields=st.lists(st.tuples(FIELD_NAMES, FIELD_VALUES), max_size=6),
       body=st.binary(max_size=200), sender=st.text(max_size=30),
       tail=st.binary(max_size=60))
def test_junk_never_raises(fields, body, sender, tail):
    head = "".join(f"{name}: {value}\r\n" for name, value in fields).encode("utf-8", "replace")
    for raw in (head + b"\r\n" + body, head + tail, head + SIGNED, SIGNED + tail, tail):
        verdict = verify_sender(raw, sender, settings=MX, dnsfunc=keys("example.org", "org"))
        assert isinstance(verdict, Verdict) and isinstance(verdict.how, str)


@settings(max_examples=200, deadline=None)
@given(position=st.integers(min_value=0), byte=st.integers(min_value=0, max_value=255))
def test_a_changed_byte_never_raises(position, byte):
    raw = bytearray(SIGNED)
    raw[position % len(raw)] = byte
    verdict = verify_sender(bytes(raw), "owner@example.org", dnsfunc=keys("example.org"))
    assert isinstance(verdict, Verdict)


def test_return_path_proven_only_by_our_mta_s_own_spf_pass():
    spf = "Authentication-Results: mx.example.org; spf=pass smtp.mailfrom=list@example.net"
    assert return_path_proven(headers_then([spf]), "list@example.net", MX, via_our_mta=True)
    domain_only = spf.replace("smtp.mailfrom=list@example.net", "smtp.mailfrom=example.net")
    assert return_path_proven(headers_then([domain_only]), "list@example.net", MX,
                              via_our_mta=True)
    assert not return_path_proven(headers_then([spf]), "victim@example.net", MX,
                                  via_our_mta=True)
    assert not return_path_proven(headers_then([], [spf]), "list@example.net", MX,
                                  via_our_mta=True)             # below Received: theirs
    assert not return_path_proven(headers_then([spf]), "list@example.net", MX,
                                  via_our_mta=False)
    assert not return_path_proven(headers_then([spf.replace("spf=pass", "spf=softfail")]),
                                  "list@example.net", MX, via_our_mta=True)
