"""Hostile input: malformed MIME of every kind ends as a decision, an `ignored`, or a
clean rejection — never a traceback, and never a temporary failure (a 451 loop) for
mail that can never succeed.

CI runs the "ci" hypothesis profile (10,000 examples); locally the default is lighter.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings, strategies as st

from mailgate.config import load_config
from handlers.planning import plan_mail
from mailgate.errors import PermanentError
from mailgate.ops.explain import explain
from mailgate.facts import GivenFacts
from mailgate.mail.message import parse_mail
from tests.helpers import DEMO_CONFIG

CONFIG = load_config(DEMO_CONFIG, need_redmine=False)
FACTS = GivenFacts("answered", "owner@example.org", CONFIG)
EXAMPLES = 10_000 if os.environ.get("CI") else 300

settings.register_profile("hostile", deadline=None, max_examples=EXAMPLES,
                          suppress_health_check=[HealthCheck.too_slow,
                                                 HealthCheck.data_too_large])

junk = st.binary(max_size=200)
nasty_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=80).map(
    lambda s: s.encode("utf-8", "surrogatepass"))
header_names = st.sampled_from([b"From", b"To", b"Subject", b"Message-ID", b"In-Reply-To",
                                b"References", b"Content-Type", b"Content-Transfer-Encoding",
                                b"Content-Disposition", b"Auto-Submitted", b"Precedence",
                                b"Return-Path", b"X-Loop", b"Delivered-To", b"X-Junk"])
header_values = st.one_of(
    junk, nasty_text,
    st.sampled_from([b"=?utf-8?b?not base64?=", b"=?x-unknown?q?caf=E9?=", b"<>", b"<a@b>",
                     b"a@b, <c@d>, \"broken", b"ticket1@example.org\r\nBcc: evil@x",
                     b"x\x00y", b"\xff\xfe\xfd", b"multipart/mixed; boundary=",
                     b'multipart/mixed; boundary="unclosed', b"text/plain; charset=\"ks_c_5601-1987",
                     b"text/html; charset=iso-2022-jp", b"base64", b"quoted-printable",
                     b"attachment; filename*=utf-8''%E9%ZZ", b"x" * 5000]),
    st.binary(min_size=0, max_size=50).map(lambda b: b + b"\r\n\t" + b * 20),   # folded
)
header = st.tuples(header_names, header_values).map(lambda h: h[0] + b": " + h[1])


@st.composite
def mime_part(draw, depth: int = 0):
    kinds = [b"text/plain", b"text/html", b"image/png", b"application/octet-stream",
             b"message/rfc822", b"multipart/signed"]
    if depth < 4:
        kinds += [b"multipart/mixed", b"multipart/alternative", b"multipart/related"]
    kind = draw(st.sampled_from(kinds))
    charset = draw(st.sampled_from([b"utf-8", b"iso-2022-jp", b"ks_c_5601-1987", b"bogus",
                                    b"iso-8859-1", b""]))
    encoding = draw(st.sampled_from([b"7bit", b"8bit", b"base64", b"quoted-printable", b"x-uu"]))
    head = [b"Content-Type: " + kind + b"; charset=" + charset,
            b"Content-Transfer-Encoding: " + encoding]
    if draw(st.booleans()):
        head.append(b"Content-Disposition: attachment; filename=" + draw(junk)[:30])
    if kind.startswith(b"multipart"):
        boundary = draw(st.sampled_from([b"B", b"", b"--", b"a b", b"x" * 80]))
        head[0] = b"Content-Type: " + kind + b'; boundary="' + boundary + b'"'
        children = draw(st.lists(mime_part(depth + 1), max_size=3))
        body = b"".join(b"--" + boundary + b"\r\n" + c + b"\r\n" for c in children)
        if draw(st.booleans()):
            body += b"--" + boundary + b"--\r\n"      # sometimes closed, sometimes not
    else:
        body = draw(st.one_of(junk, nasty_text))
    return b"\r\n".join(head) + b"\r\n\r\n" + body


@st.composite
def hostile_mail(draw):
    headers = draw(st.lists(header, max_size=12))
    if draw(st.booleans()):
        headers.append(b"From: Olive <owner@example.org>")
    top = draw(st.one_of(mime_part(), junk, nasty_text))
    separator = draw(st.sampled_from([b"\r\n\r\n", b"\n\n", b"\r\n", b"", b"\n\x00\n"]))
    return b"\r\n".join(headers) + separator + top


def decide(raw: bytes, recipient: str):
    """The worker's decision path, with the ticket given (no Redmine)."""
    return plan_mail(parse_mail(raw), recipient, FACTS, CONFIG,
                     envelope_sender="owner@example.org")


@settings(settings.get_profile("hostile"))
@given(hostile_mail(), st.sampled_from(["ticket1@example.org", "site-a@example.org",
                                        "redmine@example.org"]))
def test_every_input_is_a_decision_or_a_clean_rejection(raw, recipient):
    try:
        plan = decide(raw, recipient)
    except PermanentError:
        return       # BadMessage: a clean 5xx / exit 65
    assert type(plan.step).__name__ in ("PostNote", "OpenTicket", "Ignore", "Refuse",
                                        "Duplicate", "Defer")
    assert plan.record()["step"] == type(plan.step).__name__
    # And `explain` says the same without raising.
    result = explain("fuzz", raw, CONFIG, FACTS, recipient).data
    assert result["route"]["kind"] in ("reply", "new", "ignored", "rejected")


@settings(settings.get_profile("hostile"))
@given(st.binary(max_size=3000))
def test_random_bytes_never_raise_anything_but_bad_message(raw):
    try:
        parse_mail(raw)
    except PermanentError:
        pass
