"""The real Dovecot of scripts/dovecot-local, and a fresh mailbox on it per test.

``dovecot`` is the running instance (started here when scripts/test did not
start it); ``Mailbox`` is one test user's mailbox, filled with IMAP APPEND
and read back with IMAPClient, as a person's mail client would.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from imapclient import IMAPClient
from imapclient.exceptions import LoginError

from tests.helpers import ROOT

DOVECOT_LOCAL = ROOT / "scripts" / "dovecot-local"


@dataclass(frozen=True)
class Dovecot:
    host: str
    port: int               # plain and STARTTLS
    imaps_port: int         # implicit TLS
    ca_file: str            # the instance's self-signed certificate
    dir: str

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run([str(DOVECOT_LOCAL), *args], capture_output=True, text=True,
                                timeout=300)
        if check and result.returncode != 0:
            raise AssertionError(f"scripts/dovecot-local {' '.join(args)}: exit "
                                 f"{result.returncode}\n{result.stderr}")
        return result

    def new_mailbox(self) -> "Mailbox":
        user = f"t-{uuid.uuid4().hex[:10]}"
        password = uuid.uuid4().hex
        self.run("adduser", self.dir, user, password)
        mailbox = Mailbox(self, user, password)
        # Dovecot looks at its passwd-file at most once a second: a user added in the
        # second of the last login is known from the next one.
        deadline = time.monotonic() + 5
        while True:
            try:
                with mailbox.client():
                    return mailbox
            except LoginError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def restart(self) -> None:
        self.run("stop", self.dir)
        self.run("start", self.dir, str(self.port))


def start_dovecot() -> Dovecot | str:
    """The instance scripts/test started, else one started now; a reason if none can be."""
    env = dict(os.environ)
    if not env.get("MAILGATE_TEST_IMAP_PORT"):
        if os.geteuid() != 0:
            return "the IMAP tests need root to run scripts/dovecot-local"
        started = subprocess.run([str(DOVECOT_LOCAL), "start"], capture_output=True,
                                 text=True, timeout=600)
        if started.returncode != 0:
            return f"scripts/dovecot-local start failed:\n{started.stderr}"
        env.update(line.split("=", 1) for line in started.stdout.splitlines() if "=" in line)
    return Dovecot(env["MAILGATE_TEST_IMAP_HOST"], int(env["MAILGATE_TEST_IMAP_PORT"]),
                   int(env["MAILGATE_TEST_IMAPS_PORT"]), env["MAILGATE_TEST_IMAP_CA"],
                   env["MAILGATE_TEST_IMAP_DIR"])


@dataclass(frozen=True)
class Mailbox:
    dovecot: Dovecot
    user: str
    password: str

    def settings(self, tmp_path: Path, **overrides) -> dict:
        """This mailbox as an ``imap.mailboxes`` entry (plain IMAP on loopback)."""
        secret = tmp_path / f"{self.user}.password"
        secret.write_text(self.password + "\n")
        return {"name": "support", "host": self.dovecot.host, "port": self.dovecot.port,
                "tls": "none", "user": self.user, "password_file": str(secret),
                "poll_interval": 30, **overrides}

    @contextmanager
    def client(self):
        client = IMAPClient(self.dovecot.host, self.dovecot.port, ssl=False, timeout=30)
        client.login(self.user, self.password)
        try:
            yield client
        finally:
            client.logout()

    def append(self, *mails: bytes, folder: str = "INBOX") -> list[int | None]:
        """APPEND each mail; its UID (None where the server refused the mail)."""
        uids = []
        with self.client() as client:
            for raw in mails:
                try:
                    said = client.append(folder, raw)
                except Exception:       # noqa: BLE001 - Dovecot refuses a 0-byte mail
                    uids.append(None)
                    continue
                found = re.search(rb"APPENDUID \d+ (\d+)", said)
                uids.append(int(found.group(1)) if found else None)
        return uids

    def message_ids(self, folder: str = "INBOX") -> list[str]:
        """The Message-ID of every mail in ``folder``, in UID order ("" when it has none)."""
        with self.client() as client:
            if not client.folder_exists(folder):
                return []
            client.select_folder(folder, readonly=True)
            found = client.fetch(client.search(["ALL"]),
                                 ["BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"])
        ids = []
        for uid in sorted(found):
            header = found[uid][b"BODY[HEADER.FIELDS (MESSAGE-ID)]"].decode()
            ids.append(header.partition(":")[2].strip())
        return ids

    def flags(self, folder: str = "INBOX") -> dict[int, tuple]:
        with self.client() as client:
            client.select_folder(folder, readonly=True)
            return dict(client.get_flags(client.search(["ALL"])))

    def uidvalidity(self, folder: str = "INBOX") -> int:
        with self.client() as client:
            return int(client.folder_status(folder, ["UIDVALIDITY"])[b"UIDVALIDITY"])
