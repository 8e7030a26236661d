"""D. Peak memory for one 25 MB mail (one 18 MB file, 24.9 MB base64-encoded), in one run.

    python bench/d_rss.py

Each stage runs in a fresh child process: imports and setup first, then the
peak-RSS mark is reset (``echo 5 > /proc/PID/clear_refs``) and the baseline
taken (VmRSS); the mail is read from disk and handled; the figure is
(VmHWM - baseline) / mail size.  Reading the mail counts: the raw bytes are
1.0x of it.  Stages:

  read only              the raw bytes alone (the floor: 1.0x)
  stdlib compat32        email.message_from_bytes + every leaf's get_payload(decode=True)
  stdlib policy.default  BytesParser(policy=default) + get_content() of each attachment
  mail-parser            mailparser.parse_from_bytes (if installed)
  mailgate parse_mail    mailgate.message.parse_mail
  parse_mail (proposed)  parse_mail with big base64 leaves decoded straight from the raw
                         bytes (bench/proposals.py: apply_bytes_leaves)
  Gateway.receive        parse + route + the SQLite spool commit (worker's side not run)
  receive + worker       the above, then Worker.run_once: claim, parse again, plan, up
                         to the first Redmine call (a closed port: deferred)
  ... (proposed)         the same with the header block only parsed at receive, big
                         base64 leaves decoded from the raw bytes (d-1-parse-big-leaves)
                         and claim reading the raw mail through a blob handle
                         (d-2-claim-blob-read); no schema change
  ... (+ bodies table)   and the raw mail in a table of its own, bodies(id, raw), written
                         with zeroblob + a blob handle (SQLite builds an INSERT's whole
                         record in memory: 2x the mail; zeroblob avoids it only for the
                         last column of a table, which messages.raw is not)
  (With d-1 and d-2 in mailgate, as since eed9613, the "(proposed)" stages are left
  out and the bodies-table ones are named "(+ bodies table)": the schema change alone.)
  SMTP: bare aiosmtpd    a bare aiosmtpd process receiving the mail over SMTP (smtplib)
  SMTP: mailgate serve   mailgate's listener (worker disabled) receiving it; its peak
                         above its idle RSS; (proposed + bodies table): header block
                         only at receive, and the raw mail written through a blob handle
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import smtplib
import subprocess
import sys
import tempfile
from email.message import EmailMessage
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (child_env, closed_url, free_port, header, ratio, table,  # noqa: E402
                     wait_port, write_config)

ATTACHMENT_BYTES = 18_200_000


def make_mail(path: Path) -> None:
    msg = EmailMessage()
    msg["From"] = "Olive Owner <owner@example.org>"
    msg["To"] = "site-a@example.org"
    msg["Subject"] = "The router's full log"
    msg["Message-ID"] = "<bench-d-25mb@load.test>"
    msg.set_content("The whole log of last night is attached.\n")
    msg.add_attachment(os.urandom(ATTACHMENT_BYTES), maintype="application",
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
    from mailgate.config import load_config
    from mailgate.dispatch import build_gateway

    config = write_config(work / "mailgate.yaml", closed_url())
    return build_gateway(load_config(config, environ={}))


def run_stage(stage: str, mail_path: Path, work: Path) -> dict:
    import gc

    from mailgate.dispatch import Envelope
    from mailgate.message import parse_mail
    from mailgate.worker import Worker

    keep = []
    op = None
    if stage == "stdlib compat32":
        op = _walk_compat32
    elif stage == "stdlib policy.default":
        op = _walk_default
    elif stage == "mail-parser":
        op = _mailparser
    elif stage == "mailgate parse_mail":
        op = parse_mail
    elif stage == "parse_mail (proposed)":
        import proposals

        proposals.apply_bytes_leaves()
        from mailgate import message

        op = message.parse_mail
    elif stage.startswith(("Gateway.receive", "receive + worker")):
        if "proposed" in stage or "bodies" in stage:
            import proposals

            proposals.apply_bytes_leaves()
            proposals.apply_head_only_receive_call()
            if "bodies" in stage:
                proposals.apply_blob_io()
            else:
                proposals.apply_claim_blob()
        gateway = _gateway(work)

        def op(raw):
            envelope = Envelope("owner@example.org", ("site-a@example.org",), raw)
            result = gateway.receive(envelope)
            if stage.startswith("receive + worker"):
                result = [result, Worker(gateway).run_once()]
            return result
    gc.collect()
    base = reset_peak()
    raw = mail_path.read_bytes()
    if op is not None:
        keep.append(op(raw))
    peak = status()["VmHWM"]
    return {"size": len(raw), "extra": peak - base}


def smtp_stage(kind: str, mail_path: Path, work: Path) -> dict:
    """A listener process receiving the mail over SMTP: its peak above its idle RSS."""
    port = free_port()
    server_kind = ("bare" if kind.endswith("bare aiosmtpd") else
                   "mailgate+hdr+blob" if "proposed" in kind or "bodies" in kind
                   else "mailgate")
    directory = Path(tempfile.mkdtemp(dir=work))
    log = open(directory / "server.log", "wb")
    server = subprocess.Popen([sys.executable, str(Path(__file__).parent / "a_ingest.py"),
                               "--server", server_kind, "--port", str(port),
                               "--dir", str(directory)], stdout=log, stderr=log,
                              env=child_env())
    try:
        wait_port(port, process=server)
        raw = mail_path.read_bytes()
        base = reset_peak(server.pid)
        with smtplib.SMTP("127.0.0.1", port, timeout=120) as client:
            client.sendmail("owner@example.org", ["site-a@example.org"], raw)
        peak = status(server.pid)["VmHWM"]
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)
        log.close()
    return {"size": len(raw), "extra": peak - base}


STAGES = ("read only", "stdlib compat32", "stdlib policy.default", "mail-parser",
          "mailgate parse_mail", "parse_mail (proposed)", "Gateway.receive",
          "Gateway.receive (proposed)", "Gateway.receive (proposed + bodies table)",
          "receive + worker", "receive + worker (proposed)",
          "receive + worker (proposed + bodies table)",
          "SMTP: bare aiosmtpd", "SMTP: mailgate serve",
          "SMTP: mailgate serve (proposed + bodies table)")


def stages() -> tuple[str, ...]:
    """STAGES, less what is already mailgate's own: with d-1 and d-2 in the code
    (eed9613) the "(proposed)" stages would only repeat the as-is ones, and the
    bodies-table stages become "(+ bodies table)": the schema change alone."""
    import proposals

    if not (proposals.in_code("d-1") and proposals.in_code("d-2")):
        return STAGES
    print("# d-1 and d-2 are in mailgate: the (proposed) stages are left out")
    return tuple(s.replace("(proposed + bodies table)", "(+ bodies table)")
                 for s in STAGES if "proposed" not in s or "bodies" in s)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stage")
    parser.add_argument("--mail", type=Path)
    parser.add_argument("--work", type=Path)
    args = parser.parse_args()
    if args.stage:
        print(json.dumps(run_stage(args.stage, args.mail, args.work)))
        return
    header("D. Peak RSS above the process baseline for one 25 MB mail")
    from importlib.util import find_spec

    rows, results = [], {}
    with tempfile.TemporaryDirectory(prefix="bench-d-") as tmp:
        work = Path(tmp)
        mail = work / "25mb.eml"
        make_mail(mail)
        for stage in stages():
            if stage == "mail-parser" and find_spec("mailparser") is None:
                continue
            if stage.startswith("SMTP"):
                result = smtp_stage(stage, mail, work)
            else:
                out = subprocess.run([sys.executable, __file__, "--stage", stage, "--mail",
                                      str(mail), "--work", str(work)], capture_output=True,
                                     text=True, env=child_env(), timeout=170)
                if out.returncode != 0:
                    rows.append((stage, "failed", out.stderr.strip().splitlines()[-1][:80], ""))
                    continue
                result = json.loads(out.stdout.strip().splitlines()[-1])
            results[stage] = result["extra"] / result["size"]
            rows.append((stage, f"{result['size'] / 1e6:.1f}", f"{result['extra'] / 1e6:.1f}",
                         f"{results[stage]:.2f}"))
    print(f"\nmail: {results and rows[0][1]} MB, one attachment of {ATTACHMENT_BYTES / 1e6:.1f} MB")
    table(rows, ("stage", "mail MB", "peak above baseline MB", "x mail"))
    print()
    for stage in ("stdlib compat32", "mailgate parse_mail", "parse_mail (proposed)",
                  "SMTP: bare aiosmtpd", "SMTP: mailgate serve",
                  "SMTP: mailgate serve (proposed + bodies table)",
                  "SMTP: mailgate serve (+ bodies table)", "receive + worker",
                  "Gateway.receive (proposed)", "Gateway.receive (proposed + bodies table)",
                  "Gateway.receive (+ bodies table)", "receive + worker (proposed)",
                  "receive + worker (proposed + bodies table)",
                  "receive + worker (+ bodies table)"):
        if stage in results:
            ratio(f"{stage} peak / mail", results[stage])
    ratio("mailgate receive + worker parse peak / mail (as it is)", results["receive + worker"],
          "<= 3")


if __name__ == "__main__":
    main()
