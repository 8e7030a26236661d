"""The reply corpus in fixtures/replies/ and how a trimmer is scored on it.

bench/trim_score.py publishes the score and tests/test_trimming.py holds
mailgate's trimmer to it; both take the scoring from here, so they cannot
disagree about what "exact" means.  The naive cut is here too: the score is
reported against it, and the test checks the scorer can tell it apart.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, NamedTuple

CORPUS = Path(__file__).resolve().parent.parent / "fixtures" / "replies"


class Case(NamedTuple):
    name: str
    body: str
    expected: str


class Score(NamedTuple):
    exact: int
    cut: int
    total: int
    misses: list[str]

    @property
    def percent(self) -> float:
        return 100.0 * self.exact / self.total


def load_corpus(folder: Path = CORPUS) -> list[Case]:
    cases = []
    for expected in sorted(folder.glob("*.expected.txt")):
        name = expected.name[: -len(".expected.txt")]
        body = (folder / f"{name}.txt").read_text(encoding="utf-8")
        cases.append(Case(name, body, expected.read_text(encoding="utf-8")))
    return cases


def normalise(text: str) -> str:
    """Lines without trailing whitespace, without leading/trailing blank lines."""
    return "\n".join(line.rstrip() for line in text.replace("\r\n", "\n").split("\n")).strip("\n")


def is_exact(output: str, expected: str) -> bool:
    return normalise(output) == normalise(expected)


def cuts_real_text(output: str, expected: str) -> bool:
    """Whether some line the person wrote is missing from the output (in order)."""
    remaining = iter(normalise(output).split("\n"))
    for line in normalise(expected).split("\n"):
        wanted = line.strip()
        if wanted and not any(wanted in got for got in remaining):
            return True
    return False


def score(trim: Callable[[str], str], cases: list[Case]) -> Score:
    exact, cut, misses = 0, 0, []
    for case in cases:
        output = trim(case.body)
        if is_exact(output, case.expected):
            exact += 1
        else:
            misses.append(case.name)
        if cuts_real_text(output, case.expected):
            cut += 1
            misses[-1] += " (REAL TEXT CUT)"
    return Score(exact, cut, len(cases), misses)


NAIVE_CUT = re.compile(r"^(>|On .* wrote:\s*$)", re.MULTILINE)


def naive(text: str) -> str:
    """Everything above the first line starting with ">" or "On ... wrote:"."""
    found = NAIVE_CUT.search(text)
    return text[: found.start()] if found else text
