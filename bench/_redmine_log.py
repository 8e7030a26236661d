"""Redmine's own work per contender, read from its Rails log: allocations.

Time per note moves with the machine (this one gave the same code 0.74x and
0.81x in two runs, and one contender 12.4 s and 10.6 s in two rounds minutes
apart); the objects Ruby allocates for a request do not.  Rails logs them with
every request ("Completed 204 No Content in 38ms (ActiveRecord: 5.6ms |
Allocations: 10179)"), so a contender's allocations per note say how much work
it gives Redmine, and their ratio to the bare loop's is what its throughput
ratio would be on a machine that only ran Redmine.  (Allocation is not all of
Redmine's time: SQLite's own work is not counted, and a status change costs
more SQL than objects.)

The private Redmine logs to its stdout (``RAILS_LOG_TO_STDOUT``, read by
Debian's production.rb), which bench/_redmine.py writes to its own file.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

_LINE = re.compile(r"\[(\d{4}-\d\d-\d\dT[\d:.]+) #\d+\]\s+\w+ -- : \[([0-9a-f-]{36})\] (.*)")
_DONE = re.compile(r"Completed \d+ .* in (\d+)ms .*Allocations: (\d+)")


@dataclass
class Work:
    """What one contender's requests cost Redmine, summed over its windows."""
    allocations: int = 0
    milliseconds: int = 0
    #: request kind -> [count, allocations]
    kinds: dict[str, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))


def _kind(started: str) -> str:
    """'Started PUT "/issues/12.json?include=x" for ...' -> 'PUT /issues/N.json?include=x'."""
    method, target = started.split()[1], started.split('"')[1]
    path, _, query = target.partition("?")
    include = re.search(r"include=([^&]+)", query)
    kind = f"{method} {re.sub(r'[0-9]+', 'N', path)}"
    return kind + (f"?include={include.group(1).replace('%2C', ',')}" if include else "")


def requests(log: Path, since: float) -> list[tuple[float, str, int, int]]:
    """(start time, kind, ms, allocations) of every request completed in ``log`` that
    started at or after ``since`` (seconds since the epoch)."""
    started: dict[str, tuple[float, str]] = {}
    done = []
    with open(log, errors="replace") as lines:
        for line in lines:
            found = _LINE.search(line)
            if not found:
                continue
            stamp, request, message = found.groups()
            # Ruby's Logger writes local time, and Redmine runs on this machine.
            at = datetime.fromisoformat(stamp).timestamp()
            if at < since:
                continue
            if message.startswith("Started "):
                started[request] = (at, _kind(message))
            elif request in started and (cost := _DONE.search(message)):
                at, kind = started.pop(request)
                done.append((at, kind, int(cost.group(1)), int(cost.group(2))))
    return done


def work(log: Path, windows: dict[str, list[tuple[float, float]]]) -> dict[str, Work]:
    """Each contender's Work: the requests that started within one of its windows."""
    since = min((t0 for spans in windows.values() for t0, _ in spans), default=0.0)
    found = {name: Work() for name in windows}
    for at, kind, ms, allocations in requests(log, since):
        for name, spans in windows.items():
            if any(t0 <= at <= t1 for t0, t1 in spans):
                each = found[name]
                each.allocations += allocations
                each.milliseconds += ms
                each.kinds[kind][0] += 1
                each.kinds[kind][1] += allocations
    return found
