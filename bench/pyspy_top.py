"""Summarise a py-spy profile (``py-spy record --format raw``: one collapsed stack a line).

    python bench/pyspy_top.py STACKS.txt [--top 25] [--match mailgate/]

Prints the functions with the most samples on-CPU, inclusive (the function or
anything it called) and self (the function itself), as a share of all samples.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def frames(stack: str) -> list[str]:
    out = []
    for frame in stack.split(";"):
        found = _FRAME.match(frame.strip())
        if found is None:
            out.append(frame.strip())
            continue
        path = found.group("file")
        for cut in ("site-packages/", "lib/python3.11/", "/work/main/"):
            if cut in path:
                path = path.split(cut, 1)[1]
        out.append(f"{found.group('func')} ({path})")
    return out


def summarise(path: str) -> tuple[int, Counter, Counter]:
    total, inclusive, own = 0, Counter(), Counter()
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not count.isdigit():
                continue
            n = int(count)
            names = frames(stack)
            if names and names[0].startswith(("thread", "process")):
                names = names[1:]
            total += n
            for name in set(names):
                inclusive[name] += n
            if names:
                own[names[-1]] += n
    return total, inclusive, own


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("stacks")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--match", default="", help="only functions whose file contains this")
    args = parser.parse_args()
    total, inclusive, own = summarise(args.stacks)
    print(f"{total} samples")
    for title, counter in (("inclusive", inclusive), ("self", own)):
        print(f"\n-- {title} --")
        shown = 0
        for name, n in counter.most_common():
            if args.match and args.match not in name:
                continue
            print(f"{100 * n / max(total, 1):5.1f}%  {name}")
            shown += 1
            if shown >= args.top:
                break


if __name__ == "__main__":
    main()
