"""Outcome delivery: the outcomes of finished handlers, owed until the database takes them.

A task of its own sends them with finish_jobs (through the job manager) on a connection
of its own, in batches: once `flush_size` are owed or `flush_delay` seconds after the
previous batch began, so a claim and a delivery run side by side on two backends. An
outcome leaves the owed set only on finish_jobs' answer, and only then is it counted
(Stats): recorded, or fenced when the claim was no longer this worker's.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import psycopg

from .connection import first_line
from .connector import Connector, close_quietly, connection_lost, is_transient
from .jobmanager import JobManager
from .metrics import Stats
from .outcome import Outcome
from .timing import Backoff, Wakeup

if TYPE_CHECKING:
    from .worker import WorkerOptions

log = logging.getLogger("pgjobs.worker")


class Owed:
    """An outcome the database has not taken yet (one per finished handler)."""

    __slots__ = ("outcome", "retry", "alone", "plain")

    def __init__(self, outcome: Outcome):
        self.outcome = outcome
        # Made at the first refusal or busy answer; until then always due.
        self.retry: Backoff | None = None
        # Refused with an error before: sent on its own, so it cannot hold up a batch.
        self.alone = False
        # Already the plain failure that replaced an outcome the database refused.
        self.plain = False

    @property
    def key(self) -> tuple[int, int]:
        return self.outcome.job.id, self.outcome.job.attempts

    def due(self, now: float) -> bool:
        return self.retry is None or self.retry.due(now)

    def backoff(self) -> Backoff:
        if self.retry is None:
            self.retry = Backoff()
        return self.retry


class Delivery:
    """The owed outcomes of one worker and the task that delivers them."""

    def __init__(self, connector: Connector, jobs: JobManager, options: WorkerOptions,
                 stats: Stats, stopping: Callable[[], bool], on_taken: Callable[[], None]):
        self.connector = connector
        self.jobs = jobs
        self.options = options
        self.worker_id = options.worker_id
        self.stats = stats
        self._stopping = stopping
        # Called after a delivery the database took something from (a queue's slot may
        # be free again).
        self._on_taken = on_taken
        self.owed: dict[tuple[int, int], Owed] = {}
        # Wakes the delivery task: an outcome is owed (or flush_size of them are).
        self._owed_event = Wakeup()
        self._owed_full = Wakeup()

    def __len__(self) -> int:
        return len(self.owed)

    def job_ids(self) -> set[int]:
        return {job_id for job_id, _ in self.owed}

    def owe(self, outcome: Outcome) -> None:
        owed = Owed(outcome)
        self.owed[owed.key] = owed
        self._owed_event.set()
        if len(self.owed) >= self.options.flush_size:
            self._owed_full.set()

    def hurry(self) -> None:
        """Deliver what is owed without waiting for flush_delay (the shutdown)."""
        self._owed_event.set()

    async def run(self) -> None:
        """Deliver owed outcomes on a connection of its own, (re)connected here: once
        flush_size are owed or flush_delay seconds after the previous delivery began (at
        once if it took longer). Nothing but an asyncio cancel ends this loop."""
        conn: psycopg.AsyncConnection | None = None
        delay = 0.05
        began = 0.0
        o = self.options
        try:
            while True:
                self._owed_event.clear()
                now = time.monotonic()
                if not any(owed.due(now) for owed in self.owed.values()):
                    await self._owed_event.wait(self._next_due() - now)
                    continue
                if (len(self.owed) < o.flush_size and now < began + o.flush_delay
                        and not self._stopping()):
                    self._owed_full.clear()
                    await self._owed_full.wait(began + o.flush_delay - now)
                began = time.monotonic()
                try:
                    if conn is None or conn.closed or conn.broken:
                        await close_quietly(conn)
                        conn = None
                        conn = await self.connector.open_session("pgjobs-deliver")
                        await self.jobs.look_up_finish_arrays(conn)
                    taken = await self._flush(conn)
                    delay = 0.05
                    if taken:
                        self._on_taken()
                except psycopg.Error as exc:
                    # _flush handles the database refusing an outcome itself.
                    if connection_lost(conn, exc):
                        log.warning("worker %s: delivery connection lost (retry in %.2f s): "
                                    "%s", self.worker_id, delay, first_line(exc))
                        await close_quietly(conn)
                        conn = None
                    else:
                        self.jobs.refused("finish_jobs", exc, then=f"retry in {delay:.2f} s")
                    await asyncio.sleep(delay * (0.5 + random.random()))
                    delay = min(delay * 2, o.reconnect_max_delay)
                except Exception:  # noqa: BLE001 - delivery must go on whatever happens
                    log.exception("worker %s: delivering outcomes failed", self.worker_id)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, o.reconnect_max_delay)
        finally:
            await close_quietly(conn)

    def _next_due(self) -> float:
        """When the first outcome backing off comes due (inf: none owed)."""
        return min((o.retry.at for o in self.owed.values() if o.retry is not None),
                   default=float("inf"))

    async def _flush(self, conn: psycopg.AsyncConnection) -> int:
        """Deliver the owed outcomes that are due; how many the database took.

        Fresh outcomes go in one finish_jobs call; one the database refused before goes
        on its own, and so does each outcome of a refused batch. Per outcome, a transient
        refusal keeps it owed (tried again after a backoff) and any other makes it a plain
        failure, so that no claim stays stuck. A 'busy' claim (its row locked by another
        session right now) stays owed too: it is not taken until finish_jobs says so.
        """
        now = time.monotonic()
        due = [o for o in self.owed.values() if o.due(now)]
        batch = [o for o in due if not o.alone]
        alone = [o for o in due if o.alone]
        taken = 0
        if batch:
            try:
                taken += self.settle(batch, await self._finish(conn, batch))
            except psycopg.Error as exc:
                if connection_lost(conn, exc):
                    raise
                self.jobs.refused("finish_jobs", exc, (o.outcome.job.id for o in batch),
                                  "delivering one by one")
                alone = batch + alone
        for owed in alone:
            taken += await self._deliver_alone(conn, owed)
        return taken

    async def _finish(self, conn: psycopg.AsyncConnection,
                      batch: list[Owed]) -> list[tuple[int, int, str]]:
        return await self.jobs.finish(conn, [o.outcome for o in batch])

    async def _deliver_alone(self, conn: psycopg.AsyncConnection, owed: Owed) -> int:
        try:
            return self.settle([owed], await self._finish(conn, [owed]))
        except psycopg.Error as exc:
            if connection_lost(conn, exc):
                raise
            owed.alone = True
            if is_transient(exc) or owed.plain:
                return self._keep(owed, exc)
            job = owed.outcome.job
            self.jobs.refused("finish_jobs", exc, [job.id],
                              "recording a plain failure instead")
            owed.outcome = Outcome(job, "failed",
                                   error=f"outcome could not be stored: {first_line(exc)}")
            owed.plain = True
        return await self._deliver_alone(conn, owed)

    def _keep(self, owed: Owed, exc: psycopg.Error) -> int:
        delay = owed.backoff().refused(time.monotonic())
        self.jobs.refused("finish_jobs", exc, [owed.outcome.job.id],
                          f"outcome kept, trying again in {delay:.2f} s")
        return 0

    def settle(self, sent: list[Owed], rows: list[tuple[int, int, str]]) -> int:
        """Act on finish_jobs' answer for `sent` and count what it took; how many."""
        owed_now = self.owed
        by_key = {o.key: o for o in sent} if len(sent) > 1 else None
        stats = self.stats
        taken = 0
        for job_id, attempt, status in rows:
            key = (job_id, attempt)
            owed = by_key.get(key) if by_key is not None else (
                sent[0] if sent[0].key == key else None)
            if owed is None:
                continue
            if status == "busy":
                retry = owed.backoff()
                first = retry.delay == 0
                delay = retry.refused(time.monotonic())
                (log.info if first else log.debug)(
                    "job %s attempt %s: its row is locked by another session; outcome "
                    "kept, trying again in %.2f s", job_id, attempt, delay,
                    extra={"event": "outcome_busy", "job_id": job_id},
                )
                continue
            del owed_now[key]
            taken += 1
            outcome = owed.outcome
            if status != "fenced":
                stats.count_recorded(outcome.job.task_identifier, outcome.outcome, status)
                continue
            stats.count_fenced()
            log.warning(
                "job %s attempt %s: this worker no longer held the claim (fenced); "
                "its outcome changed nothing", job_id, attempt,
                extra={"event": "job_fenced", "job_id": job_id},
            )
        return taken
