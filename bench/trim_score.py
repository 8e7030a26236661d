"""Score reply trimming on the corpus in fixtures/replies/, side by side.

    python bench/trim_score.py [--verbose] [--from N]
    python bench/trim_score.py --speed

For each trimmer it prints the share of cases whose output is exactly what
the person wrote, and how many cases lose real text (some line of the
expected text is missing from the output, in order).  The naive cut
(everything from the first ">" line or "On ... wrote:") is measured in the
same run; talon, email-reply-parser and mail-parser-reply too when they are
importable (they are not project dependencies: install them in a separate
environment to compare).  The last line is the ratio of our exact-match
score to the naive cut's.  ``--from N`` scores only cases N and above: a
batch that was held out while the rules were written (docs/trimming.md).
``--speed`` instead times ``trim_reply`` on a megabyte of prose (numbered
sentences, as bench G's 25 MB reply) and one of log lines, best of three, in
microseconds a character: handlers/reply.py trims only as much as a note shows
because of this figure.

The corpus and its scoring (and the naive cut) are support/trim_corpus.py's,
which tests/test_trimming.py uses too, so the test and this report can never
disagree about what "exact" means.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from mailgate.mail.trimming import trim_reply  # noqa: E402
from support.trim_corpus import CORPUS, load_corpus, naive, score  # noqa: E402


def ours(text: str) -> str:
    return trim_reply(text).text


def libraries() -> dict[str, Callable[[str], str]]:
    """The third-party trimmers that are importable here, by name."""
    found: dict[str, Callable[[str], str]] = {}
    try:
        from talon import quotations
        from talon.signature.bruteforce import extract_signature
        found["talon (quotations + bruteforce signature)"] = (
            lambda text: extract_signature(quotations.extract_from_plain(text))[0])
    except Exception:  # noqa: BLE001 - any import failure means "not available"
        pass
    try:
        from email_reply_parser import EmailReplyParser as Zapier
        found["email-reply-parser"] = Zapier.parse_reply
    except Exception:  # noqa: BLE001
        pass
    try:
        from mailparser_reply import EmailReplyParser as Multi
        from mailparser_reply.constants import MAIL_LANGUAGES
        parser = Multi(languages=[lang for lang in MAIL_LANGUAGES if lang != "david"])
        found["mail-parser-reply (all languages)"] = (
            lambda text: parser.parse_reply(text=text) or "")
    except Exception:  # noqa: BLE001
        pass
    return found


SENTENCES = ("The connection dropped again at twenty past eight, as every evening.",
             "I restarted the router twice and changed the channel to eleven.",
             "Nothing helped; what it printed last night is further down.")


def speed_texts(size: int = 1_000_000) -> dict[str, str]:
    prose = [f"{SENTENCES[n % 3]} ({n})" for n in range(size // 70)]
    log = [f"2026-12-04 10:{n % 60:02d}:{n % 53:02d} kernel: eth0: link down ({n})"
           for n in range(size // 50)]
    return {"prose": "\n".join(prose), "log": "\n".join(log)}


def speed() -> int:
    for name, text in speed_texts().items():
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            trim_reply(text)
            best = min(best, time.perf_counter() - started)
        print(f"trim_reply on {len(text):,} characters of {name}: {best:.3f} s, "
              f"{best / len(text) * 1e6:.3f} µs a character")
    return 0


def held_out_from(argv: list[str]) -> int:
    """The first case number to score (``--from N``), 0 for all."""
    return int(argv[argv.index("--from") + 1]) if "--from" in argv else 0


def main(argv: list[str]) -> int:
    if "--speed" in argv:
        return speed()
    verbose = "--verbose" in argv
    first = held_out_from(argv)
    cases = [case for case in load_corpus() if int(case.name[:3]) >= first]
    trimmers = {"mailgate trim_reply": ours, "naive cut": naive, **libraries()}
    scores = {name: score(trim, cases) for name, trim in trimmers.items()}
    print(f"corpus: {len(cases)} cases in {CORPUS.relative_to(ROOT)}")
    print(f"{'trimmer':45} {'exact':>13} {'real text cut':>14}")
    for name, result in scores.items():
        print(f"{name:45} {result.exact:4}/{result.total} {result.percent:5.1f}% {result.cut:14}")
        if verbose and result.misses:
            print("    missed: " + ", ".join(result.misses))
    ratio = scores["mailgate trim_reply"].percent / max(scores["naive cut"].percent, 1e-9)
    print(f"exact-match ratio mailgate / naive cut: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
