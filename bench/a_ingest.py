"""A. SMTP durable ingest: mailgate's listener against a bare aiosmtpd, in one run.

    python bench/a_ingest.py [--rounds 3] [--small 3000] [--big 60] [--sessions 20] [--load ...]
                             [--compare REF] [--base REF] [--quick]

The load generator is its own process: Postfix's smtp-source (C) when it is
installed, else bench/smtp_load.py (asyncio, the same protocol steps): 20
concurrent sessions, each sending mail after mail over its connection
(smtp-source -d), every mail to site-a@example.org.  Each contender is started by this script
as its own process on a fresh directory, loaded, stopped, and checked (the
spool or the Maildir holds exactly the mails sent).  Contenders:

  bare            aiosmtpd whose DATA hook only answers 250 (the ceiling)
  sqlite/mail     + one SQLite WAL synchronous=FULL commit per mail before 250
  maildir+fsync   + the mail written to Maildir tmp/, fsync, rename to new/, fsync new/
  mailgate        mailgate.serve.serve(), the real listener, worker DISABLED
                  (run_worker=False: ingest only; the Redmine URL is a closed port
                  that nothing on this path asks); the working tree's code
  mailgate @REF   with --compare REF: the same, REF's code (exported with git archive)

Rounds interleave the contenders (A B C A B C ...) and the medians are kept.
Sizes: 5 KB mails (text + HTML) and 1 MB mails (a 750 KB attachment).
--quick: one round of 300 small and 10 big mails (proves the bench runs; no figure).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from email.message import EmailMessage
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (TREE, add_compare_option, bench_config, build_gateway,  # noqa: E402
                     code_trees, header, median, ratio, table, tree_env)
from support.processes import ListeningProcess, closed_url, free_port  # noqa: E402

HERE = Path(__file__).resolve().parent
BASELINES = ("bare", "sqlite/mail", "maildir+fsync")
SENDER, RCPT = "support@example.org", "site-a@example.org"


# -- the mails -------------------------------------------------------------------------

def make_mail(size: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Sam Support <{SENDER}>"
    msg["To"] = RCPT
    msg["Subject"] = "The router drops the connection every evening"
    msg["Date"] = "Mon, 23 Nov 2026 09:00:00 +0000"
    msg["Message-ID"] = f"<bench-{size}@load.test>"
    para = ("It happens every evening around eight, on both the 2.4 and 5 GHz bands; "
            "the log shows a DHCP renewal just before.  ")
    if size == "5k":
        text = (para * 18).strip()
        msg.set_content(text)
        msg.add_alternative(f"<html><body><p>{text}</p></body></html>", subtype="html")
    else:
        msg.set_content(para * 4)
        blob = base64.b64encode(os.urandom(570_000)) * 1   # ~760 KB of data, ~1 MB encoded
        msg.add_attachment(blob, maintype="application", subtype="octet-stream",
                           filename="router.log")
    return bytes(msg)


# -- the servers (each runs in its own process: --server KIND) -------------------------

class Bare:
    async def handle_DATA(self, server, session, envelope):
        return "250 2.0.0 OK"


class SqlitePerMail(Bare):
    def __init__(self, directory: Path):
        self.db = sqlite3.connect(directory / "spool.db", isolation_level=None,
                                  check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("CREATE TABLE messages (id INTEGER PRIMARY KEY, received_at REAL,"
                        " mail_from TEXT, rcpt TEXT, raw BLOB)")
        self.lock = threading.Lock()

    def commit(self, mail_from, rcpts, raw):
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            for rcpt in rcpts:
                self.db.execute("INSERT INTO messages (received_at, mail_from, rcpt, raw)"
                                " VALUES (?, ?, ?, ?)", (time.time(), mail_from, rcpt, raw))
            self.db.execute("COMMIT")

    async def handle_DATA(self, server, session, envelope):
        await asyncio.to_thread(self.commit, envelope.mail_from, list(envelope.rcpt_tos),
                                envelope.original_content)
        return "250 2.0.0 OK"


class MaildirFsync(Bare):
    def __init__(self, directory: Path):
        self.root = directory / "Maildir"
        for sub in ("tmp", "new", "cur"):
            (self.root / sub).mkdir(parents=True)
        self.count = 0
        self.lock = threading.Lock()

    def deliver(self, raw: bytes) -> None:
        with self.lock:
            self.count += 1
            name = f"{time.time_ns()}.P{os.getpid()}Q{self.count}.bench"
        tmp = self.root / "tmp" / name
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, self.root / "new" / name)
        dfd = os.open(self.root / "new", os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    async def handle_DATA(self, server, session, envelope):
        await asyncio.to_thread(self.deliver, envelope.original_content)
        return "250 2.0.0 OK"


async def _serve_plain(handler, port: int) -> None:
    from aiosmtpd.smtp import SMTP

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)

    def factory():
        # As mailgate's smtp_factory: hostname given (no getfqdn per connection), bytes.
        return SMTP(handler, hostname="bench.test", data_size_limit=26214400,
                    decode_data=False, loop=loop)

    server = await loop.create_server(factory, "127.0.0.1", port)
    await stop.wait()
    server.close()


def _serve_mailgate(port: int, directory: Path) -> None:
    """The mailgate of this process's tree (BENCH_TREE, see _common) through its public
    functions: load_config, build_gateway, serve(run_worker=False)."""
    import logging

    from mailgate.serve import serve

    # As `mailgate serve` logs: one INFO line per received mail.
    logging.basicConfig(level="INFO", format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for chatty in ("mail.log", "transitions"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    logging.getLogger("bench").info("mailgate from %s", TREE)
    config = bench_config(directory / "mailgate.yaml", closed_url())
    gateway = build_gateway(config)
    asyncio.run(serve(gateway, f"127.0.0.1:{port}", None, run_worker=False))


def run_server(kind: str, port: int, directory: Path) -> None:
    if kind.startswith("mailgate"):
        return _serve_mailgate(port, directory)
    handler = {"bare": lambda: Bare(), "sqlite/mail": lambda: SqlitePerMail(directory),
               "maildir+fsync": lambda: MaildirFsync(directory)}[kind]()
    asyncio.run(_serve_plain(handler, port))


# -- the parent: start, load, stop, check --------------------------------------------------

def stored(kind: str, directory: Path) -> int:
    if not kind.startswith(("sqlite", "maildir", "mailgate")):
        return -1
    if kind == "maildir+fsync":
        return len(os.listdir(directory / "Maildir" / "new"))
    with sqlite3.connect(directory / "spool.db") as db:
        return db.execute("SELECT count(*) FROM messages").fetchone()[0]


def cpu_seconds(pid: int) -> float:
    """utime + stime of a running process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_run(kind: str, tree, mail_file: Path, count: int, sessions: int, work: Path,
            load: str) -> tuple[float, float]:
    """(mails per second, server CPU milliseconds per mail) for one loaded run."""
    directory = Path(tempfile.mkdtemp(prefix="run-", dir=work))
    port = free_port()
    listener = [sys.executable, __file__, "--server", kind, "--port", str(port),
                "--dir", str(directory)]
    with ListeningProcess(listener, port, directory / "server.log", env=tree_env(tree)) as server:
        cpu_before = cpu_seconds(server.process.pid)
        if load == "smtp-source":
            command = ["smtp-source", "-d", "-s", str(sessions), "-m", str(count),
                       "-F", str(mail_file), "-f", SENDER, "-t", RCPT, "-M", "load.test",
                       f"127.0.0.1:{port}"]
        else:
            command = [sys.executable, str(HERE / "smtp_load.py"), "--port", str(port),
                       "--sessions", str(sessions), "--count", str(count),
                       "--file", str(mail_file), "--from", SENDER, "--to", RCPT]
        started = time.perf_counter()
        result = subprocess.run(command, capture_output=True, timeout=170)
        seconds = time.perf_counter() - started
        if result.returncode != 0:
            raise RuntimeError(f"{load} against {kind}: {result.stderr.decode()[-500:]}")
        if load == "smtp_load.py":
            # Its own clock, from the first connection to the last 250 (no interpreter start).
            sent, seconds = result.stdout.split()
            assert int(sent) == count, result.stdout
            seconds = float(seconds)
        cpu = cpu_seconds(server.process.pid) - cpu_before
        server.stop(60)
    got = stored(kind, directory)
    if got not in (-1, count):
        raise RuntimeError(f"{kind}: {got} mails stored, {count} sent; see {directory}")
    shutil.rmtree(directory, ignore_errors=True)
    return count / seconds, cpu * 1000 / count


