"""The SMTP listener's spool writer (mailgate.intake.spool_writer), on both stores: the
mails queued since its last commit share the next one, each is answered only after
it, a commit that fails answers each of its mails with the error, and the thread
goes on to the next."""

from __future__ import annotations

import asyncio

import pytest

from mailgate.config import load_config
from mailgate.errors import SpoolBusy
from mailgate.intake.receive import Envelope, Intake
from mailgate.intake.spool_writer import SpoolWriter
from support.configs import write_config


@pytest.fixture
def intake(tmp_path, spool_backend):
    config = write_config(tmp_path / "m.yaml", "http://127.0.0.1:9", "key")
    # No Redmine client: the screen asks no one (as for site-a, whose senders are accepted).
    return Intake(load_config(config, environ={}), None, spool_backend)


def mail(n: int) -> Envelope:
    raw = (f"From: owner@example.org\r\nTo: site-a@example.org\r\nSubject: n{n}\r\n"
           f"Message-ID: <writer-{n}@example.org>\r\n\r\nHello.\r\n").encode()
    return Envelope("owner@example.org", ("site-a@example.org",), raw, "smtp 127.0.0.1")


def commits_of(monkeypatch, spool) -> list[int]:
    """How many mails each commit of ``spool`` holds, from now on."""
    sizes, real = [], spool.add_many

    def counting(mails):
        sizes.append(len(mails))
        return real(mails)

    monkeypatch.setattr(spool, "add_many", counting)
    return sizes


async def queued(writer: SpoolWriter, intake: Intake, count: int) -> list[asyncio.Task]:
    """``count`` mails screened and queued (each task is at its await)."""
    tasks = [asyncio.ensure_future(writer.commit(intake.screen(mail(n), ask=False)))
             for n in range(count)]
    await asyncio.sleep(0)
    return tasks


def test_mails_queued_together_share_one_commit(intake, monkeypatch):
    sizes = commits_of(monkeypatch, intake.spool)

    async def main():
        writer = SpoolWriter(intake, asyncio.get_running_loop())
        tasks = await queued(writer, intake, 5)
        writer.start()
        answers = await asyncio.gather(*tasks)
        await asyncio.to_thread(writer.close)
        return answers

    answers = asyncio.run(main())
    assert sizes == [5]
    ids = [delivery.spool_id for [delivery] in answers]
    assert len(set(ids)) == 5
    assert [intake.spool.get(i).raw for i in ids] == [mail(n).raw for n in range(5)]


def test_close_commits_the_mails_queued_before_it(intake):
    async def main():
        writer = SpoolWriter(intake, asyncio.get_running_loop())
        writer.start()
        tasks = await queued(writer, intake, 3)
        await asyncio.to_thread(writer.close)
        return await asyncio.gather(*tasks)

    answers = asyncio.run(main())
    assert all(delivery.spool_id for [delivery] in answers)
    assert sum(intake.spool.counts().values()) == 3


def test_a_failed_commit_answers_each_of_its_mails_and_the_next_commits(intake, monkeypatch):
    real, calls = intake.spool.add_many, []

    def busy_once(mails):
        calls.append(len(mails))
        if len(calls) == 1:
            raise SpoolBusy("store: database is locked")
        return real(mails)

    monkeypatch.setattr(intake.spool, "add_many", busy_once)

    async def main():
        writer = SpoolWriter(intake, asyncio.get_running_loop())
        failed = await queued(writer, intake, 2)
        writer.start()
        errors = await asyncio.gather(*failed, return_exceptions=True)
        [[delivery]] = await asyncio.gather(*await queued(writer, intake, 1))
        await asyncio.to_thread(writer.close)
        return errors, delivery

    errors, delivery = asyncio.run(main())
    assert [type(e) for e in errors] == [SpoolBusy, SpoolBusy] and calls == [2, 1]
    assert delivery.spool_id and sum(intake.spool.counts().values()) == 1
