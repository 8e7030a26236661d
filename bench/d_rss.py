"""D. Peak memory for one 25 MB mail (one 18 MB file, 24.9 MB base64-encoded), in one run.

    python bench/d_rss.py [--compare REF] [--base REF] [--quick]

Each stage runs in a fresh child process: imports and setup first, then the
peak-RSS mark is reset (``echo 5 > /proc/PID/clear_refs``) and the baseline
taken (VmRSS); the mail is read from disk and handled; the figure is
(VmHWM - baseline) / mail size.  Reading the mail counts: the raw bytes are
1.0x of it.  Stages:

  read only              the raw bytes alone (the floor: 1.0x)
  stdlib compat32        email.message_from_bytes + every leaf's get_payload(decode=True)
  stdlib policy.default  BytesParser(policy=default) + get_content() of each attachment
  mail-parser            mailparser.parse_from_bytes (if installed)
  mailgate parse_mail    mailgate.mail.message.parse_mail
  Gateway.receive        parse + route + the SQLite spool commit (worker's side not run)
  receive + worker       the above, then Worker.run_once: claim, parse again, plan, up
                         to the first Redmine call (a closed port: deferred)
  SMTP: bare aiosmtpd    a bare aiosmtpd process receiving the mail over SMTP (smtplib)
  SMTP: mailgate serve   mailgate's listener (mailgate.serve.serve, worker disabled)
                         receiving it; its peak above its idle RSS

The mailgate stages run the working tree's code, and with --compare REF each
runs again on REF's code (exported with git archive), named "... @REF"; the
ratios working tree / REF follow.  --base REF measures REF in place of the
working tree.  --quick: a 2 MB attachment instead of 18 MB (proves it runs).
"""

from __future__ import annotations

import argparse
import json
import os
import smtplib
import subprocess
import sys
import tempfile
from email.message import EmailMessage
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (add_compare_option, bench_config, build_gateway, code_trees,  # noqa: E402
                     header, public, ratio, table, tree_env)
from support.processes import ListeningProcess, closed_url, free_port  # noqa: E402

ATTACHMENT_BYTES = 18_200_000


def make_mail(path: Path, attachment_bytes: int = ATTACHMENT_BYTES) -> None:
    msg = EmailMessage()
    msg["From"] = "Olive Owner <owner@example.org>"
    msg["To"] = "site-a@example.org"
    msg["Subject"] = "The router's full log"
    msg["Message-ID"] = "<bench-d-25mb@load.test>"
    msg.set_content("The whole log of last night is attached.\n")
    msg.add_attachment(os.urandom(attachment_bytes), maintype="application",
                       subtype="octet-stream", filename="router.log")
    # As on the wire (and as aiosmtpd hands it over): CRLF line ends.
    path.write_bytes(bytes(msg).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))


def status(pid: int | str = "self") -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


def reset_peak(pid: int | str = "self") -> int:
    """Reset VmHWM to the current RSS and return that RSS (the baseline)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return status(pid)["VmRSS"]


# -- stages (run in a child: --stage NAME) -------------------------------------------------

def _walk_compat32(raw):
    import email

    message = email.message_from_bytes(raw)
    return [part.get_payload(decode=True) for part in message.walk()
            if not part.is_multipart()]


def _walk_default(raw):
    from email import policy
    from email.parser import BytesParser

    message = BytesParser(policy=policy.default).parsebytes(raw)
    body = message.get_body(("plain", "html"))
    return [body.get_content() if body else None,
            [a.get_content() for a in message.iter_attachments()]]


def _mailparser(raw):
    import mailparser

    return mailparser.parse_from_bytes(raw)


def _gateway(work: Path):
    return build_gateway(bench_config(work / "mailgate.yaml", closed_url()))


def run_stage(stage: str, mail_path: Path, work: Path) -> dict:
    """One stage in this process; mailgate is the one of this process's tree (BENCH_TREE)."""
    import gc

    keep = []
    op = None
    if stage == "stdlib compat32":
        op = _walk_compat32
    elif stage == "stdlib policy.default":
        op = _walk_default
    elif stage == "mail-parser":
        op = _mailparser
    elif stage == "mailgate parse_mail":
        parse_mail = public("parse_mail", "mailgate.mail.message", "mailgate.message")

        op = parse_mail
    elif stage in ("Gateway.receive", "receive + worker"):
        from mailgate.worker import Worker

        Envelope = public("Envelope", "mailgate.intake.receive", "mailgate.dispatch")

        work = Path(tempfile.mkdtemp(dir=work))
        gateway = _gateway(work)

        def op(raw):
            envelope = Envelope("owner@example.org", ("site-a@example.org",), raw)
            result = gateway.receive(envelope)
            if stage == "receive + worker":
                result = [result, Worker(gateway).run_once()]
            return result
    elif stage != "read only":
        raise SystemExit(f"no stage {stage!r}")
    gc.collect()
    base = reset_peak()
    raw = mail_path.read_bytes()
    if op is not None:
        keep.append(op(raw))
    peak = status()["VmHWM"]
    return {"size": len(raw), "extra": peak - base}