def bench(size: str, count: int, rounds: int, sessions: int, work: Path, load: str,
          contenders: dict) -> tuple[dict[str, float], dict[str, float]]:
    """contenders: name -> (server kind, tree); (msg/s, server CPU ms per mail) by name."""
    mail_file = work / f"mail-{size}.eml"
    # smtp-source -F appends CRLF to each line: give it LF line ends.
    mail_file.write_bytes(make_mail(size).replace(b"\r\n", b"\n"))
    rates: dict[str, list[float]] = {k: [] for k in contenders}
    cpus: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(rounds):
        for name, (kind, tree) in contenders.items():
            rate, cpu = one_run(kind, tree, mail_file, count, sessions, work, load)
            rates[name].append(rate)
            cpus[name].append(cpu)
    result = {k: median(v) for k, v in rates.items()}
    cpu = {k: median(v) for k, v in cpus.items()}
    rows = [(k, f"{result[k]:,.0f}", " ".join(f"{r:,.0f}" for r in rates[k]),
             f"{result[k] / result['bare']:.2f}", f"{cpu[k]:.2f}",
             f"{cpu['bare'] / cpu[k]:.2f}") for k in contenders]
    print(f"\n{size} mails ({mail_file.stat().st_size:,} bytes), {count} per run,"
          f" {sessions} sessions, {rounds} rounds, load: {load}")
    table(rows, ("contender", "msg/s (median)", "each round", "x bare",
                 "server CPU ms/mail", "bare CPU / CPU"))
    return result, cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--server")
    parser.add_argument("--port", type=int)
    parser.add_argument("--dir", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--small", type=int, default=3000, help="5 KB mails per run")
    parser.add_argument("--big", type=int, default=60, help="1 MB mails per run")
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--load", choices=("auto", "smtp-source", "smtp_load.py"),
                        default="auto", help="the load generator (auto: smtp-source if"
                        " installed, else bench/smtp_load.py, an asyncio client)")
    add_compare_option(parser)
    parser.add_argument("--quick", action="store_true",
                        help="one round, 300 small and 10 big mails, 5 sessions: proves it runs")
    args = parser.parse_args()
    if args.server:
        return run_server(args.server, args.port, args.dir)
    if args.quick:
        args.rounds, args.small, args.big, args.sessions = 1, 300, 10, 5
    load = args.load
    if load == "auto":
        load = "smtp-source" if shutil.which("smtp-source") else "smtp_load.py"
    with tempfile.TemporaryDirectory(prefix="bench-a-", dir=os.environ.get("BENCH_TMP")) as tmp:
        work = Path(tmp)
        trees = code_trees(args, work)
        header("A. SMTP durable ingest (smtp-source -> listener; 250 only after the commit)",
               trees)
        contenders = {kind: (kind, None) for kind in BASELINES}
        contenders.update({f"mailgate{tree.label}": ("mailgate", tree) for tree in trees})
        big, big_cpu = bench("1m", args.big, args.rounds, args.sessions, work, load, contenders)
        small, small_cpu = bench("5k", args.small, args.rounds, args.sessions, work, load,
                                 contenders)
    print()
    for size, result in (("1 MB", big), ("5 KB", small)):
        for kind in list(contenders)[1:]:
            if kind != "mailgate":
                ratio(f"{size} {kind} / bare", result[kind] / result["bare"])
    for tree in trees[1:]:
        for size, result, cpu in (("1 MB", big, big_cpu), ("5 KB", small, small_cpu)):
            ratio(f"{size} mailgate msg/s: {trees[0].name} / {tree.name}",
                  result["mailgate"] / result["mailgate" + tree.label])
            ratio(f"{size} mailgate server CPU per mail: {trees[0].name} / {tree.name}",
                  cpu["mailgate"] / cpu["mailgate" + tree.label])
    ratio("1 MB mailgate / bare aiosmtpd", big["mailgate"] / big["bare"], ">= 0.8")
    ratio("5 KB mailgate / bare aiosmtpd", small["mailgate"] / small["bare"], ">= 0.8")


if __name__ == "__main__":
    main()
