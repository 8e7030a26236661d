"""F. A mailbox of replies into a real Redmine: `mailgate fetch` vs Redmine's own
`rake redmine:email:receive_imap`, on the same Dovecot and the same Redmine, one run.

    python bench/f_imap.py [--mails 1000] [--shared] [--quick]

MAILS replies from 3 senders (owner, support, other @example.org, all Redmine
users) across 30 tickets opened by owner in site-a (bench B's mails: each
names its ticket in To: ticket<N>@ and in the subject tag Redmine's mail
handler reads).  Each contender gets its own fresh mailbox on the Dovecot of
scripts/dovecot-local (filled with APPEND, not timed) and its own 30 tickets.
Timed, each as cron runs it (a fresh process, start-up included), from its
start to its exit, when every mail is a note:

  rake receive_imap   cd /usr/share/redmine && RAILS_ENV=production bundle exec rake
                      redmine:email:receive_imap host=127.0.0.1 port=P username=U
                      password=W move_on_success=processed move_on_failure=rejected
                      unknown_user=accept no_permission_check=1 (as www-data, as
                      Debian's Redmine runs; Redmine::IMAP: one UID FETCH RFC822 and
                      one MailHandler.receive per mail, then UID COPY + \\Deleted)
  mailgate fetch      python -m mailgate fetch --config FILE (one pass: UID batches into
                      the spool, MOVE to processed, then the worker applies the spool)
  ... --queue-only    the same pass without applying: what the IMAP side costs alone
                      (the mail is taken and spooled; no note; not in the ratio)
  bare REST loop      bench B's: the same notes as PUT /issues/N.json, one after another,
                      no IMAP, no status change, no check: the most any client of Redmine's
                      REST API gets from this Redmine (the ceiling for mailgate fetch)

Each also runs once on an empty mailbox first: its fixed cost (start-up, login).
Then each contender's notes are counted in Redmine (MAILS expected, none twice)
and its INBOX must be empty.  Redmine: a private instance of the local Debian
Redmine on its own port and copy of the golden database (bench/_redmine.py),
or with --shared the team's scripts/redmine-local on port 3000 (never reset
here: fresh tickets only; keep --mails small there).
--quick: 30 mails (one per ticket): proves it runs.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, child_env, header, ratio, table, write_config  # noqa: E402
from _redmine import PrivateRedmine, _bundler_version  # noqa: E402
from support.processes import free_port  # noqa: E402
from b_redmine import TICKETS, count_notes, make_mails, open_tickets, run_rest  # noqa: E402

DOVECOT_LOCAL = ROOT / "scripts" / "dovecot-local"
REDMINE_DIR = Path("/usr/share/redmine")


class SharedRedmineNoReset:
    """scripts/redmine-local's Redmine as it is: other people's tests use it."""

    url = "http://127.0.0.1:3000"
    api_key = "0000000000000000000000000000000000000a11"
    db = None

    def start(self):
        return self

    def stop(self) -> None:
        pass


def dovecot() -> dict[str, str]:
    out = subprocess.run([str(DOVECOT_LOCAL), "start"], capture_output=True, text=True,
                         timeout=600)
    if out.returncode != 0:
        raise SystemExit(f"scripts/dovecot-local start failed:\n{out.stderr}")
    return dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)


def new_mailbox(imap: dict[str, str], label: str) -> tuple[str, str]:
    from imapclient.exceptions import LoginError

    user, password = f"bench-{label}-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    subprocess.run([str(DOVECOT_LOCAL), "adduser", imap["MAILGATE_TEST_IMAP_DIR"], user,
                    password], check=True, capture_output=True, timeout=60)
    deadline = time.monotonic() + 5
    while True:         # Dovecot reads its passwd-file at most once a second
        try:
            with connection(imap, user, password):
                return user, password
        except LoginError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def connection(imap: dict[str, str], user: str, password: str):
    from imapclient import IMAPClient

    client = IMAPClient(imap["MAILGATE_TEST_IMAP_HOST"], int(imap["MAILGATE_TEST_IMAP_PORT"]),
                        ssl=False, timeout=60)
    client.login(user, password)
    return client


def fill(imap: dict[str, str], user: str, password: str, mails) -> None:
    with connection(imap, user, password) as client:
        for folder in ("processed", "rejected"):
            if not client.folder_exists(folder):
                client.create_folder(folder)
        for _, _, raw in mails:
            client.append("INBOX", raw)


def inbox_count(imap: dict[str, str], user: str, password: str) -> int:
    with connection(imap, user, password) as client:
        client.select_folder("INBOX", readonly=True)
        return len(client.search(["ALL"]))


# -- the contenders ----------------------------------------------------------------------

def run_rake(redmine, imap: dict[str, str], user: str, password: str) -> float:
    environment = ["PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/var/www", "LANG=C.UTF-8",
                   "RAILS_ENV=production", f"BUNDLER_VERSION={_bundler_version()}"]
    if redmine.db is not None:
        environment.append(f"DATABASE_URL=sqlite3:{redmine.db}")
    command = ["setpriv", "--reuid=www-data", "--regid=www-data", "--init-groups",
               "env", "-i", *environment, "bundle", "exec", "rake",
               "redmine:email:receive_imap", f"host={imap['MAILGATE_TEST_IMAP_HOST']}",
               f"port={imap['MAILGATE_TEST_IMAP_PORT']}", f"username={user}",
               f"password={password}", "move_on_success=processed",
               "move_on_failure=rejected", "unknown_user=accept", "no_permission_check=1"]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REDMINE_DIR, capture_output=True, text=True,
                          timeout=3600, stdin=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"rake receive_imap exited {done.returncode}:\n{done.stderr[-2000:]}")
    return seconds


def run_fetch(redmine, imap: dict[str, str], user: str, password: str, work: Path,
              *options: str) -> float:
    directory = Path(tempfile.mkdtemp(dir=work))
    (directory / "password").write_text(password + "\n")
    config = write_config(directory / "mailgate.yaml", redmine.url, redmine.api_key, imap={
        "mailboxes": [{"name": "bench", "host": imap["MAILGATE_TEST_IMAP_HOST"],
                       "port": int(imap["MAILGATE_TEST_IMAP_PORT"]), "tls": "none",
                       "user": user, "password_file": "password"}]})
    started = time.perf_counter()
    # cwd: not the repository, whose mailgate/ `python -m` would put first on sys.path.
    done = subprocess.run([sys.executable, "-m", "mailgate", "fetch", "--config", str(config),
                           *options],
                          cwd=directory, capture_output=True, text=True, timeout=3600,
                          env=child_env({"MAILGATE_LOG_LEVEL": "WARNING"}))
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"mailgate fetch exited {done.returncode}:\n{done.stderr[-2000:]}")
    return seconds


# -- the run ------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mails", type=int, default=1000)
    parser.add_argument("--shared", action="store_true",
                        help="use scripts/redmine-local (port 3000, not reset) instead of a"
                             " private Redmine")
    parser.add_argument("--quick", action="store_true", help="30 mails (proves it runs)")
    args = parser.parse_args()
    if args.quick:
        args.mails = TICKETS
    run = uuid.uuid4().hex[:6]
    header("F. A mailbox of replies into the local real Redmine: mailgate fetch vs rake"
           " redmine:email:receive_imap")
    imap = dovecot()
    redmine = SharedRedmineNoReset() if args.shared else PrivateRedmine(free_port())
    print(f"# Redmine: {'shared scripts/redmine-local' if args.shared else 'private'}"
          f" at {redmine.url}; Dovecot 127.0.0.1:{imap['MAILGATE_TEST_IMAP_PORT']};"
          f" {args.mails} mails into {TICKETS} tickets per contender")
    redmine.start()
    rows, seconds = [], {}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-f-") as tmp:
            work = Path(tmp)
            contenders = (
                ("rake receive_imap", lambda u, p, m, t: run_rake(redmine, imap, u, p)),
                ("mailgate fetch", lambda u, p, m, t: run_fetch(redmine, imap, u, p, work)),
                ("mailgate fetch --queue-only", lambda u, p, m, t: run_fetch(
                    redmine, imap, u, p, work, "--queue-only")),
                ("bare REST loop", lambda u, p, m, t: run_rest(redmine, m, t)))
            for name, contender in contenders:
                empty = 0.0 if name == "bare REST loop" else contender(
                    *new_mailbox(imap, "empty"), [], [])
                tickets = open_tickets(redmine)
                mails = make_mails(tickets, args.mails, f"{run}{name[0]}")
                user, password = new_mailbox(imap, name.split()[0])
                if name != "bare REST loop":
                    fill(imap, user, password, mails)
                seconds[name] = contender(user, password, mails, tickets)
                notes, distinct = count_notes(redmine, tickets)
                left = inbox_count(imap, user, password)
                if name.endswith("--queue-only"):
                    # Taken and spooled, not applied: what the IMAP side costs alone.
                    notes = distinct = args.mails if notes == 0 else -1
                if notes != args.mails or distinct != args.mails or left:
                    raise RuntimeError(f"{name}: {notes} notes ({distinct} distinct) of"
                                       f" {args.mails}, {left} left in INBOX")
                rows.append((name, f"{empty:.1f}", f"{seconds[name]:.1f}",
                             f"{args.mails / seconds[name]:.1f}",
                             "0 (spooled only)" if name.endswith("--queue-only") else notes))
    finally:
        redmine.stop()
    table(rows, ("contender", "empty mailbox (s)", f"{args.mails} mails (s)", "mails/s",
                 "notes in Redmine"))
    # What any client of the REST API could reach: if the bare loop is not 2x rake, no
    # REST client is.
    ratio("rake receive_imap / bare REST loop (time): the ceiling over REST",
          seconds["rake receive_imap"] / seconds["bare REST loop"])
    ratio("bare REST loop / mailgate fetch (time)",
          seconds["bare REST loop"] / seconds["mailgate fetch"])
    ratio("rake receive_imap / mailgate fetch (time)",
          seconds["rake receive_imap"] / seconds["mailgate fetch"], ">= 2")


if __name__ == "__main__":
    main()
