"""The SMTP listener's spool writer: one thread commits what the event loop screened.

A thread hop per mail costs about as much CPU as aiosmtpd's whole session
(docs/performance.md, A).  So the listener screens a mail on its event loop
(``Intake.screen``) and queues it here; this thread commits every mail queued
since its last commit in one transaction (``Intake.commit``), then wakes the
loop once for all of them.  Each session still answers only when its future is
resolved, after the COMMIT that holds its mail: 250 still means "on disk".

The thread never dies of a failed commit: every mail of that batch gets the
error (the session answers 451) and the next batch is tried afresh.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from typing import Callable

from mailgate.intake.receive import Delivery, Intake, Screened

log = logging.getLogger("mailgate.intake.spool_writer")

#: What close() waits for the thread to commit the mails already queued.
CLOSE_SECONDS = 30.0


class SpoolWriter:
    def __init__(self, intake: Intake, loop: asyncio.AbstractEventLoop,
                 on_spooled: Callable[[], None] = lambda: None):
        self.intake = intake
        self.loop = loop
        #: Called in the writer's thread after each commit (wakes the spool's worker).
        self.on_spooled = on_spooled
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="spool-writer", daemon=True)

    def start(self) -> None:
        """Start committing (mails queued before wait for it)."""
        self._thread.start()

    async def commit(self, screened: Screened) -> list[Delivery]:
        """Spool a screened mail durably; its deliveries, once its COMMIT returned."""
        done = self.loop.create_future()
        self._queue.put((screened, done))
        return await done

    def close(self) -> None:
        """Commit what is queued, then stop the thread (blocks: call it in a thread)."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(CLOSE_SECONDS)

    def _run(self) -> None:
        while True:
            batch, stop = self._take()
            if batch:
                self._commit(batch)
            if stop:
                return

    def _take(self) -> tuple[list, bool]:
        """Everything queued: waits for the first, then takes the rest without waiting.
        True with it when close() was asked."""
        batch = [self._queue.get()]
        while True:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        stop = None in batch
        return [item for item in batch if item is not None], stop

    def _commit(self, batch: list) -> None:
        committed = False
        try:
            answers = self.intake.commit([screened for screened, _ in batch])
            committed = True
        except BaseException as exc:   # noqa: BLE001 - each mail of the batch gets it: 451
            log.warning("spool commit of %d mails failed: %r", len(batch), exc)
            answers = [exc] * len(batch)
        try:
            # One wake-up of the loop for the whole batch.
            self.loop.call_soon_threadsafe(_resolve, [done for _, done in batch], answers)
        except RuntimeError:
            log.error("event loop closed: %d mails committed without an answer", len(batch))
        if committed:
            self._spooled()

    def _spooled(self) -> None:
        try:
            self.on_spooled()
        except Exception:   # noqa: BLE001 - the mail is safe; the worker also polls
            log.exception("waking the spool's worker failed")


def _resolve(futures: list[asyncio.Future], answers: list) -> None:
    """On the loop: each session's answer (a session gone meanwhile has none to get)."""
    for done, answer in zip(futures, answers):
        if done.done():
            continue
        if isinstance(answer, BaseException):
            done.set_exception(answer)
        else:
            done.set_result(answer)
