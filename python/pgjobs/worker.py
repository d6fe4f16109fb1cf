"""The worker: claim jobs in batches, run their handlers, report outcomes, survive outages.

One asyncio loop drives everything. A LISTEN connection wakes the loop when jobs are
inserted; a poll interval covers lost notifications. A second connection claims jobs
and delivers outcomes (completions and failures), which are kept until delivered, so
a lost connection or a database restart costs a reconnect, never a job.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import socket
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row

from . import sql
from .connection import first_line
from .job import Job
from .tasks import Handler, is_async

log = logging.getLogger("pgjobs.worker")

MAX_ERROR_TEXT = 8000


def default_worker_id() -> str:
    """host-pid-random: unique per process, readable in locked_by."""
    return f"{socket.gethostname()}-{os.getpid()}-{random.getrandbits(24):06x}"


@dataclass
class WorkerOptions:
    """Knobs of one worker process (see `pgjobs-worker --help`)."""

    concurrency: int = 4
    batch_size: int | None = None
    poll_interval: float = 2.0
    worker_id: str = field(default_factory=default_worker_id)
    burst: bool = False
    shutdown_timeout: float = 30.0
    task_identifiers: list[str] | None = None
    job_expiry: timedelta = timedelta(hours=4)
    reconnect_max_delay: float = 5.0
    schedule_interval: float = 1.0


@dataclass
class Outcome:
    """The result of one attempt, kept until the database has it."""

    job: Job
    error: str | None


@dataclass
class Stats:
    completed: int = 0
    failed: int = 0
    released: int = 0
    started: float = field(default_factory=time.monotonic)


class Worker:
    """Runs handlers for the jobs of the registered tasks until stopped."""

    def __init__(self, conninfo: str, handlers: dict[str, Handler], options: WorkerOptions):
        if not handlers:
            raise ValueError("no task handlers registered")
        self.conninfo = conninfo
        self.handlers = dict(handlers)
        self.options = options
        self.worker_id = options.worker_id
        wanted = set(options.task_identifiers or self.handlers)
        # Never claim a job nobody here can run.
        self.tasks = sorted(wanted & set(self.handlers))
        self.batch_size = options.batch_size or options.concurrency
        self.stats = Stats()
        self._conn: psycopg.AsyncConnection | None = None
        self._listen_conn: psycopg.AsyncConnection | None = None
        self._listener: asyncio.Task | None = None
        self._kick = asyncio.Event()
        self._stopping = asyncio.Event()
        self._running: dict[int, asyncio.Task] = {}
        self._owed: list[Outcome] = []
        self._executor = ThreadPoolExecutor(
            max_workers=options.concurrency, thread_name_prefix="pgjobs-handler"
        )
        self._connected_once = False
        self._next_tick = 0.0

    # -- lifecycle -----------------------------------------------------------------

    def stop(self) -> None:
        """Stop claiming at once; running jobs get shutdown_timeout to finish."""
        if not self._stopping.is_set():
            log.info("worker %s stopping: no new claims", self.worker_id)
        self._stopping.set()
        self._kick.set()

    async def run(self) -> int:
        """Process jobs until stopped (or, with burst, until none is available); exit code."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self.stop)
            except (NotImplementedError, RuntimeError):
                pass
        try:
            await self._connect(first=True)
            # Only once connected: a bad URL must give one line on stderr, not two.
            log.info(
                "worker %s starting: tasks %s, concurrency %d, batch %d",
                self.worker_id, ",".join(self.tasks), self.options.concurrency,
                self.batch_size,
            )
            await self._main_loop()
            await self._drain()
        finally:
            await self._close()
            self._executor.shutdown(wait=False, cancel_futures=True)
        self._log_summary()
        return 0

    async def _main_loop(self) -> None:
        while not self._stopping.is_set():
            # Anything that happens from here on (a notification, a finished job)
            # sets the kick again and so cuts the wait below short.
            self._kick.clear()
            try:
                await self._ensure_connected()
                await self._flush_outcomes()
                await self._scheduler_tick()
                free = self.options.concurrency - len(self._running)
                if free > 0:
                    jobs = await self._claim(min(self.batch_size, free))
                    for job in jobs:
                        self._start(job)
                    if jobs:
                        continue
                    if self.options.burst and not self._running and not self._owed:
                        log.info("worker %s: no job available, burst mode ends", self.worker_id)
                        return
                await self._wait(self._wait_time())
            except psycopg.OperationalError as exc:
                log.warning("worker %s lost its database connection: %s", self.worker_id, exc)
                await self._close()

    def _wait_time(self) -> float:
        """Until the next poll, or the next scheduler tick if that comes first."""
        if self.options.schedule_interval <= 0:
            return self.options.poll_interval
        until_tick = max(self._next_tick - time.monotonic(), 0.0)
        return min(self.options.poll_interval, until_tick)

    async def _scheduler_tick(self) -> None:
        """Enqueue due recurring jobs; any number of workers may do this at once."""
        if self.options.schedule_interval <= 0 or time.monotonic() < self._next_tick:
            return
        self._next_tick = time.monotonic() + self.options.schedule_interval
        cur = await self._conn.execute(sql.SCHEDULER_TICK)
        spawned = (await cur.fetchone())["spawned"]
        if spawned:
            log.info("worker %s enqueued %d scheduled job(s)", self.worker_id, spawned)

    async def _wait(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._kick.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    async def _drain(self) -> None:
        """After a stop: let running jobs finish in time, deliver outcomes, release the rest."""
        if self._running:
            log.info(
                "worker %s waiting up to %.1f s for %d running job(s)",
                self.worker_id, self.options.shutdown_timeout, len(self._running),
            )
            await asyncio.wait(
                list(self._running.values()), timeout=self.options.shutdown_timeout
            )
        deadline = time.monotonic() + max(self.options.shutdown_timeout, 5.0)
        leftover = list(self._running)
        for task in self._running.values():
            task.cancel()
        while time.monotonic() < deadline:
            try:
                await self._ensure_connected(deadline=deadline)
                await self._flush_outcomes()
                if leftover:
                    await self._conn.execute(sql.RELEASE_JOBS, (self.worker_id, leftover))
                    self.stats.released += len(leftover)
                    for job_id in leftover:
                        log.warning("job %s released: still running at shutdown", job_id)
                return
            except (psycopg.OperationalError, TimeoutError) as exc:
                log.warning("worker %s: cannot deliver at shutdown yet: %s", self.worker_id, exc)
                await self._close()
                await asyncio.sleep(0.2)
        log.error(
            "worker %s gave up delivering %d outcome(s) at shutdown",
            self.worker_id, len(self._owed),
        )

    # -- connections ----------------------------------------------------------------

    async def _connect(self, first: bool = False) -> None:
        self._conn = await psycopg.AsyncConnection.connect(
            self.conninfo, autocommit=True, row_factory=dict_row,
            application_name=f"pgjobs-worker {self.worker_id}"[:63],
        )
        self._listen_conn = await psycopg.AsyncConnection.connect(
            self.conninfo, autocommit=True,
            application_name=f"pgjobs-listen {self.worker_id}"[:63],
        )
        await self._listen_conn.execute(sql.LISTEN)
        self._listener = asyncio.create_task(self._listen(self._listen_conn))
        if self._connected_once:
            log.info("worker %s reconnected", self.worker_id)
            await self._release_lost_claims()
        self._connected_once = True
        self._kick.set()

    async def _release_lost_claims(self) -> None:
        """Jobs locked under our id that we are not running: claims whose answer was lost."""
        cur = await self._conn.execute(sql.HELD_JOB_IDS, (self.worker_id,))
        held = {row["id"] for row in await cur.fetchall()}
        lost = sorted(held - set(self._running) - {o.job.id for o in self._owed})
        if lost:
            await self._conn.execute(sql.RELEASE_JOBS, (self.worker_id, lost))
            log.warning("worker %s released %d claim(s) lost with the connection", self.worker_id,
                        len(lost))

    async def _ensure_connected(self, deadline: float | None = None) -> None:
        if self._healthy():
            return
        await self._close()
        delay = 0.05
        while True:
            try:
                await self._connect()
                return
            except psycopg.OperationalError as exc:
                if deadline is not None and time.monotonic() + delay > deadline:
                    raise TimeoutError("database unreachable") from exc
                log.warning(
                    "worker %s cannot reach the database (retry in %.2f s): %s",
                    self.worker_id, delay, first_line(exc),
                )
                if self._stopping.is_set() and deadline is None:
                    raise
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, self.options.reconnect_max_delay)

    def _healthy(self) -> bool:
        return (
            self._conn is not None
            and not self._conn.closed
            and not self._conn.broken
            and self._listen_conn is not None
            and not self._listen_conn.closed
            and self._listener is not None
            and not self._listener.done()
        )

    async def _listen(self, conn: psycopg.AsyncConnection) -> None:
        try:
            async for _ in conn.notifies():
                self._kick.set()
        except psycopg.Error as exc:
            log.warning("worker %s: LISTEN connection lost: %s", self.worker_id, exc)
        finally:
            self._kick.set()

    async def _close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            try:
                await self._listener
            except (asyncio.CancelledError, Exception):
                pass
            self._listener = None
        for conn in (self._conn, self._listen_conn):
            if conn is not None:
                try:
                    await conn.close()
                except Exception:
                    pass
        self._conn = self._listen_conn = None

    # -- jobs -------------------------------------------------------------------------

    async def _claim(self, n: int) -> list[Job]:
        cur = await self._conn.execute(
            sql.CLAIM_JOBS,
            {
                "worker_id": self.worker_id,
                "tasks": self.tasks,
                "job_expiry": self.options.job_expiry,
                "batch_size": n,
            },
        )
        return [Job.from_row(row, self.worker_id) for row in await cur.fetchall()]

    def _start(self, job: Job) -> None:
        self._running[job.id] = asyncio.create_task(self._run_job(job))

    async def _run_job(self, job: Job) -> None:
        handler = self.handlers[job.task_identifier]
        started = time.monotonic()
        error: str | None = None
        try:
            if is_async(handler):
                await handler(job.payload, job)
            else:
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(self._executor, handler, job.payload, job)
        except asyncio.CancelledError:
            self._running.pop(job.id, None)
            raise
        except BaseException as exc:  # noqa: BLE001 - a handler's failure is data
            error = _error_text(exc)
        duration_ms = (time.monotonic() - started) * 1000
        self._owed.append(Outcome(job, error))
        self._running.pop(job.id, None)
        self._log_outcome(job, error, duration_ms)
        self._kick.set()

    async def _flush_outcomes(self) -> None:
        """Deliver every owed outcome in one statement; keep them all if it fails."""
        if not self._owed:
            return
        batch = list(self._owed)
        await self._conn.execute(
            sql.FINISH_JOBS,
            (self.worker_id, [o.job.id for o in batch], [o.error for o in batch]),
        )
        del self._owed[: len(batch)]

    # -- logging ----------------------------------------------------------------------

    def _log_outcome(self, job: Job, error: str | None, duration_ms: float) -> None:
        fields: dict[str, Any] = {
            "event": "job_completed" if error is None else "job_failed",
            "job_id": job.id,
            "task": job.task_identifier,
            "attempt": job.attempts,
            "max_attempts": job.max_attempts,
            "duration_ms": round(duration_ms, 3),
        }
        if error is None:
            self.stats.completed += 1
            log.info("job %s completed in %.1f ms", job.describe(), duration_ms, extra=fields)
        else:
            self.stats.failed += 1
            fields["error"] = error.splitlines()[0] if error else ""
            final = " (permanently)" if job.is_last_attempt else ", will retry"
            log.warning(
                "job %s failed in %.1f ms%s: %s", job.describe(), duration_ms, final,
                fields["error"], extra=fields,
            )

    def _log_summary(self) -> None:
        s = self.stats
        log.info(
            "worker %s stopped after %.1f s: %d completed, %d failed, %d released",
            self.worker_id, time.monotonic() - s.started, s.completed, s.failed, s.released,
            extra={"event": "worker_stopped", "completed": s.completed, "failed": s.failed,
                   "released": s.released},
        )


def _error_text(exc: BaseException) -> str:
    """The exception's text and traceback, as recorded in last_error."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    head = f"{type(exc).__name__}: {exc}"
    body = text if len(text) <= MAX_ERROR_TEXT else text[-MAX_ERROR_TEXT:]
    return f"{head}\n{body}"