def smtp_stage(kind: str, tree, mail_path: Path, work: Path) -> dict:
    """A listener process receiving the mail over SMTP: its peak above its idle RSS.
    The listeners are bench/a_ingest.py's (--server bare|mailgate)."""
    port = free_port()
    server_kind = "bare" if kind.endswith("bare aiosmtpd") else "mailgate"
    directory = Path(tempfile.mkdtemp(dir=work))
    listener = [sys.executable, str(Path(__file__).parent / "a_ingest.py"),
                "--server", server_kind, "--port", str(port), "--dir", str(directory)]
    with ListeningProcess(listener, port, directory / "server.log", env=tree_env(tree)) as server:
        raw = mail_path.read_bytes()
        base = reset_peak(server.process.pid)
        with smtplib.SMTP("127.0.0.1", port, timeout=120) as client:
            client.sendmail("owner@example.org", ["site-a@example.org"], raw)
        peak = status(server.process.pid)["VmHWM"]
        server.stop(60)
    return {"size": len(raw), "extra": peak - base}


STAGES = ("read only", "stdlib compat32", "stdlib policy.default", "mail-parser")
MAILGATE_STAGES = ("mailgate parse_mail", "Gateway.receive", "receive + worker",
                   "SMTP: mailgate serve")


def stages(trees) -> list[tuple[str, str, object]]:
    """(name shown, stage run, tree) in the order run: the baselines, then each mailgate
    stage for each tree, side by side."""
    out = [(stage, stage, None) for stage in STAGES]
    out.append(("SMTP: bare aiosmtpd", "SMTP: bare aiosmtpd", None))
    for stage in MAILGATE_STAGES:
        out += [(stage + tree.label, stage, tree) for tree in trees]
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stage")
    parser.add_argument("--mail", type=Path)
    parser.add_argument("--work", type=Path)
    add_compare_option(parser)
    parser.add_argument("--quick", action="store_true",
                        help="a 2 MB attachment instead of 18 MB (proves it runs)")
    args = parser.parse_args()
    if args.stage:
        print(json.dumps(run_stage(args.stage, args.mail, args.work)))
        return
    from importlib.util import find_spec

    rows, results = [], {}
    with tempfile.TemporaryDirectory(prefix="bench-d-") as tmp:
        work = Path(tmp)
        trees = code_trees(args, work)
        attachment = 2_000_000 if args.quick else ATTACHMENT_BYTES
        header(f"D. Peak RSS above the process baseline for one"
               f" {'small (--quick)' if args.quick else '25 MB'} mail", trees)
        mail = work / "mail.eml"
        make_mail(mail, attachment)
        for name, stage, tree in stages(trees):
            if stage == "mail-parser" and find_spec("mailparser") is None:
                continue
            if stage.startswith("SMTP"):
                result = smtp_stage(stage, tree, mail, work)
            else:
                out = subprocess.run([sys.executable, __file__, "--stage", stage, "--mail",
                                      str(mail), "--work", str(work)], capture_output=True,
                                     text=True, env=tree_env(tree), timeout=170)
                if out.returncode != 0:
                    rows.append((name, "failed", out.stderr.strip().splitlines()[-1][:80], ""))
                    continue
                result = json.loads(out.stdout.strip().splitlines()[-1])
            results[name] = result["extra"] / result["size"]
            rows.append((name, f"{result['size'] / 1e6:.1f}", f"{result['extra'] / 1e6:.1f}",
                         f"{results[name]:.2f}"))
    print(f"\nmail: {rows[0][1]} MB,"
          f" one attachment of {attachment / 1e6:.1f} MB")
    table(rows, ("stage", "mail MB", "peak above baseline MB", "x mail"))
    print()
    for stage in ("stdlib compat32", "SMTP: bare aiosmtpd"):
        if stage in results:
            ratio(f"{stage} peak / mail", results[stage])
    for tree in trees[1:]:
        for stage in MAILGATE_STAGES:
            if stage in results and stage + tree.label in results:
                ratio(f"{stage} peak: {trees[0].name} / {tree.name}",
                      results[stage] / results[stage + tree.label])
    for stage in ("mailgate parse_mail", "Gateway.receive", "SMTP: mailgate serve"):
        if stage in results:
            ratio(f"{stage} peak / mail", results[stage])
    ratio("mailgate receive + worker parse peak / mail", results["receive + worker"], "<= 3")


if __name__ == "__main__":
    main()
