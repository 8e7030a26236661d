"""E. Parse + decide throughput on a mixed corpus, against mail-parser and the stdlib, in one run.

    python bench/e_parse.py [--rounds 5] [--seconds 1.0]

The corpus: every fixtures/mail/*.eml, plus variants generated here (fixed
seed): HTML-only and multipart/alternative, quoted reply histories, commands
at the top, attachments (20-300 KB, base64), and charsets (ISO-8859-1,
windows-1252, KOI8-R, Shift_JIS, ISO-2022-JP, UTF-8 quoted-printable, RFC 2047
subjects and names).  Contenders, each over the whole corpus, in one process:

  mailgate parse+route+decide  parse_mail, the recipient from the headers, route_mail,
                               plan_mail with facts given (ticket open, owned by
                               owner@example.org: no Redmine, no DNS): the
                               automatic-mail rules, trimming, commands, the workflow
  ... (proposed)               the same with base64 leaves of 16 KB and more decoded
                               straight from the raw bytes, and the sender check
                               parsing the header block only (bench/proposals.py);
                               left out when both are in mailgate (eed9613), and the
                               side check then compares mailgate's own big-leaf path
                               with the stdlib-only parse
  mailgate parse_mail          parse_mail alone
  mail-parser                  mailparser.parse_from_bytes (if installed)
  stdlib policy.default        BytesParser(policy=default), the body's get_content()
                               and every attachment's get_content()
  stdlib compat32              email.message_from_bytes and every leaf's payload decoded

Rounds interleave the contenders; each round runs a contender for about
``--seconds`` (whole passes over the corpus) and the median rate is kept.  A
side check: the proposed parse_mail for big mails (bench/proposals.py) gives
the same ParsedMail as parse_mail on every corpus mail (its threshold lowered
so that it takes its own path wherever it can).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from email.header import Header
from email.message import EmailMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from importlib.util import find_spec
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (MAIL_FIXTURES, closed_url, header, median, ratio, table,  # noqa: E402
                     write_config)

TEXTS = {
    "iso-8859-1": "Bonjour, le routeur coupe la connexion chaque soir à huit heures. Merci!",
    "windows-1252": "Grüße – the router drops at 8 “every” evening… see the log.",
    "koi8-r": "Здравствуйте, роутер отключается каждый вечер около восьми часов.",
    "shift_jis": "こんにちは、ルーターが毎晩八時ごろ接続を切ります。ログを添付します。",
    "iso-2022-jp": "お世話になります。ファームウェアは最新です。",
    "utf-8": "Hej! Routern kopplar ner varje kväll vid åtta. Tack så mycket — Åsa ☺",
}
QUOTE = ("On Mon, 23 Nov 2026 at 09:00, Sam Support <support@example.org> wrote:\n"
         + "".join(f"> line {n} of the earlier answer, with its details and thanks\n"
                   for n in range(30)))


def generated(seed: int = 7) -> list[tuple[str, bytes]]:
    rng = random.Random(seed)
    out = []
    senders = ["Olive Owner <owner@example.org>", "Sam Support <support@example.org>",
               "Oscar Other <other@example.org>", "Stranger <stranger@elsewhere.test>"]
    for n in range(48):
        kind = ("html", "alternative", "attachment", "charset", "quoted", "command")[n % 6]
        ticket = rng.randint(1, 30)
        to = f"ticket{ticket}@example.org" if n % 5 else "site-a@example.org"
        sender = senders[n % len(senders)]
        text = f"Reply {n}: it happens every evening around eight, on both bands.\n"
        if kind == "html":
            msg = MIMEText(f"<html><body><p>{text}</p><blockquote>{QUOTE}</blockquote>"
                           f"<p>Regards</p></body></html>", "html", "utf-8")
        elif kind == "alternative":
            msg = MIMEMultipart("alternative")
            msg.attach(MIMEText(text + "\n" + QUOTE, "plain", "utf-8"))
            msg.attach(MIMEText(f"<html><body><p>{text}</p></body></html>", "html", "utf-8"))
        elif kind == "attachment":
            msg = EmailMessage()
            msg.set_content(text)
            for k in range(1 + n % 3):
                msg.add_attachment(rng.randbytes(rng.randint(20_000, 300_000)),
                                   maintype="application", subtype="octet-stream",
                                   filename=f"log-{k}.bin")
        elif kind == "charset":
            charset = list(TEXTS)[n % len(TEXTS)]
            msg = MIMEText(TEXTS[charset] + "\n" + text, "plain", charset)
            sender = f"{Header('Åsa Ström', 'utf-8').encode()} <owner@example.org>"
        elif kind == "quoted":
            msg = MIMEText(text + "\n" + QUOTE + "\n-- \nOlive\n", "plain", "utf-8")
        else:
            msg = MIMEText(("Status: Solved\n\n" if n % 2 else "Action: answer\n\n") + text,
                           "plain", "utf-8")
        msg["From"] = sender
        msg["To"] = to
        msg["Subject"] = (Header(f"Re: [#{ticket}] Routeur coupé — {n}", "utf-8").encode()
                          if kind == "charset" else f"Re: [#{ticket}] The router drops {n}")
        msg["Message-ID"] = f"<e-{n}@bench.test>"
        msg["Date"] = "Mon, 23 Nov 2026 10:00:00 +0000"
        out.append((f"gen-{n:02d}-{kind}", msg.as_bytes()))
    return out


def corpus() -> list[tuple[str, bytes]]:
    fixtures = [(p.name, p.read_bytes()) for p in sorted(MAIL_FIXTURES.glob("*.eml"))]
    return fixtures + generated()


# -- the contenders ------------------------------------------------------------------------

def mailgate_decide(config):
    from mailgate.dispatch import plan_mail, recipient_from_headers
    from mailgate.errors import MailgateError
    from mailgate.facts import GivenFacts
    from mailgate.message import parse_mail
    from mailgate.routing import resolve_recipient, route_mail

    facts = GivenFacts("open", "owner@example.org", config)

    def run(raw: bytes):
        try:
            mail = parse_mail(raw)
            address = recipient_from_headers(mail, config)
            return plan_mail(route_mail(resolve_recipient(address, config), mail),
                             mail, facts, config)
        except MailgateError as exc:
            return exc
    return run


def mailgate_decide_proposed(config):
    """The same with two proposals (bench/proposals.py): base64 leaves of 16 KB and more
    decoded from the raw bytes, and the sender check parsing the header block only."""
    import proposals
    from mailgate import trust
    from mailgate.dispatch import plan_mail, recipient_from_headers
    from mailgate.errors import MailgateError
    from mailgate.facts import GivenFacts
    from mailgate.message import parse_mail
    from mailgate.routing import resolve_recipient, route_mail

    class Facts(GivenFacts):
        def sender_verdict(self, mail):
            fields = trust._header_fields(proposals._header_block(mail.raw))
            return trust.verify_sender(mail.raw, mail.from_address, headers=fields,
                                       settings=self.config.trust)

    facts = Facts("open", "owner@example.org", config)

    def run(raw: bytes):
        try:
            mail = proposals.parse_mail_big(raw, parse_mail, big_leaf=16 * 1024)
            address = recipient_from_headers(mail, config)
            return plan_mail(route_mail(resolve_recipient(address, config), mail),
                             mail, facts, config)
        except MailgateError as exc:
            return exc
    return run


def mailgate_parse():
    from mailgate.errors import MailgateError
    from mailgate.message import parse_mail

    def run(raw: bytes):
        try:
            return parse_mail(raw)
        except MailgateError as exc:
            return exc
    return run


def mail_parser():
    import mailparser

    def run(raw: bytes):
        try:
            return mailparser.parse_from_bytes(raw)
        except Exception as exc:  # it raises on some garbage; that is its answer
            return exc
    return run


def stdlib_default():
    from email import policy
    from email.parser import BytesParser

    parser = BytesParser(policy=policy.default)

    def run(raw: bytes):
        message = parser.parsebytes(raw)
        try:
            body = message.get_body(("plain", "html"))
            text = body.get_content() if body is not None else None
            files = [a.get_content() for a in message.iter_attachments()]
        except Exception as exc:  # LookupError on unknown charsets, KeyError, ...
            return exc
        return message, text, files
    return run


def stdlib_compat32():
    import email

    def run(raw: bytes):
        message = email.message_from_bytes(raw)
        return [part.get_payload(decode=True) for part in message.walk()
                if not part.is_multipart()]
    return run


def rate(run, mails: list[bytes], seconds: float) -> float:
    done, started = 0, time.perf_counter()
    while True:
        for raw in mails:
            run(raw)
        done += len(mails)
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            return done / elapsed


def check_proposal(mails: list[tuple[str, bytes]]) -> str:
    import proposals
    from mailgate.message import parse_mail

    same = taken = 0
    for name, raw in mails:
        leaves: list = []
        try:
            proposals._big_leaves(raw, 0, len(raw), leaves, big_leaf=1)
        except Exception:
            pass
        taken += bool(leaves)
        try:
            a = parse_mail(raw)
        except Exception as exc:
            a = type(exc)
        try:
            # big_leaf=1: the new path wherever there is a base64 leaf
            b = proposals.parse_mail_big(raw, parse_mail, big_leaf=1)
        except Exception as exc:
            b = type(exc)
        if a == b:
            same += 1
        else:
            print(f"# proposed parse_mail differs on {name}")
    return (f"proposed parse_mail == parse_mail on {same}/{len(mails)} corpus mails"
            f" ({taken} of them through the big-leaf path)")


def check_landed(mails: list[tuple[str, bytes]]) -> str:
    """With d-1 in mailgate: its big-leaf path (threshold at 1 byte, so every base64
    leaf takes it) gives the same ParsedMail as the stdlib parser alone."""
    from email.parser import BytesParser

    from mailgate import message

    same = taken = 0
    saved = message.BIG_LEAF
    try:
        message.BIG_LEAF = 1
        for name, raw in mails:
            try:
                taken += bool(message._big_leaves(raw))
            except Exception:
                pass
            try:
                a = message._parse(raw, BytesParser().parsebytes(raw), False)
            except Exception as exc:
                a = type(exc)
            try:
                b = message.parse_mail(raw)
            except Exception as exc:
                b = type(exc)
            if a == b:
                same += 1
            else:
                print(f"# parse_mail's big-leaf path differs from the stdlib's on {name}")
    finally:
        message.BIG_LEAF = saved
    return (f"parse_mail (big-leaf path for every base64 leaf) == stdlib-only parse on"
            f" {same}/{len(mails)} corpus mails ({taken} of them through the big-leaf path)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args()
    header("E. Parse + decide throughput, mixed corpus, one process")
    from mailgate.config import load_config

    mails = corpus()
    raws = [raw for _, raw in mails]
    with tempfile.TemporaryDirectory(prefix="bench-e-") as tmp:
        # No DNS may be asked from here: DKIM checking off (no corpus mail is signed).
        config = load_config(write_config(Path(tmp) / "m.yaml", closed_url(),
                                          trust={"verify_dkim": False}), environ={})
        import proposals

        landed = proposals.in_code("d-1") and proposals.in_code("e-1")
        contenders = {"mailgate parse+route+decide": mailgate_decide(config)}
        if landed:      # eed9613: the proposed contender would only repeat the one above
            print("# d-1 and e-1 are in mailgate: the (proposed) contender is left out")
        else:
            contenders["mailgate parse+route+decide (proposed)"] = \
                mailgate_decide_proposed(config)
        contenders["mailgate parse_mail"] = mailgate_parse()
        if find_spec("mailparser") is not None:
            contenders["mail-parser"] = mail_parser()
        contenders["stdlib policy.default"] = stdlib_default()
        contenders["stdlib compat32"] = stdlib_compat32()
        for run in contenders.values():        # warm up (imports, caches)
            for raw in raws:
                run(raw)
        rates: dict[str, list[float]] = {name: [] for name in contenders}
        for _ in range(args.rounds):
            for name, run in contenders.items():
                rates[name].append(rate(run, raws, args.seconds))
    size = sum(map(len, raws))
    print(f"\ncorpus: {len(raws)} mails ({len(raws) - len(generated())} fixtures,"
          f" {len(generated())} generated), {size / 1e6:.1f} MB,"
          f" median {sorted(map(len, raws))[len(raws) // 2]:,} bytes")
    result = {name: median(r) for name, r in rates.items()}
    table([(name, f"{result[name]:,.0f}", " ".join(f"{r:,.0f}" for r in rates[name]),
            f"{1000 / result[name]:.2f}") for name in contenders],
          ("contender", "msg/s (median)", "each round", "ms/msg"))
    print(f"\n{check_landed(mails) if landed else check_proposal(mails)}\n")
    ratio("mailgate parse+route+decide / stdlib policy.default",
          result["mailgate parse+route+decide"] / result["stdlib policy.default"])
    ratio("mailgate parse_mail / mail-parser" if "mail-parser" in result else
          "mailgate parse_mail / stdlib policy.default",
          result["mailgate parse_mail"] / result.get("mail-parser",
                                                     result["stdlib policy.default"]))
    if "mail-parser" in result and not landed:
        ratio("mailgate parse+route+decide (proposed) / mail-parser",
              result["mailgate parse+route+decide (proposed)"] / result["mail-parser"], ">= 1")
    if "mail-parser" in result:
        ratio("mailgate parse+route+decide / mail-parser",
              result["mailgate parse+route+decide"] / result["mail-parser"], ">= 1")


if __name__ == "__main__":
    main()
