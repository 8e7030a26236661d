"""An SMTP load generator in its own process, for when Postfix's smtp-source is not installed.

    python bench/smtp_load.py --port P --sessions 20 --count N --file MAIL --from A --to B

Like ``smtp-source -d``: SESSIONS connections, each EHLO once, then mail after
mail (MAIL, RCPT, DATA, the dot-stuffed message) until COUNT mails are sent in
all, then QUIT.  Any answer that is not the expected 2xx/354 aborts the run
(exit 1), so a number is only printed for a run where every mail got its 250.
Prints one line: ``sent SECONDS``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time


def smtp_data(raw: bytes) -> bytes:
    lines = raw.replace(b"\r\n", b"\n").split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    stuffed = [b"." + line if line.startswith(b".") else line for line in lines]
    return b"\r\n".join(stuffed) + b"\r\n.\r\n"


async def _reply(reader: asyncio.StreamReader, expect: bytes) -> None:
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("server closed the connection")
        if line[3:4] != b"-":
            break
    if not line.startswith(expect):
        raise RuntimeError(f"expected {expect.decode()}, got {line.decode().strip()}")


async def session(port: int, left: list[int], data: bytes, sender: str, rcpt: str) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2 ** 20)
    await _reply(reader, b"220")
    writer.write(b"EHLO load.test\r\n")
    await _reply(reader, b"250")
    sent = 0
    mail_from, rcpt_to = f"MAIL FROM:<{sender}>\r\n".encode(), f"RCPT TO:<{rcpt}>\r\n".encode()
    while left[0] > 0:
        left[0] -= 1
        writer.write(mail_from)
        await _reply(reader, b"250")
        writer.write(rcpt_to)
        await _reply(reader, b"250")
        writer.write(b"DATA\r\n")
        await _reply(reader, b"354")
        writer.write(data)
        await _reply(reader, b"250")
        sent += 1
    writer.write(b"QUIT\r\n")
    await _reply(reader, b"221")
    writer.close()
    return sent


async def run(port: int, sessions: int, count: int, data: bytes, sender: str,
              rcpt: str) -> tuple[int, float]:
    left = [count]
    started = time.perf_counter()
    sent = await asyncio.gather(*(session(port, left, data, sender, rcpt)
                                  for _ in range(sessions)))
    return sum(sent), time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--file", required=True)
    parser.add_argument("--from", dest="sender", default="support@example.org")
    parser.add_argument("--to", dest="rcpt", default="site-a@example.org")
    args = parser.parse_args()
    with open(args.file, "rb") as f:
        data = smtp_data(f.read())
    try:
        sent, seconds = asyncio.run(run(args.port, args.sessions, args.count, data,
                                        args.sender, args.rcpt))
    except (OSError, RuntimeError) as exc:
        print(f"smtp_load: {exc}", file=sys.stderr)
        return 1
    print(f"{sent} {seconds:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
