"""E. Parse + decide throughput on a mixed corpus, against mail-parser and the stdlib, in one run.

    python bench/e_parse.py [--rounds 5] [--seconds 1.0] [--compare REF] [--base REF] [--quick]

The corpus: every fixtures/mail/*.eml, plus variants generated here (fixed
seed): HTML-only and multipart/alternative, quoted reply histories, commands
at the top, attachments (20-300 KB, base64), and charsets (ISO-8859-1,
windows-1252, KOI8-R, Shift_JIS, ISO-2022-JP, UTF-8 quoted-printable, RFC 2047
subjects and names).  Contenders, each over the whole corpus:

  mailgate explain             mailgate.ops.explain.explain with GivenFacts (ticket open,
    (parse+route+decide)       owned by owner@example.org: no Redmine, no DNS), what
                               `mailgate explain --ticket-state open --ticket-owner ...`
                               runs per file: parse_mail, the recipient from the
                               headers, routing, the automatic-mail rules, trimming,
                               commands, the workflow
  mailgate parse_mail          mailgate.mail.message.parse_mail alone
  mail-parser                  mailparser.parse_from_bytes (if installed)
  stdlib policy.default        BytesParser(policy=default), the body's get_content()
                               and every attachment's get_content()
  stdlib compat32              email.message_from_bytes and every leaf's payload decoded

Each code tree (the working tree, and with --compare REF also REF's code,
exported with git archive) runs in a process of its own (this script with
--contenders, driven over a pipe), since two mailgates cannot share one
process; the baselines run in the first one.  Rounds interleave all the
contenders, across the processes; each round runs a contender for about
``--seconds`` (whole passes over the corpus) and the median rate is kept.
With --compare a side check says on how many corpus mails the two trees'
parse_mail give the same ParsedMail (its repr).
--quick: one round of 0.2 s (proves it runs; no figure).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import subprocess
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
from _common import (MAIL_FIXTURES, add_compare_option, bench_config, code_trees,  # noqa: E402
                     header, median, public, ratio, table, tree_env)
from support.processes import closed_url  # noqa: E402

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

def mailgate_explain(config):
    explain = public("explain", "mailgate.ops.explain", "mailgate.explain")
    from mailgate.facts import GivenFacts

    facts = GivenFacts("open", "owner@example.org", config)

    def run(raw: bytes):
        return explain("mail.eml", raw, config, facts)
    return run


def mailgate_parse():
    from mailgate.errors import MailgateError
    parse_mail = public("parse_mail", "mailgate.mail.message", "mailgate.message")

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


def digests(mails: list[bytes]) -> list[str]:
    """What parse_mail makes of each mail (its repr, or the exception), hashed."""
    parse_mail = public("parse_mail", "mailgate.mail.message", "mailgate.message")

    out = []
    for raw in mails:
        try:
            result = repr(parse_mail(raw))
        except Exception as exc:
            result = f"{type(exc).__name__}: {exc}"
        out.append(hashlib.sha256(result.encode()).hexdigest())
    return out


DECIDE = "mailgate explain (parse+route+decide)"


def serve_contenders(baselines: bool) -> None:
    """The child (--contenders): the contenders of this process's tree, on request.

    Reads one JSON command a line on stdin, answers one JSON line on stdout:
    {"warm": true}, {"rate": NAME, "seconds": S}, {"digests": true}."""
    from mailgate.config import load_config

    raws = [raw for _, raw in corpus()]
    with tempfile.TemporaryDirectory(prefix="bench-e-") as tmp:
        # No DNS may be asked from here: DKIM checking off (no corpus mail is signed).
        config = load_config(bench_config(Path(tmp) / "m.yaml", closed_url(),
                                          trust={"verify_dkim": False}))
        contenders = {DECIDE: mailgate_explain(config), "mailgate parse_mail": mailgate_parse()}
        if baselines:
            if find_spec("mailparser") is not None:
                contenders["mail-parser"] = mail_parser()
            contenders["stdlib policy.default"] = stdlib_default()
            contenders["stdlib compat32"] = stdlib_compat32()
        print(json.dumps({"contenders": list(contenders)}), flush=True)
        for line in sys.stdin:
            command = json.loads(line)
            if "warm" in command:        # imports, caches
                for run in contenders.values():
                    for raw in raws:
                        run(raw)
                answer = {"ok": True}
            elif "rate" in command:
                answer = {"rate": rate(contenders[command["rate"]], raws, command["seconds"])}
            elif "digests" in command:
                answer = {"digests": digests(raws)}
            else:
                answer = {"error": f"unknown command {command}"}
            print(json.dumps(answer), flush=True)


class Contenders:
    """A --contenders child for one tree."""

    def __init__(self, tree, baselines: bool):
        command = [sys.executable, __file__, "--contenders"] + (["--baselines"] if baselines
                                                                else [])
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True, env=tree_env(tree))
        self.names = self._answer()["contenders"]

    def _answer(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the contenders' process exited ({self.process.wait()})")
        return json.loads(line)

    def ask(self, **command) -> dict:
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        return self._answer()

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--contenders", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--baselines", action="store_true", help=argparse.SUPPRESS)
    add_compare_option(parser)
    parser.add_argument("--quick", action="store_true",
                        help="one round of 0.2 s per contender (proves it runs)")
    args = parser.parse_args()
    if args.contenders:
        return serve_contenders(args.baselines)
    if args.quick:
        args.rounds, args.seconds = 1, 0.2
    with tempfile.TemporaryDirectory(prefix="bench-e-") as tmp:
        trees = code_trees(args, Path(tmp))
        header("E. Parse + decide throughput, mixed corpus, one process per code tree", trees)
        children = [Contenders(tree, baselines=n == 0) for n, tree in enumerate(trees)]
        try:
            # name shown -> (child, name in the child)
            contenders = {}
            for tree, child in zip(trees, children):
                for name in child.names:
                    if name.startswith("mailgate"):
                        contenders[name + tree.label] = (child, name)
            for name in children[0].names:
                if not name.startswith("mailgate"):
                    contenders[name] = (children[0], name)
            for child in children:
                child.ask(warm=True)
            rates: dict[str, list[float]] = {name: [] for name in contenders}
            for _ in range(args.rounds):
                for name, (child, inner) in contenders.items():
                    rates[name].append(child.ask(rate=inner, seconds=args.seconds)["rate"])
            sums = [child.ask(digests=True)["digests"] for child in children]
        finally:
            for child in children:
                child.close()
    mails = corpus()
    raws = [raw for _, raw in mails]
    size = sum(map(len, raws))
    print(f"\ncorpus: {len(raws)} mails ({len(raws) - len(generated())} fixtures,"
          f" {len(generated())} generated), {size / 1e6:.1f} MB,"
          f" median {sorted(map(len, raws))[len(raws) // 2]:,} bytes")
    result = {name: median(r) for name, r in rates.items()}
    table([(name, f"{result[name]:,.0f}", " ".join(f"{r:,.0f}" for r in rates[name]),
            f"{1000 / result[name]:.2f}") for name in contenders],
          ("contender", "msg/s (median)", "each round", "ms/msg"))
    print()
    for tree, other in zip(trees[1:], sums[1:]):
        differ = [name for (name, _), a, b in zip(mails, sums[0], other) if a != b]
        print(f"parse_mail: {trees[0].name} == {tree.name} on"
              f" {len(mails) - len(differ)}/{len(mails)} corpus mails"
              + (f"; differs on {', '.join(differ[:8])}" if differ else ""))
        for name in ("mailgate parse_mail", DECIDE):
            ratio(f"{name} msg/s: {trees[0].name} / {tree.name}",
                  result[name] / result[name + tree.label])
    ratio("mailgate parse+route+decide / stdlib policy.default",
          result[DECIDE] / result["stdlib policy.default"])
    ratio("mailgate parse_mail / mail-parser" if "mail-parser" in result else
          "mailgate parse_mail / stdlib policy.default",
          result["mailgate parse_mail"] / result.get("mail-parser",
                                                     result["stdlib policy.default"]))
    if "mail-parser" in result:
        ratio("mailgate parse+route+decide / mail-parser", result[DECIDE] / result["mail-parser"],
              ">= 1")


if __name__ == "__main__":
    main()
