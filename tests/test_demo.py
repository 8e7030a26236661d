"""The README's demo tells its stories right (issue 17, point 5; issue 13's and issue 14's
"Done when"): each timeline row is one journal with its own author, action and status;
a reply typed in the ticket's Discord thread by Sam arrives in Redmine as Sam's note,
and nothing echoes; the neighbour who is not a Redmine user receives support's answer
by mail."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from support.processes import child_env
from tests.helpers import ROOT

pytestmark = pytest.mark.real_redmine


def timeline_rows(text: str, ticket_title: str) -> list[list[str]]:
    heading = re.search(rf"^Ticket #\d+ in Redmine .*: {re.escape(ticket_title)}.*$", text,
                        re.MULTILINE)
    assert heading, text
    block = text[heading.end():].split("Final status:", 1)[0]
    rows = [line for line in block.splitlines() if line.strip()][1:]   # after the heads
    return [re.split(r"\s{2,}", row.strip())[:3] for row in rows]


def test_the_demo_tells_both_stories(real_redmine):
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py")], capture_output=True, timeout=300,
        env=child_env({"MAILGATE_REDMINE_URL": real_redmine.url,
                       "MAILGATE_REDMINE_API_KEY": real_redmine.admin_key,
                       "MAILGATE_LOG_LEVEL": "WARNING"}))
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    assert timeline_rows(out, "Router drops the connection") == [
        ["Olive Owner", "open", "Open"],
        ["Sam Support", "request-info", "Needs information"],
        ["Olive Owner", "give-info", "Open"],
        ["Sam Support", "answer", "Answered"],
        ["Olive Owner", "reopen", "Open"],
        ["Sam Support", "answer", "Answered"],
        ["Olive Owner", "confirm", "Solved"],
        ["Olive Owner", "comment", "Solved"],
    ]
    first = re.search(r"^Ticket #(\d+) in Redmine .*: Router drops", out, re.MULTILINE).group(1)
    assert "  | Glad it works! If it drops again" in out
    assert f"Redmine #{first}: a note by Sam Support: Glad it works!" in out
    posts = re.search(r"Discord thread: (\d+) posts \((\d+) before the reply", out)
    assert int(posts.group(1)) == int(posts.group(2)) + 1 == 9     # the reply, no echo
    ticket = re.search(r"site-a@example.org: ticket #(\d+)", out).group(1)
    assert f"Reply-To: ticket{ticket}@example.org" in out
    assert "To: nina@neighbours.example" in out
    assert "| Please unplug the router for ten seconds" in out
    assert timeline_rows(out, "No internet since this morning") == [
        ["Mail Gateway", "open", "Open"],
        ["Sam Support", "(in Redmine)", "Answered"],
        ["Mail Gateway", "confirm", "Solved"],
    ]
