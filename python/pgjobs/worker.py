"""The worker: claim jobs in batches, run their handlers, report outcomes, survive outages.

One asyncio loop drives everything. A LISTEN connection wakes the loop when jobs are
inserted (or cancelled); a poll interval covers lost notifications. A second connection
claims jobs and delivers outcomes, which are kept until delivered, so a lost connection
or a database restart costs a reconnect, never a job. A heartbeat task keeps this
worker registered as alive, learns of cancel requests and of claims rescued from it
(fencing), and reaps the jobs of workers that stopped heartbeating.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from . import sql
from .connection import first_line
from .job import Job, JobControl
from .metrics import NO_METRICS, WorkerMetrics
from .outcome import Outcome, jsonable
from .tasks import Handler, default_timeout, is_async

log = logging.getLogger("pgjobs.worker")


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
    heartbeat_interval: float = 5.0
    dead_for: float = 20.0
    default_timeout: float | None = None
    cancel_grace: float = 5.0
    history_purge_interval: float = 3600.0
    # Seconds; 0 turns the limit off. The LISTEN connection only gets the idle one.
    statement_timeout: float = 60.0
    idle_in_transaction_timeout: float = 60.0
    # Serve Prometheus metrics at http://metrics_host:metrics_port/metrics (None: off).
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"


@dataclass
class Stats:
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    fenced: int = 0
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
        self._jobs: dict[int, Job] = {}
        self._owed: list[Outcome] = []
        self._progress: dict[int, tuple[int, int, str | None]] = {}
        self._connected_once = False
        self._next_tick = 0.0
        self._heartbeat_now = asyncio.Event()
        self._heartbeater: asyncio.Task | None = None
        self._beat: asyncio.Task | None = None
        self._next_purge = 0.0
        self._loop_thread = 0
        self.metrics: WorkerMetrics | Any = NO_METRICS
        if options.metrics_port is not None:
            self.metrics = WorkerMetrics(
                running=lambda: len(self._running),
                connected=lambda: 1.0 if self._healthy() else 0.0,
            )

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
        self._loop_thread = threading.get_ident()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self.stop)
            except (NotImplementedError, RuntimeError):
                pass
        try:
            if self.options.metrics_port is not None:
                host, port = self.metrics.serve(
                    self.options.metrics_port, self.options.metrics_host
                )
                log.info("worker %s serving metrics at http://%s:%d/metrics",
                         self.worker_id, host, port)
            await self._connect(first=True)
            # Only once connected: a bad URL must give one line on stderr, not two.
            log.info(
                "worker %s starting: tasks %s, concurrency %d, batch %d",
                self.worker_id, ",".join(self.tasks), self.options.concurrency,
                self.batch_size,
            )
            self._heartbeater = asyncio.create_task(self._heartbeat_loop())
            await self._main_loop()
            await self._drain()
            await self._unregister()
        finally:
            if self._heartbeater is not None:
                self._heartbeater.cancel()
            await self._close()
            self.metrics.close()
        self._log_summary()
        return 0

    async def _main_loop(self) -> None:
        while not self._stopping.is_set():
            # Anything that happens from here on (a notification, a finished job)
            # sets the kick again and so cuts the wait below short.
            self._kick.clear()
            try:
                await self._ensure_connected()
                # Claim first: a job that was just enqueued starts before this worker
                # reports what finished meanwhile.
                jobs = []
                free = self.options.concurrency - len(self._running)
                if free > 0:
                    jobs = await self._claim(min(self.batch_size, free))
                    for job in jobs:
                        self._start(job)
                await self._flush_progress()
                # What was delivered may free a queue's slot: look again at once.
                delivered = await self._flush_outcomes()
                await self._scheduler_tick()
                if jobs or delivered:
                    continue
                if free > 0 and self.options.burst and not self._running and not self._owed:
                    log.info("worker %s: no job available, burst mode ends", self.worker_id)
                    return
                await self._wait(self._wait_time())
            except psycopg.errors.QueryCanceled as exc:
                # statement_timeout (or pg_cancel_backend): the connection is fine and the
                # statement changed nothing (what was owed is still owed); try again later.
                log.warning("worker %s: statement cancelled: %s", self.worker_id,
                            first_line(exc))
                await self._wait(self.options.poll_interval)
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
        try:
            await self._open_connections()
        except BaseException:
            # Half-open (e.g. a statement timed out after connecting): close what opened,
            # so a retry does not leak connections.
            await self._close()
            raise
        self._connected_once = True
        self._kick.set()

    async def _open_connections(self) -> None:
        self._conn = await psycopg.AsyncConnection.connect(
            self.conninfo, autocommit=True, row_factory=dict_row,
            application_name=f"pgjobs-worker {self.worker_id}"[:63],
        )
        await self._conn.execute(sql.SET_SESSION_TIMEOUTS, (
            _milliseconds(self.options.statement_timeout),
            _milliseconds(self.options.idle_in_transaction_timeout),
        ))
        self._listen_conn = await psycopg.AsyncConnection.connect(
            self.conninfo, autocommit=True,
            application_name=f"pgjobs-listen {self.worker_id}"[:63],
        )
        # The LISTEN connection idles for good: no statement or idle-session limit, only
        # the idle-in-transaction one.
        await self._listen_conn.execute(
            sql.SET_LISTEN_SESSION_TIMEOUTS
            if self._listen_conn.info.server_version >= 140000
            else sql.SET_LISTEN_SESSION_TIMEOUTS_PG13,
            (_milliseconds(self.options.idle_in_transaction_timeout),),
        )
        for statement in sql.LISTEN:
            await self._listen_conn.execute(statement)
        self._listener = asyncio.create_task(self._listen(self._listen_conn))
        await self._register()
        if self._connected_once:
            log.info("worker %s reconnected", self.worker_id)
            await self._release_lost_claims()

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
            async for note in conn.notifies():
                if note.channel == sql.CANCEL_CHANNEL:
                    if note.payload.isdigit() and int(note.payload) in self._running:
                        self._heartbeat_now.set()
                else:
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
        # A heartbeat still waiting on the closed connection must be done with it before
        # a new connection may reuse its file descriptor (psycopg would otherwise drop
        # the new connection's wait along with the old one's, and connect would hang).
        beat = self._beat
        if beat is not None and not beat.done():
            await asyncio.wait({beat}, timeout=1.0)
            if not beat.done():
                beat.cancel()
                await asyncio.wait({beat}, timeout=5.0)

    # -- jobs -------------------------------------------------------------------------

    async def _claim(self, n: int) -> list[Job]:
        began = time.perf_counter()
        cur = await self._conn.execute(
            sql.CLAIM_JOBS,
            {
                "worker_id": self.worker_id,
                "tasks": self.tasks,
                "job_expiry": self.options.job_expiry,
                "batch_size": n,
            },
        )
        rows = await cur.fetchall()
        self.metrics.claimed(time.perf_counter() - began)
        jobs = []
        for row in rows:
            control = JobControl()
            job = Job.from_row(row, self.worker_id, control)
            control._report_progress = self._progress_reporter(job)
            jobs.append(job)
        return jobs

    def _start(self, job: Job) -> None:
        self.metrics.job_started(job.task_identifier)
        self._jobs[job.id] = job
        self._running[job.id] = asyncio.create_task(self._run_job(job))

    def _progress_reporter(self, job: Job):
        loop = asyncio.get_running_loop()

        def note(progress: int, stage: str | None) -> None:
            self._progress[job.id] = (job.attempts, progress, stage)
            self._kick.set()

        def report(progress: int, stage: str | None) -> None:
            if threading.get_ident() == self._loop_thread:
                note(progress, stage)
            else:
                loop.call_soon_threadsafe(note, progress, stage)

        return report

    def _timeout_for(self, job: Job, handler: Handler) -> float | None:
        if job.timeout is not None:
            return job.timeout.total_seconds()
        return default_timeout(handler) or self.options.default_timeout

    def _in_thread(self, handler: Handler, job: Job) -> asyncio.Future:
        """Run a sync handler on its own daemon thread: one that ignores a timeout or a
        cancel is abandoned there and does not hold a slot."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()

        def settle(value: Any, exc: BaseException | None) -> None:
            if future.done():
                return
            if exc is None:
                future.set_result(value)
            else:
                future.set_exception(exc)

        def target() -> None:
            try:
                value = handler(job.payload, job)
            except BaseException as exc:  # noqa: BLE001 - a handler's failure is data
                loop.call_soon_threadsafe(settle, None, exc)
            else:
                loop.call_soon_threadsafe(settle, value, None)

        threading.Thread(target=target, name=f"pgjobs-job-{job.id}", daemon=True).start()
        return future

    async def _run_job(self, job: Job) -> None:
        handler = self.handlers[job.task_identifier]
        started = time.monotonic()
        timeout = self._timeout_for(job, handler)
        if is_async(handler):
            inner = asyncio.ensure_future(handler(job.payload, job))
        else:
            inner = self._in_thread(handler, job)
        # Resolved by request_stop (heartbeat: cancel request or fencing; shutdown).
        stop = asyncio.get_running_loop().create_future()
        job.control.on_stop = lambda: stop.done() or stop.set_result(None)
        if job.control.stop_event.is_set():
            job.control.on_stop()
        try:
            done, _ = await asyncio.wait(
                {inner, stop}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if inner not in done:
                job.control.request_stop("timeout")
                inner.cancel()
                await asyncio.wait({inner}, timeout=self.options.cancel_grace)
        except asyncio.CancelledError:
            # Shutdown: the drain releases this job; tell the handler to stop.
            job.control.request_stop("shutdown")
            inner.cancel()
            self._forget(job)
            raise
        finally:
            stop.cancel()
        outcome = self._outcome(job, inner, timeout)
        duration = time.monotonic() - started
        duration_ms = duration * 1000
        self._forget(job)
        if outcome is None:
            self.stats.fenced += 1
            self.metrics.job_fenced()
            log.warning(
                "job %s was rescued from this worker (fenced): its outcome is dropped",
                job.describe(), extra={"event": "job_fenced", "job_id": job.id},
            )
        else:
            self._owed.append(outcome)
            self.metrics.job_ran(job.task_identifier, duration)
            self._log_outcome(outcome, duration_ms)
        self._kick.set()

    def _outcome(self, job: Job, inner: asyncio.Future, timeout: float | None) -> Outcome | None:
        reason = job.control.stop_reason
        if reason == "fenced":
            return None
        if reason == "cancel":
            # Before the return value: a handler that saw job.cancelled and returned early
            # was cancelled, not completed (whichever of its return and our stop poll won).
            return Outcome(job, "cancelled", error="cancelled on request")
        if inner.done() and not inner.cancelled() and inner.exception() is None:
            return Outcome(job, "completed", result=jsonable(inner.result()))
        if reason == "timeout":
            return Outcome(
                job, "failed", error=f"timed out after {timeout:g} s",
                error_data={"type": "Timeout", "timeout_seconds": timeout},
            )
        exc = inner.exception() if inner.done() and not inner.cancelled() else None
        if exc is None:
            return Outcome(job, "failed", error="handler was cancelled")
        return Outcome.raised(job, exc)

    def _forget(self, job: Job) -> None:
        self._running.pop(job.id, None)
        self._jobs.pop(job.id, None)
        self._progress.pop(job.id, None)

    async def _flush_outcomes(self) -> int:
        """Deliver every owed outcome in one statement (how many); keep them all if the
        connection fails. If the database refuses the batch itself, deliver one by one,
        and an outcome it still refuses becomes a plain failure, so no claim stays stuck."""
        if not self._owed:
            return 0
        batch = list(self._owed)
        try:
            rows = await self._finish(batch)
        except psycopg.OperationalError:
            raise
        except psycopg.Error as exc:
            log.error("worker %s: outcome batch refused (%s); delivering one by one",
                      self.worker_id, first_line(exc))
            rows = []
            for outcome in batch:
                rows += await self._finish_alone(outcome)
        del self._owed[: len(batch)]
        sent = {o.job.id: o for o in batch}
        for row in rows:
            if row["status"] != "fenced":
                if self.metrics.enabled and row["job_id"] in sent:
                    self.metrics.job_recorded(
                        sent[row["job_id"]].job.task_identifier, row["status"]
                    )
            else:
                self.stats.fenced += 1
                self.metrics.job_fenced()
                # Logged as completed/failed when the handler returned; it did not count.
                outcome = getattr(sent.get(row["job_id"]), "outcome", None)
                if outcome == "completed":
                    self.stats.completed -= 1
                elif outcome == "failed":
                    self.stats.failed -= 1
                elif outcome == "cancelled":
                    self.stats.cancelled -= 1
                log.warning(
                    "job %s attempt %s: this worker no longer held the claim (fenced); "
                    "its outcome changed nothing", row["job_id"], row["attempt"],
                    extra={"event": "job_fenced", "job_id": row["job_id"]},
                )
        return len(batch)

    async def _finish(self, batch: list[Outcome]) -> list[dict[str, Any]]:
        cur = await self._conn.execute(
            sql.FINISH_JOBS, (self.worker_id, Jsonb([o.as_json() for o in batch]))
        )
        return await cur.fetchall()

    async def _finish_alone(self, outcome: Outcome) -> list[dict[str, Any]]:
        try:
            return await self._finish([outcome])
        except psycopg.OperationalError:
            raise
        except psycopg.Error as exc:
            log.error("job %s: outcome refused (%s); recording a plain failure",
                      outcome.job.describe(), first_line(exc))
            plain = Outcome(outcome.job, "failed",
                            error=f"outcome could not be stored: {first_line(exc)}")
            return await self._finish([plain])

    async def _flush_progress(self) -> None:
        """Send the latest progress of each running job that reported some."""
        if not self._progress:
            return
        pending = dict(self._progress)
        ids = sorted(pending)
        await self._conn.execute(sql.SET_PROGRESS, (
            self.worker_id, ids, [pending[i][1] for i in ids], [pending[i][2] for i in ids],
            [pending[i][0] for i in ids],
        ))
        for job_id in ids:
            if self._progress.get(job_id) == pending[job_id]:
                del self._progress[job_id]

    # -- liveness -----------------------------------------------------------------------

    async def _register(self) -> None:
        await self._conn.execute(sql.REGISTER_WORKER, (
            self.worker_id, socket.gethostname(), os.getpid(), self.tasks,
            self.options.heartbeat_interval,
        ))

    async def _unregister(self) -> None:
        try:
            await self._ensure_connected(deadline=time.monotonic() + 5)
            await self._conn.execute(sql.UNREGISTER_WORKER, (self.worker_id,))
        except (psycopg.Error, TimeoutError) as exc:
            log.warning("worker %s could not unregister: %s", self.worker_id, first_line(exc))

    async def _heartbeat_loop(self) -> None:
        """Every heartbeat_interval (or at once on a cancel notification): heartbeat,
        act on cancel requests and fencing, reap dead workers, purge old history."""
        while True:
            try:
                await asyncio.wait_for(
                    self._heartbeat_now.wait(), self.options.heartbeat_interval
                )
            except asyncio.TimeoutError:
                pass
            self._heartbeat_now.clear()
            if not self._healthy():
                continue
            # A task of its own, so that _close can wait for it to let go of the
            # connection before closing it (see _close).
            beat = self._beat = asyncio.create_task(self._beat_once())
            try:
                await asyncio.wait({beat})
            except asyncio.CancelledError:
                beat.cancel()
                raise
            finally:
                self._beat = None
            if not beat.cancelled() and beat.exception() is not None:
                raise beat.exception()

    async def _beat_once(self) -> None:
        try:
            await self._heartbeat()
            await self._reap()
            await self._purge_history()
            if self.metrics.enabled:
                cur = await self._conn.execute(sql.NOTIFICATION_QUEUE_USAGE)
                self.metrics.notification_usage((await cur.fetchone())["usage"])
        except psycopg.Error as exc:
            log.warning("worker %s heartbeat failed: %s", self.worker_id, first_line(exc))

    async def _heartbeat(self) -> None:
        try:
            cur = await self._conn.execute(sql.HEARTBEAT, (self.worker_id,))
        except psycopg.Error as exc:
            if getattr(exc, "sqlstate", None) != "PJ019":
                raise
            log.error(
                "worker %s was presumed dead and reaped; its running jobs were rescued "
                "and will be fenced. Registering again.", self.worker_id,
                extra={"event": "worker_reaped"},
            )
            await self._register()
            cur = await self._conn.execute(sql.HEARTBEAT, (self.worker_id,))
        held = {row["job_id"]: row for row in await cur.fetchall()}
        for job_id, job in list(self._jobs.items()):
            row = held.get(job_id)
            if row is None or row["attempt"] != job.attempts:
                job.control.request_stop("fenced")
            elif row["cancel_requested"] and job.control.stop_reason is None:
                log.info("job %s: cancel requested", job.describe(),
                         extra={"event": "job_cancel_requested", "job_id": job_id})
                job.control.request_stop("cancel")

    async def _reap(self) -> None:
        cur = await self._conn.execute(sql.REAP_DEAD_WORKERS, (self.options.dead_for,))
        for row in await cur.fetchall():
            log.warning(
                "job %s of dead worker %s rescued: %s", row["job_id"], row["worker_id"],
                row["status"], extra={"event": "job_rescued", "job_id": row["job_id"]},
            )

    async def _purge_history(self) -> None:
        if time.monotonic() < self._next_purge:
            return
        self._next_purge = time.monotonic() + self.options.history_purge_interval
        # Exempt from statement_timeout: a large backlog is deleted in one statement.
        cur = await self._conn.execute(sql.PURGE_HISTORY_UNTIMED)
        cur.nextset()
        purged = (await cur.fetchone())["purged"]
        if purged:
            log.info("worker %s purged %d history row(s)", self.worker_id, purged)

    # -- logging ----------------------------------------------------------------------

    def _log_outcome(self, outcome: Outcome, duration_ms: float) -> None:
        job, error = outcome.job, outcome.error
        fields: dict[str, Any] = {
            "event": f"job_{outcome.outcome}",
            "job_id": job.id,
            "task": job.task_identifier,
            "attempt": job.attempts,
            "max_attempts": job.max_attempts,
            "duration_ms": round(duration_ms, 3),
        }
        if outcome.outcome == "completed":
            self.stats.completed += 1
            log.info("job %s completed in %.1f ms", job.describe(), duration_ms, extra=fields)
        elif outcome.outcome == "cancelled":
            self.stats.cancelled += 1
            log.info("job %s cancelled after %.1f ms", job.describe(), duration_ms, extra=fields)
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
            "worker %s stopped after %.1f s: %d completed, %d failed, %d cancelled, "
            "%d fenced, %d released",
            self.worker_id, time.monotonic() - s.started, s.completed, s.failed, s.cancelled,
            s.fenced, s.released,
            extra={"event": "worker_stopped", "completed": s.completed, "failed": s.failed,
                   "cancelled": s.cancelled, "fenced": s.fenced, "released": s.released},
        )


def _milliseconds(seconds: float | None) -> str:
    """A timeout setting's value in whole milliseconds: '0' (no limit) for None or 0, at
    least '1' for any positive number (a tiny limit must not turn into none)."""
    if not seconds or seconds <= 0:
        return "0"
    return str(max(round(seconds * 1000), 1))
