"""The worker loop: claim jobs ahead into a prefetch buffer, hand them to the runners,
owe their outcomes, survive outages. No SQL here: it is layered like this.

- connector.py (Connector) owns the connections and notifications: the work connection,
  the LISTEN connection with its probe, reconnecting; it opens the delivery and
  heartbeat sessions too.
- jobmanager.py (JobManager) is the only place app_jobs statements are sent: claim,
  release, finish, heartbeat, register, housekeeping, progress.
- This loop schedules: it claims whenever the prefetch buffer (prefetch.py) is at its
  low-water mark, and runs the housekeeping steps when due (scheduler ticks, reaping
  dead workers, purging old history, progress reports), each on its own backoff after
  a refusal; `concurrency` runners (runner.py) take jobs from the buffer and run them.
- delivery.py (Delivery) sends finished handlers' outcomes in batches from a task of its
  own, and counts each (Stats, metrics.py) when the database has taken it.
- liveness.py (Heartbeat) heartbeats from a task of its own; this loop acts on its
  answer: cancel requests and claims rescued from it (fencing).

Database errors come in two kinds. A lost connection (the connection broken or closed,
SQLSTATE class 08, 57P01-57P03) means reconnecting. Any other error is the database
refusing one statement on a live connection: it is logged with the statement, its
SQLSTATE and the jobs concerned, that step is tried again after a backoff, and the
worker goes on. Outcomes are kept until the database has them, so neither costs a job.
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
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import psycopg

from .connection import first_line
from .connector import Connector, connection_lost, is_transient
from .delivery import Delivery
from .job import Job
from .jobmanager import JobManager
from .liveness import Heartbeat
from .metrics import NO_METRICS, Stats, WorkerMetrics
from .outcome import Outcome
from .prefetch import Prefetch
from .runner import Runners
from .tasks import Handler
from .timing import Backoff, Wakeup

log = logging.getLogger("pgjobs.worker")

# get_jobs takes at most this many per call.
MAX_BATCH_SIZE = 10_000


def default_worker_id() -> str:
    """host-pid-random: unique per process, readable in locked_by."""
    return f"{socket.gethostname()}-{os.getpid()}-{random.getrandbits(24):06x}"


@dataclass
class WorkerOptions:
    """Knobs of one worker process (see `pgjobs-worker --help`)."""

    concurrency: int = 4
    # At most this many jobs per claim statement (None: prefetch + concurrency).
    batch_size: int | None = None
    # At most this many claimed jobs waiting to start (0: claim only what can start).
    prefetch: int = 2000
    # Outcomes are delivered once this many are owed, or flush_delay seconds after the
    # previous delivery began, whichever comes first.
    flush_size: int = 1000
    flush_delay: float = 0.002
    poll_interval: float = 2.0
    worker_id: str = field(default_factory=default_worker_id)
    burst: bool = False
    shutdown_timeout: float = 30.0
    task_identifiers: list[str] | None = None
    job_expiry: timedelta | None = None  # None: the job_expiry setting
    reconnect_max_delay: float = 5.0
    schedule_interval: float = 1.0
    heartbeat_interval: float = 5.0
    dead_for: float = 20.0
    default_timeout: float | None = None
    cancel_grace: float = 5.0
    history_purge_interval: float = 3600.0
    # Seconds; 0 turns the limit off. Every statement of the work, delivery and heartbeat
    # connections gets all three (for its own transaction), the LISTEN connection only
    # the idle-in-transaction one.
    statement_timeout: float = 60.0
    idle_in_transaction_timeout: float = 60.0
    lock_timeout: float = 5.0
    # psycopg prepares a statement after this many runs (None: never, which works behind
    # a pooler that cannot keep prepared statements).
    prepare_threshold: int | None = None
    # The LISTEN connection's conninfo (None: the worker's own); listen False: no LISTEN,
    # poll only.
    listen_conninfo: str | None = None
    listen: bool = True
    # Opening a connection and its first statement must take no longer (0: no limit).
    connect_timeout: float = 10.0
    # How long a probe notification may take to arrive on the LISTEN connection.
    probe_timeout: float = 1.0
    # Serve Prometheus metrics at http://metrics_host:metrics_port/metrics (None: off).
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    # SIGTERM/SIGINT stop this worker (False: its owner handles them, as ShardedWorker).
    handle_signals: bool = True


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
        self.batch_size = min(options.batch_size or options.prefetch + options.concurrency,
                              MAX_BATCH_SIZE)
        self.prefetch = Prefetch(options.prefetch, options.concurrency, self.batch_size)
        self.runners = Runners(self.prefetch, self.handlers, options.concurrency,
                               options.default_timeout, options.cancel_grace,
                               self._finished, self._started)
        self.metrics: WorkerMetrics | Any = NO_METRICS
        if options.metrics_port is not None:
            self.metrics = WorkerMetrics(
                running=lambda: len(self.runners.running),
                connected=lambda: 1.0 if self.connector.healthy() and self.heartbeat.up()
                else 0.0,
                owed=lambda: len(self.delivery),
                prefetched=lambda: len(self.prefetch),
                listen_ok=lambda: 1.0 if self.connector.wakeup == "listen" else 0.0,
            )
        self._metrics_on = self.metrics.enabled
        self.stats = Stats(self.metrics)
        self.connector = Connector(
            conninfo, options,
            on_open=lambda conn: self.jobs.register(conn),
            on_wakeup=lambda conn, wakeup: self.jobs.set_wakeup(conn, wakeup),
            on_connected=self._connected, on_jobs=self._new_jobs,
            on_cancel=self._cancel_requested, on_listener_lost=self._kick_set)
        self.jobs = JobManager(self.connector, options, self.tasks, self.metrics)
        self.delivery = Delivery(self.connector, self.jobs, options, self.stats,
                                 stopping=self._stopping_now, on_taken=self._new_jobs)
        self.heartbeat = Heartbeat(self.connector, self.jobs, options, self._held_now,
                                   self._judge)
        self._heartbeater: asyncio.Task | None = None
        self._deliverer: asyncio.Task | None = None
        # Wakes the main loop (claim, progress, housekeeping, shutdown).
        self._kick = Wakeup()
        # Something may have become claimable since the last claim began: a notification,
        # a delivered outcome (a queue's slot freed), the poll interval, a reconnect.
        self._notified = True
        # The last claim ran and found nothing (burst mode ends on it).
        self._found_nothing = False
        self._stopping = asyncio.Event()
        # Jobs taken out of the buffer by a stop, to be handed back.
        self._unstarted: list[Job] = []
        self._progress: dict[int, tuple[int, int, str | None]] = {}
        self._progress_retry: dict[int, Backoff] = {}
        # Per statement of the work connection: when it may run next (periodic steps
        # and backoffs after a refusal).
        self._steps: defaultdict[str, Backoff] = defaultdict(Backoff)
        # After a reconnect: release claims whose answer was lost with the connection.
        self._claims_to_check = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._log_info = log.isEnabledFor(logging.INFO)

    @property
    def wakeup(self) -> str | None:
        """How new jobs wake this worker: listen, silent or poll (None before connecting)."""
        return self.connector.wakeup

    # -- lifecycle -----------------------------------------------------------------

    def stop(self) -> None:
        """Stop claiming at once and start no buffered job; running jobs get
        shutdown_timeout to finish."""
        if not self._stopping.is_set():
            log.info("worker %s stopping: no new claims", self.worker_id)
        self._stopping.set()
        self._unstarted.extend(self.prefetch.release())
        self.runners.close()
        self._kick.set()

    def _stopping_now(self) -> bool:
        return self._stopping.is_set()

    def busy_threads(self) -> int:
        """Threads still running a sync handler that was abandoned (after run())."""
        return self.runners.busy_threads()

    async def run(self) -> int:
        """Process jobs until stopped (or, with burst, until none is available); exit code:
        0, or 1 when outcomes were still owed at the shutdown deadline."""
        loop = self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._log_info = log.isEnabledFor(logging.INFO)
        delivered = False
        for sig in (signal.SIGTERM, signal.SIGINT) if self.options.handle_signals else ():
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
            await self.connector.connect_first()
            # Only once connected: a bad URL must give one line on stderr, not two.
            log.info(
                "worker %s starting: tasks %s, concurrency %d, prefetch %d, batch %d",
                self.worker_id, ",".join(self.tasks), self.options.concurrency,
                self.options.prefetch, self.batch_size,
            )
            self._heartbeater = asyncio.create_task(self.heartbeat.run())
            self._deliverer = asyncio.create_task(self.delivery.run())
            self.runners.start()
            await self._main_loop()
            delivered = await self._drain()
            await self._stop_task("_deliverer")
            # No heartbeat may register this worker again after it unregistered.
            await self._stop_task("_heartbeater")
            if delivered:
                await self._unregister()
        finally:
            await self._stop_task("_deliverer")
            await self._stop_task("_heartbeater")
            self.runners.abandon_all()
            await self.connector.close()
            self.metrics.close()
        self._log_summary()
        return 0 if delivered else 1

    async def _main_loop(self) -> None:
        while not self._stopping.is_set():
            # Anything that happens from here on (a notification, a job taken from the
            # buffer, a delivered outcome) sets the kick again and cuts the wait short.
            self._kick.clear()
            try:
                await self._ensure_connected()
                self.prefetch.tick(time.monotonic())
                await self._refill()
                await self._hand_back_excess()
                await self._flush_progress()
                await self._housekeeping()
                if self._burst_done():
                    log.info("worker %s: no job available, burst mode ends", self.worker_id)
                    return
                if self._claim_size() and self._steps["get_jobs"].due(time.monotonic()):
                    continue
                if not await self._kick.wait(self._wait_time()):
                    self._notified = True  # the poll interval
            except psycopg.Error as exc:
                if not await self._loop_error(exc):
                    await self._kick.wait(self.options.poll_interval)

    def _burst_done(self) -> bool:
        return (self.options.burst and self._found_nothing and not self._notified
                and not self.prefetch and not self.runners.running and not self.delivery)

    async def _loop_error(self, exc: psycopg.Error) -> bool:
        """An error no step handled; True when it was a lost connection (now closed).
        Each step handles the database refusing its own statement, but whatever gets
        here still never ends the worker."""
        if not connection_lost(self.connector.work, exc):
            self.jobs.refused("worker loop", exc, then="going on")
            return False
        log.warning("worker %s lost its database connection: %s", self.worker_id,
                    first_line(exc))
        await self.connector.close()
        return True

    def _wait_time(self) -> float:
        """Until the next poll, or sooner when a periodic step or a retry comes due."""
        return min(self.options.poll_interval, self._next_due() - time.monotonic())

    def _next_due(self) -> float:
        """The earliest time a periodic step or a retry comes due (inf: none pending)."""
        now = time.monotonic()
        pending = [b.at for b in self._steps.values()]
        pending += [b.at for b in self._progress_retry.values()]
        return min((at for at in pending if at > now), default=float("inf"))

    async def _drain(self) -> bool:
        """After a stop: hand back the buffered jobs at once, let running jobs finish in
        time, release the ones still running (their attempt refunded), and keep
        delivering owed outcomes until the deadline. A handler that finished is never
        released: True when nothing is left owed."""
        o = self.options
        self._unstarted.extend(self.prefetch.release())  # what a claim in flight brought
        self.runners.close()
        unstarted = sorted({job.id for job in self._unstarted})
        self._unstarted.clear()
        if unstarted:
            try:
                await self._ensure_connected(deadline=time.monotonic() + o.shutdown_timeout)
                if await self._step("release_jobs", self._return_unstarted, unstarted,
                                    job_ids=unstarted) is not None:
                    unstarted = []
            except TimeoutError as exc:
                log.warning("worker %s: cannot hand back buffered jobs yet: %s",
                            self.worker_id, exc)
            except psycopg.Error as exc:
                await self._loop_error(exc)
        if self.runners.running:
            log.info(
                "worker %s waiting up to %.1f s for %d running job(s)",
                self.worker_id, o.shutdown_timeout, len(self.runners.running),
            )
            await self.runners.wait(o.shutdown_timeout)
        deadline = time.monotonic() + max(o.shutdown_timeout, 5.0)
        leftover = sorted(job.id for job in self.runners.abandon_all())
        self.delivery.hurry()
        while leftover or unstarted or self.delivery or self._claims_to_check:
            if time.monotonic() >= deadline:
                break
            self._kick.clear()
            try:
                await self._ensure_connected(deadline=deadline)
                if leftover and await self._step("release_jobs", self._release, leftover,
                                                 job_ids=leftover) is not None:
                    leftover = []
                if unstarted and await self._step("release_jobs", self._return_unstarted,
                                                  unstarted, job_ids=unstarted) is not None:
                    unstarted = []
                await self._check_claims()
            except TimeoutError as exc:
                log.warning("worker %s: cannot deliver at shutdown yet: %s", self.worker_id,
                            exc)
            except psycopg.Error as exc:
                await self._loop_error(exc)
            if leftover or unstarted or self.delivery or self._claims_to_check:
                now = time.monotonic()
                await self._kick.wait(min(self._next_due(), now + 0.2, deadline) - now)
        if self.delivery:
            ids = sorted(self.delivery.job_ids())
            log.error(
                "worker %s could not deliver the outcome(s) of job(s) %s by the shutdown "
                "deadline; not unregistering (that would refund their attempts): once "
                "this worker is presumed dead, the reaper counts each as a failed attempt",
                self.worker_id, ", ".join(map(str, ids)),
                extra={"event": "outcomes_undelivered", "job_ids": ids},
            )
            return False
        return True

    async def _release(self, job_ids: list[int]) -> bool:
        """Hand back jobs whose handlers were still running at shutdown (attempt refunded)."""
        await self.jobs.release(job_ids)
        self.stats.released += len(job_ids)
        for job_id in job_ids:
            log.warning("job %s released: still running at shutdown", job_id)
        return True

    async def _return_unstarted(self, job_ids: list[int]) -> bool:
        """Hand back buffered jobs that never started (attempt refunded)."""
        await self.jobs.release(job_ids)
        self.stats.returned += len(job_ids)
        log.info("worker %s handed back %d buffered job(s) that never started",
                 self.worker_id, len(job_ids),
                 extra={"event": "jobs_returned", "job_ids": job_ids})
        return True

    async def _stop_task(self, name: str) -> None:
        task = getattr(self, name)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            setattr(self, name, None)

    async def _unregister(self) -> None:
        """Clean exit: release whatever is still held (attempts refunded) and forget this
        worker. Only when no outcome is owed."""
        try:
            await self._ensure_connected(deadline=time.monotonic() + 5)
            await self.jobs.unregister()
        except (psycopg.Error, TimeoutError) as exc:
            log.warning("worker %s could not unregister: %s", self.worker_id, first_line(exc))

    # -- what the connector reports -------------------------------------------------

    async def _ensure_connected(self, deadline: float | None = None) -> None:
        await self.connector.ensure(deadline, self._stopping_now)

    def _connected(self, reconnected: bool) -> None:
        """A (re)connect succeeded: look for jobs at once; after a reconnect, release the
        claims whose answer was lost with the connection."""
        if reconnected:
            self._claims_to_check = True
        self._notified = True
        self._kick.set()

    def _new_jobs(self) -> None:
        """Something may have become claimable: a notification, a delivered outcome."""
        self._notified = True
        self._kick.set()

    def _kick_set(self) -> None:
        self._kick.set()

    def _cancel_requested(self, job_id: int) -> None:
        """A cancel request for a job held here wakes the heartbeat, which acts on it."""
        if job_id in self.runners.running or job_id in self.prefetch:
            self.heartbeat.now.set()

    # -- steps on the work connection ------------------------------------------------

    async def _step(self, statement: str, run: Callable[..., Awaitable[Any]], *args: Any,
                    every: float = 0.0, job_ids: Iterable[int] = ()) -> Any:
        """Run one step on the work connection unless it is not due yet; its result, or
        None when it did not run or the database refused it (logged, then tried again
        after a backoff). A lost connection raises. With `every`, the step is periodic:
        it is next due `every` seconds later (or after its backoff if that is longer)."""
        backoff = self._steps[statement]
        if not backoff.due(time.monotonic()):
            return None
        try:
            result = await run(*args)
        except psycopg.Error as exc:
            if connection_lost(self.connector.work, exc):
                raise
            delay = backoff.refused(time.monotonic(), at_least=every)
            self.jobs.refused(statement, exc, job_ids, f"trying again in {delay:.2f} s")
            return None
        backoff.succeeded(time.monotonic() + every if every > 0 else 0.0)
        return result

    async def _housekeeping(self) -> None:
        """The periodic steps that are due, each on its own cadence and backoff."""
        o = self.options
        if o.schedule_interval > 0:
            await self._step("run_due_scheduled_jobs", self._scheduler_tick,
                             every=o.schedule_interval)
        await self._step("reap_dead_workers", self._reap, every=o.heartbeat_interval)
        await self._step("purge_job_history", self._purge_history,
                         every=o.history_purge_interval)
        if self._metrics_on:
            await self._step("pg_notification_queue_usage", self._read_notification_usage,
                             every=o.heartbeat_interval)
        await self._check_claims()

    async def _scheduler_tick(self) -> bool:
        spawned = await self.jobs.scheduler_tick()
        if spawned:
            log.info("worker %s enqueued %d scheduled job(s)", self.worker_id, spawned)
        return True

    async def _reap(self) -> bool:
        for row in await self.jobs.reap():
            if row["status"] == "error":
                # The database's WARNING says why; that worker is tried again next time.
                log.warning("dead worker %s could not be reaped this time", row["worker_id"],
                            extra={"event": "worker_reap_failed"})
                continue
            log.warning(
                "job %s of dead worker %s rescued: %s", row["job_id"], row["worker_id"],
                row["status"], extra={"event": "job_rescued", "job_id": row["job_id"]},
            )
        return True

    async def _purge_history(self) -> bool:
        purged = await self.jobs.purge_history()
        if purged:
            log.info("worker %s purged %d history row(s)", self.worker_id, purged)
        return True

    async def _read_notification_usage(self) -> bool:
        self.metrics.notification_usage(await self.jobs.notification_usage())
        return True

    async def _check_claims(self) -> None:
        if self._claims_to_check and await self._step(
                "release_jobs (lost claims)", self._release_lost_claims) is not None:
            self._claims_to_check = False

    async def _release_lost_claims(self) -> bool:
        """Jobs locked under our id that we neither run, buffer nor owe an outcome for:
        claims whose answer was lost with the connection. A finished handler's claim is
        never released here: that would refund an attempt that ran."""
        # Taken before the query: an outcome delivered meanwhile (on the delivery
        # connection) still counts as ours.
        ours = set(self.runners.running) | {job.id for job in self.prefetch.jobs()}
        ours |= self.delivery.job_ids()
        lost = sorted(await self.jobs.held_job_ids() - ours)
        if lost:
            await self.jobs.release(lost)
            log.warning("worker %s released %d claim(s) lost with the connection: job %s",
                        self.worker_id, len(lost), ", ".join(map(str, lost)))
        return True

    # -- claiming ---------------------------------------------------------------------

    def _claim_size(self) -> int:
        """How many jobs to claim now (0: none): what the prefetch buffer wants, unless
        too many outcomes wait for delivery (the delivery connection is down, say)."""
        if len(self.delivery.owed) > self.options.prefetch + self.options.concurrency:
            return 0
        return self.prefetch.wanted(len(self.runners.running), self._notified)

    async def _refill(self) -> None:
        """Claim into the buffer if it wants jobs and the claim is due; hand them out."""
        n = self._claim_size()
        if not n or not self._steps["get_jobs"].due(time.monotonic()):
            return
        self._notified = False
        self.prefetch.fetching(n)
        jobs = None
        try:
            jobs = await self._step("get_jobs", self.jobs.claim, n, self._report_progress)
        finally:
            if jobs is None:
                # Refused, or the answer was lost with the connection: try again later.
                self.prefetch.failed()
                self._notified = True
        if jobs is None:
            return
        self._found_nothing = not jobs
        self.prefetch.fetched(jobs)
        self.runners.feed()

    async def _hand_back_excess(self) -> None:
        """Release the buffered jobs beyond the buffer's target (attempt refunded): the
        handlers turned out slower than when they were claimed, and another worker may
        be free to run them."""
        if not self.prefetch.over_target() or not self._steps["release_jobs"].due(
                time.monotonic()):
            return
        jobs = self.prefetch.excess()
        ids = [job.id for job in jobs]
        # A lost connection raises: whether they were released is unknown, so they are
        # not ours to start any more; the check after the reconnect releases them.
        if await self._step("release_jobs", self._return_excess, ids, job_ids=ids) is None:
            self.prefetch.restore(jobs)  # refused: still ours, tried again later

    async def _return_excess(self, job_ids: list[int]) -> bool:
        await self.jobs.release(job_ids)
        log.info("worker %s handed back %d buffered job(s): handlers now finish %.1f/s, "
                 "the buffer holds %d", self.worker_id, len(job_ids), self.prefetch.rate,
                 self.prefetch.target, extra={"event": "jobs_returned", "job_ids": job_ids})
        return True

    # -- running ----------------------------------------------------------------------

    def _started(self, job: Job) -> None:
        """A runner took the job from the buffer and starts its handler."""
        if self._metrics_on:
            self.metrics.job_started(job.task_identifier)
        if not self._kick.is_set() and self._claim_size():
            self._kick.set()

    def _finished(self, job: Job, outcome: Outcome | None, seconds: float) -> None:
        """A handler ended (or was abandoned): owe its outcome, or drop it when fenced.
        Nothing is counted here but the run time: an outcome counts once delivered."""
        if self._progress:
            self._progress.pop(job.id, None)
            self._progress_retry.pop(job.id, None)
        self.prefetch.ran(time.monotonic())
        if self.prefetch.over_target():
            self._kick.set()
        if outcome is None:
            self._fenced(job, "was rescued from this worker (fenced): its outcome is dropped")
        else:
            self.delivery.owe(outcome)
            if self._metrics_on:
                self.metrics.job_ran(job.task_identifier, seconds)
            if self._log_info or outcome.outcome == "failed":
                self._log_outcome(outcome, seconds * 1000)
        if not self._kick.is_set() and self._claim_size():
            self._kick.set()

    def _fenced(self, job: Job, what: str) -> None:
        """The heartbeat found the claim lost: the attempt is dropped, and counted."""
        self.stats.count_fenced()
        log.warning("job %s %s", job.describe(), what,
                    extra={"event": "job_fenced", "job_id": job.id})

    def _report_progress(self, job_id: int, attempt: int, progress: int,
                         stage: str | None) -> None:
        """job.set_progress, from the loop or from a handler's thread."""
        if threading.get_ident() == self._loop_thread:
            self._note_progress(job_id, attempt, progress, stage)
        else:
            self._loop.call_soon_threadsafe(self._note_progress, job_id, attempt, progress,
                                            stage)

    def _note_progress(self, job_id: int, attempt: int, progress: int,
                       stage: str | None) -> None:
        job = self.runners.running.get(job_id)
        if job is not None and job.attempts == attempt:
            self._progress[job_id] = (attempt, progress, stage)
            self._kick.set()

    # -- progress ---------------------------------------------------------------------

    async def _flush_progress(self) -> None:
        """Send the latest progress of each running job that reported some and is due.
        A batch the database refuses is sent one by one; per job, a transient refusal is
        tried again after a backoff, any other drops that report (logged)."""
        if not self._progress:
            return
        now = time.monotonic()
        pending = {
            job_id: report for job_id, report in self._progress.items()
            if job_id not in self._progress_retry or self._progress_retry[job_id].due(now)
        }
        fresh = sorted(i for i in pending if i not in self._progress_retry)
        alone = sorted(i for i in pending if i in self._progress_retry)
        if fresh:
            try:
                await self._set_progress(fresh, pending)
            except psycopg.Error as exc:
                if connection_lost(self.connector.work, exc):
                    raise
                self.jobs.refused("set_progress", exc, fresh, "sending one by one")
                alone = sorted(fresh + alone)
        for job_id in alone:
            try:
                await self._set_progress([job_id], pending)
            except psycopg.Error as exc:
                if connection_lost(self.connector.work, exc):
                    raise
                if is_transient(exc):
                    retry = self._progress_retry.setdefault(job_id, Backoff())
                    delay = retry.refused(time.monotonic())
                    self.jobs.refused("set_progress", exc, [job_id],
                                      f"trying again in {delay:.2f} s")
                else:
                    self.jobs.refused("set_progress", exc, [job_id],
                                      "progress report dropped")
                    self._sent_progress(job_id, pending[job_id])

    async def _set_progress(self, ids: list[int],
                            pending: dict[int, tuple[int, int, str | None]]) -> None:
        await self.jobs.set_progress(ids, pending)
        for job_id in ids:
            self._sent_progress(job_id, pending[job_id])

    def _sent_progress(self, job_id: int, report: tuple[int, int, str | None]) -> None:
        """Done with this report (unless a newer one came meanwhile)."""
        self._progress_retry.pop(job_id, None)
        if self._progress.get(job_id) == report:
            del self._progress[job_id]

    # -- the heartbeat's answer ---------------------------------------------------------

    def _held_now(self) -> list[Job]:
        return [*self.runners.running.values(), *self.prefetch.jobs()]

    def _judge(self, known: list[Job], held: dict[int, dict]) -> None:
        """Act on a heartbeat's answer for the jobs known before it was sent: a claim
        lost (missing, or another attempt) fences the job, a cancel request stops it."""
        for job in known:
            row = held.get(job.id)
            lost = row is None or row["attempt"] != job.attempts
            cancel = not lost and row["cancel_requested"]
            if not lost and not cancel:
                continue
            if self.prefetch.remove(job.id) is not None:
                # Never started: dropped when fenced, ended cancelled without running.
                if lost:
                    self._fenced(job, "was rescued from this worker before it started "
                                      "(fenced): dropped, never run")
                else:
                    self._cancel_unstarted(job)
            elif self.runners.running.get(job.id) is job:
                if lost:
                    job.control.request_stop("fenced")
                elif job.control.stop_reason is None:
                    log.info("job %s: cancel requested", job.describe(),
                             extra={"event": "job_cancel_requested", "job_id": job.id})
                    job.control.request_stop("cancel")
        if self._claim_size():
            self._kick.set()

    def _cancel_unstarted(self, job: Job) -> None:
        """A buffered job was asked to cancel: end it cancelled without running it."""
        job.control.request_stop("cancel")
        log.info("job %s cancelled before it started", job.describe(),
                 extra={"event": "job_cancelled", "job_id": job.id, "task": job.task_identifier,
                        "attempt": job.attempts, "max_attempts": job.max_attempts,
                        "duration_ms": 0.0})
        self.delivery.owe(Outcome(job, "cancelled", error="cancelled on request"))

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
            log.info("job %s completed in %.1f ms", job.describe(), duration_ms, extra=fields)
        elif outcome.outcome == "cancelled":
            log.info("job %s cancelled after %.1f ms", job.describe(), duration_ms, extra=fields)
        else:
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
            "%d fenced, %d released, %d returned unstarted",
            self.worker_id, time.monotonic() - s.started, s.completed, s.failed, s.cancelled,
            s.fenced, s.released, s.returned,
            extra={"event": "worker_stopped", **s.summary()},
        )
