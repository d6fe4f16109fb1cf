"""The worker: claim jobs ahead into a prefetch buffer, run their handlers, deliver their
outcomes in batches, survive outages.

One asyncio loop drives everything; claiming, running and delivering overlap:

- The main loop claims on the work connection whenever the prefetch buffer (prefetch.py)
  is at its low-water mark, and does the housekeeping there too: progress reports,
  scheduler ticks, reaping dead workers, purging old history.
- `concurrency` runners (runner.py) take jobs from the buffer and run their handlers.
- The delivery task sends finished handlers' outcomes with finish_jobs on a connection of
  its own, in batches: once `flush_size` are owed or `flush_delay` seconds after the
  previous batch began, so a claim and a delivery run side by side on two backends.
- LISTEN wakes the main loop when jobs are inserted (or cancelled); a poll interval
  covers lost notifications. A probe at every (re)connect checks that notifications
  arrive (behind a transaction-mode pooler they do not): when they do not, the worker
  says so once and polls.
- The heartbeat connection only heartbeats: it keeps this worker registered as alive and
  learns of cancel requests and of claims rescued from it (fencing), for running and
  buffered jobs alike. It connects and reconnects on its own, so a statement blocked on
  another connection never makes a live worker look dead.

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
from psycopg.rows import tuple_row
from psycopg.types.json import Jsonb

from . import sql
from .connection import describe, first_line
from .job import Job, JobControl
from .metrics import NO_METRICS, WorkerMetrics
from .outcome import Outcome
from .prefetch import Prefetch
from .runner import Runners
from .sessions import ConnectTimeout, open_plain, open_session
from .tasks import Handler

log = logging.getLogger("pgjobs.worker")

# Refusals after which the same statement may well succeed later: lock not available
# (lock_timeout), query cancelled (statement_timeout), serialization failure, deadlock,
# notification queue full, and class 53 (insufficient resources).
TRANSIENT_SQLSTATES = frozenset({"55P03", "57014", "40001", "40P01", "54000"})
# The server ended the session: shutdown, crash shutdown, cannot connect now.
SESSION_ENDED_SQLSTATES = frozenset({"57P01", "57P02", "57P03"})
# get_jobs takes at most this many per call.
MAX_BATCH_SIZE = 10_000

# How often a silent LISTEN connection repeats its UNLISTEN to reach the pooled server
# process that has the probe's LISTEN.
UNLISTEN_TRIES = 50


def connection_lost(conn: psycopg.AsyncConnection | None, exc: psycopg.Error) -> bool:
    """True when exc means the connection is gone (reconnect); False when the database
    refused one statement on a live connection. Decided from the connection's state and
    the SQLSTATE, never from the exception's class: psycopg raises OperationalError for
    classes 53-58 too (54001 stack depth, 55P03 lock timeout, ...)."""
    if conn is None or conn.closed or conn.broken:
        return True
    state = exc.sqlstate
    if state is None:
        # Nothing came from the server: a failure to talk to it, unless psycopg itself
        # refused to send a value (a DataError, say), which leaves the session usable.
        return isinstance(exc, psycopg.OperationalError)
    return state.startswith("08") or state in SESSION_ENDED_SQLSTATES


def is_transient(exc: psycopg.Error) -> bool:
    state = exc.sqlstate or ""
    return state in TRANSIENT_SQLSTATES or state.startswith("53")


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


@dataclass
class Stats:
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    fenced: int = 0
    released: int = 0  # running at shutdown, handed back (attempt refunded)
    returned: int = 0  # buffered, never started, handed back at shutdown
    started: float = field(default_factory=time.monotonic)


class Backoff:
    """When a statement the database refused (or a periodic step) may run again: FIRST
    seconds after the first refusal, doubling up to CAP; a success resets it."""

    FIRST = 0.25
    CAP = 5.0

    def __init__(self) -> None:
        self.delay = 0.0
        self.at = 0.0  # time.monotonic() from which it may run

    def due(self, now: float) -> bool:
        return now >= self.at

    def refused(self, now: float, at_least: float = 0.0) -> float:
        """Push the next try back (by at_least seconds or more); the delay."""
        self.delay = min(max(self.delay * 2, self.FIRST), self.CAP)
        self.at = now + max(self.delay, at_least)
        return self.at - now

    def succeeded(self, next_at: float = 0.0) -> None:
        self.delay = 0.0
        self.at = next_at


class Wakeup:
    """A flag one task waits on: set() wakes the waiter at once. Cheaper than an
    asyncio.Event under wait_for, which makes a task per wait and takes three turns of
    the loop to wake it; the main loop waits on one after every claim."""

    __slots__ = ("_set", "_waiter")

    def __init__(self) -> None:
        self._set = False
        self._waiter: asyncio.Future | None = None

    def set(self) -> None:
        self._set = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    def is_set(self) -> bool:
        return self._set

    async def wait(self, timeout: float) -> bool:
        """Until set() or timeout seconds (inf: no limit); True when it was set."""
        if self._set:
            return True
        assert self._waiter is None, "one waiter at a time"
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = (loop.call_later(max(timeout, 0.0), _set_none, waiter)
                 if timeout != float("inf") else None)
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()
        return self._set


def _set_none(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


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
        self.stats = Stats()
        self.prefetch = Prefetch(options.prefetch, options.concurrency, self.batch_size)
        self.runners = Runners(self.prefetch, self.handlers, options.concurrency,
                               options.default_timeout, options.cancel_grace,
                               self._finished, self._started)
        self._conn: psycopg.AsyncConnection | None = None
        self._listen_conn: psycopg.AsyncConnection | None = None
        self._heartbeat_conn: psycopg.AsyncConnection | None = None
        self._listener: asyncio.Task | None = None
        # How new jobs wake this worker: listen, silent (LISTEN hears nothing: polling) or
        # poll (no LISTEN); None before the first connect.
        self.wakeup: str | None = None
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
        self._heartbeat_now = Wakeup()
        # Wakes the delivery task: an outcome is owed (or flush_size of them are).
        self._owed_event = Wakeup()
        self._owed_full = Wakeup()
        self._owed: dict[tuple[int, int], Owed] = {}
        # The installed finish_jobs takes parallel arrays (looked up per delivery session).
        self._finish_arrays = True
        # Jobs taken out of the buffer by a stop, to be handed back.
        self._unstarted: list[Job] = []
        self._progress: dict[int, tuple[int, int, str | None]] = {}
        self._progress_retry: dict[int, Backoff] = {}
        # Per statement of the work connection: when it may run next (periodic steps
        # and backoffs after a refusal).
        self._steps: defaultdict[str, Backoff] = defaultdict(Backoff)
        self._connected_once = False
        # After a reconnect: release claims whose answer was lost with the connection.
        self._claims_to_check = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._log_info = log.isEnabledFor(logging.INFO)
        self.metrics: WorkerMetrics | Any = NO_METRICS
        if options.metrics_port is not None:
            self.metrics = WorkerMetrics(
                running=lambda: len(self.runners.running),
                connected=lambda: 1.0 if self._healthy() and self._heartbeat_up() else 0.0,
                owed=lambda: len(self._owed),
                prefetched=lambda: len(self.prefetch),
                listen_ok=lambda: 1.0 if self.wakeup == "listen" else 0.0,
            )
        self._metrics_on = self.metrics.enabled

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
            await self._connect_first()
            # Only once connected: a bad URL must give one line on stderr, not two.
            log.info(
                "worker %s starting: tasks %s, concurrency %d, prefetch %d, batch %d",
                self.worker_id, ",".join(self.tasks), self.options.concurrency,
                self.options.prefetch, self.batch_size,
            )
            self._heartbeater = asyncio.create_task(self._heartbeat_loop())
            self._deliverer = asyncio.create_task(self._deliver_loop())
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
            await self._close()
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
                if not await self._wait(self._wait_time()):
                    self._notified = True  # the poll interval
            except psycopg.Error as exc:
                if not await self._loop_error(exc):
                    await self._wait(self.options.poll_interval)

    def _burst_done(self) -> bool:
        return (self.options.burst and self._found_nothing and not self._notified
                and not self.prefetch and not self.runners.running and not self._owed)

    async def _loop_error(self, exc: psycopg.Error) -> bool:
        """An error no step handled; True when it was a lost connection (now closed).
        Each step handles the database refusing its own statement, but whatever gets
        here still never ends the worker."""
        if not connection_lost(self._conn, exc):
            self._refused("worker loop", exc, then="going on")
            return False
        log.warning("worker %s lost its database connection: %s", self.worker_id,
                    first_line(exc))
        await self._close()
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

    async def _wait(self, timeout: float, wakeup: Wakeup | None = None) -> bool:
        """Wait for the wakeup (the kick) up to timeout seconds; True when it was set."""
        return await (wakeup or self._kick).wait(timeout)

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
        self._owed_event.set()  # deliver what is owed without waiting for flush_delay
        while leftover or unstarted or self._owed or self._claims_to_check:
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
            if leftover or unstarted or self._owed or self._claims_to_check:
                now = time.monotonic()
                await self._wait(min(self._next_due(), now + 0.2, deadline) - now)
        if self._owed:
            ids = sorted(job_id for job_id, _ in self._owed)
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
        await self._conn.execute(sql.RELEASE_JOBS, (self.worker_id, job_ids))
        self.stats.released += len(job_ids)
        for job_id in job_ids:
            log.warning("job %s released: still running at shutdown", job_id)
        return True

    async def _return_unstarted(self, job_ids: list[int]) -> bool:
        """Hand back buffered jobs that never started (attempt refunded)."""
        await self._conn.execute(sql.RELEASE_JOBS, (self.worker_id, job_ids))
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

    # -- connections ----------------------------------------------------------------

    async def _connect_first(self) -> None:
        """The first connect: a server that cannot be reached ends the worker (a wrong
        URL must not retry forever), one that keeps it waiting for a connection (a full
        pool) is reported and tried again."""
        delay = 0.5
        while True:
            try:
                await self._connect()
                return
            except ConnectTimeout as exc:
                log.error("worker %s: %s (retry in %.1f s)", self.worker_id,
                          first_line(exc), delay, extra={"event": "connect_timeout"})
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.options.reconnect_max_delay)

    async def _connect(self) -> None:
        try:
            await self._open_connections()
        except BaseException:
            # Half-open (e.g. a statement timed out after connecting): close what opened,
            # so a retry does not leak connections.
            await self._close()
            raise
        self._connected_once = True
        self._notified = True
        self._kick.set()

    async def _open_session(self, role: str) -> psycopg.AsyncConnection:
        """A work, delivery or heartbeat session: autocommit, named after this worker,
        each statement under the worker's limits (sessions.py)."""
        o = self.options
        return await open_session(self.conninfo, f"{role} {self.worker_id}",
                                  self._session_limits(), o.prepare_threshold,
                                  o.connect_timeout)

    def _session_limits(self) -> tuple[str, str, str]:
        """statement_timeout, lock_timeout and idle_in_transaction_session_timeout of each
        statement on the work, delivery and heartbeat sessions, as SET_LOCAL_LIMITS takes
        them (all of them here, in one place)."""
        return (
            _milliseconds(self.options.statement_timeout),
            _milliseconds(self.options.lock_timeout),
            _milliseconds(self.options.idle_in_transaction_timeout),
        )

    async def _open_connections(self) -> None:
        self._conn = await self._open_session("pgjobs-worker")
        await self._register(self._conn)
        wakeup = await self._start_listening() if self.options.listen else "poll"
        if wakeup != self.wakeup:
            if wakeup == "silent":
                log.warning(
                    "worker %s: notifications do not arrive on the LISTEN connection (%s; a "
                    "transaction-mode pooler?): polling every %g s. Give LISTEN a direct "
                    "connection with --listen-database-url, or pass --no-listen",
                    self.worker_id, describe(self._listen_url()), self.options.poll_interval,
                    extra={"event": "listen_silent"},
                )
            elif self.wakeup == "silent":
                log.info("worker %s: notifications arrive again", self.worker_id)
            self.wakeup = wakeup
        await self._conn.execute(sql.SET_WORKER_WAKEUP, (self.worker_id, wakeup))
        if self._connected_once:
            log.info("worker %s reconnected", self.worker_id)
            self._claims_to_check = True

    def _listen_url(self) -> str:
        return self.options.listen_conninfo or self.conninfo

    async def _start_listening(self) -> str:
        """Open the LISTEN connection and probe it: 'listen' when a notification sent from
        the work connection arrives within probe_timeout (the listener task then runs),
        'silent' when it does not (the connection is closed: the worker polls). A pooled
        session is recognised before any LISTEN when it can be, and a job channel is
        LISTENed only on a session proved to be ours: nothing stays behind on a server
        connection a pooler lends to others."""
        o = self.options
        conn = self._listen_conn = await open_plain(
            self._listen_url(), f"pgjobs-listen {self.worker_id}", o.connect_timeout)
        # A transaction pooler lends the server process a statement just used to the next
        # client (the work connection's statement lands there), or moves a client's next
        # statement to another one: either shows that this session is not ours.
        pid = await _fetch_value(conn, sql.BACKEND_PID)
        if (await _fetch_value(self._conn, sql.BACKEND_PID) == pid
                or await _fetch_value(conn, sql.BACKEND_PID) != pid):
            return await self._silent(conn, None)
        listened_on = await _fetch_value(conn, sql.LISTEN_PROBE)
        if listened_on != pid:
            return await self._silent(conn, listened_on)
        nonce = f"{self.worker_id} {random.getrandbits(64):016x}"
        await self._conn.execute(sql.PROBE, (nonce,))
        arrived = False
        async for note in conn.notifies(timeout=o.probe_timeout):
            if note.channel == sql.PROBE_CHANNEL and note.payload == nonce:
                arrived = True
                break
        if not arrived:
            return await self._silent(conn, listened_on)
        for statement in (*sql.LISTEN, sql.UNLISTEN_PROBE):
            await conn.execute(statement)
        # A session of our own, then: it idles by design, so no idle-session or statement
        # limit may end it (session settings are safe here).
        await conn.execute(
            sql.SET_LISTEN_SESSION_TIMEOUTS if conn.info.server_version >= 140000
            else sql.SET_LISTEN_SESSION_TIMEOUTS_PG13,
            (_milliseconds(o.idle_in_transaction_timeout),),
        )
        self._listener = asyncio.create_task(self._listen(conn))
        return "listen"

    async def _silent(self, conn: psycopg.AsyncConnection, listened_on: object) -> str:
        """Give up a LISTEN connection that hears nothing and close it. When the probe's
        LISTEN was made (on server process `listened_on`), take it back first: a pooler
        may send the UNLISTEN to another process, so it is repeated (a few times at most)
        until it runs there."""
        for _ in range(UNLISTEN_TRIES if listened_on is not None else 0):
            try:
                if await _fetch_value(conn, sql.UNLISTEN_PROBE) == listened_on:
                    break
            except psycopg.Error:
                break
        await _close_quietly(conn)
        self._listen_conn = None
        return "silent"

    async def _ensure_connected(self, deadline: float | None = None) -> None:
        if self._healthy():
            return
        await self._close()
        delay = 0.05
        while True:
            try:
                await self._connect()
                return
            except psycopg.Error as exc:
                # Unreachable, kept waiting for a connection (a full pool), or refused
                # while setting up (registration timed out on a lock, say): either way,
                # start over after a while.
                if deadline is not None and time.monotonic() + delay > deadline:
                    raise TimeoutError("database unreachable") from exc
                log.log(
                    logging.ERROR if isinstance(exc, ConnectTimeout) else logging.WARNING,
                    "worker %s cannot reach the database (retry in %.2f s): %s",
                    self.worker_id, delay, first_line(exc),
                )
                if self._stopping.is_set() and deadline is None:
                    raise
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, self.options.reconnect_max_delay)

    def _healthy(self) -> bool:
        """The work connection is up, and so is the listener when this worker listens."""
        return (
            self._conn is not None
            and not self._conn.closed
            and not self._conn.broken
            and (self.wakeup != "listen" or (
                self._listen_conn is not None
                and not self._listen_conn.closed
                and self._listener is not None
                and not self._listener.done()
            ))
        )

    def _heartbeat_up(self) -> bool:
        conn = self._heartbeat_conn
        return conn is not None and not conn.closed and not conn.broken

    async def _listen(self, conn: psycopg.AsyncConnection) -> None:
        try:
            async for note in conn.notifies():
                self._on_notification(note)
        except psycopg.Error as exc:
            log.warning("worker %s: LISTEN connection lost: %s", self.worker_id, exc)
        finally:
            self._kick.set()

    def _on_notification(self, note: psycopg.Notify) -> None:
        """A cancel request for a job held here wakes the heartbeat; a new job, the main
        loop; other workers' probes are nothing to us."""
        if note.channel == sql.CANCEL_CHANNEL:
            if note.payload.isdigit() and self._holds(int(note.payload)):
                self._heartbeat_now.set()
        elif note.channel != sql.PROBE_CHANNEL:
            self._notified = True
            self._kick.set()

    def _holds(self, job_id: int) -> bool:
        """The job runs here or waits in the buffer."""
        return job_id in self.runners.running or job_id in self.prefetch

    async def _close(self) -> None:
        """Close the work and LISTEN connections (the heartbeat and delivery tasks own
        theirs)."""
        if self._listener is not None:
            self._listener.cancel()
            try:
                await self._listener
            except (asyncio.CancelledError, Exception):
                pass
            self._listener = None
        for conn in (self._conn, self._listen_conn):
            await _close_quietly(conn)
        self._conn = self._listen_conn = None

    # -- statements on the work connection ------------------------------------------

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
            if connection_lost(self._conn, exc):
                raise
            delay = backoff.refused(time.monotonic(), at_least=every)
            self._refused(statement, exc, job_ids, f"trying again in {delay:.2f} s")
            return None
        backoff.succeeded(time.monotonic() + every if every > 0 else 0.0)
        return result

    def _refused(self, statement: str, exc: psycopg.Error, job_ids: Iterable[int] = (),
                 then: str = "") -> None:
        """Log a statement the database refused on a live connection: its name, SQLSTATE,
        the jobs concerned, and what happens next. WARNING when it may pass by itself."""
        state = exc.sqlstate or "none"
        ids = sorted(set(job_ids))
        self.metrics.statement_refused(statement, state)
        log.log(
            logging.WARNING if is_transient(exc) else logging.ERROR,
            "worker %s: %s refused%s: SQLSTATE %s: %s%s", self.worker_id, statement,
            f" (job {', '.join(map(str, ids))})" if ids else "", state, first_line(exc),
            f"; {then}" if then else "",
            extra={"event": "statement_refused", "statement": statement, "sqlstate": state,
                   "job_ids": ids},
        )

    async def _housekeeping(self) -> None:
        """The periodic steps that are due, each on its own cadence and backoff."""
        o = self.options
        if o.schedule_interval > 0:
            await self._step("run_due_scheduled_jobs", self._scheduler_tick,
                             every=o.schedule_interval)
        await self._step("reap_dead_workers", self._reap, every=o.heartbeat_interval)
        await self._step("purge_job_history", self._purge_history,
                         every=o.history_purge_interval)
        if self.metrics.enabled:
            await self._step("pg_notification_queue_usage", self._read_notification_usage,
                             every=o.heartbeat_interval)
        await self._check_claims()

    async def _scheduler_tick(self) -> bool:
        """Enqueue due recurring jobs; any number of workers may do this at once."""
        cur = await self._conn.execute(sql.SCHEDULER_TICK)
        spawned = (await cur.fetchone())["spawned"]
        if spawned:
            log.info("worker %s enqueued %d scheduled job(s)", self.worker_id, spawned)
        return True

    async def _reap(self) -> bool:
        cur = await self._conn.execute(sql.REAP_DEAD_WORKERS, (self.options.dead_for,))
        for row in await cur.fetchall():
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
        # Exempt from statement_timeout: a large backlog is deleted in one statement.
        _, lock_timeout, idle = self._session_limits()
        async with self._conn.transaction():
            await self._conn.execute(sql.SET_LOCAL_LIMITS, ("0", lock_timeout, idle))
            cur = await self._conn.execute(sql.PURGE_HISTORY)
            purged = (await cur.fetchone())["purged"]
        if purged:
            log.info("worker %s purged %d history row(s)", self.worker_id, purged)
        return True

    async def _read_notification_usage(self) -> bool:
        cur = await self._conn.execute(sql.NOTIFICATION_QUEUE_USAGE)
        self.metrics.notification_usage((await cur.fetchone())["usage"])
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
        ours |= {job_id for job_id, _ in self._owed}
        cur = await self._conn.execute(sql.HELD_JOB_IDS, (self.worker_id,))
        held = {row["id"] for row in await cur.fetchall()}
        lost = sorted(held - ours)
        if lost:
            await self._conn.execute(sql.RELEASE_JOBS, (self.worker_id, lost))
            log.warning("worker %s released %d claim(s) lost with the connection: job %s",
                        self.worker_id, len(lost), ", ".join(map(str, lost)))
        return True

    # -- claiming ---------------------------------------------------------------------

    def _claim_size(self) -> int:
        """How many jobs to claim now (0: none): what the prefetch buffer wants, unless
        too many outcomes wait for delivery (the delivery connection is down, say)."""
        if len(self._owed) > self.options.prefetch + self.options.concurrency:
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
            jobs = await self._step("get_jobs", self._get_jobs, n)
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
        await self._conn.execute(sql.RELEASE_JOBS, (self.worker_id, job_ids))
        log.info("worker %s handed back %d buffered job(s): handlers now finish %.1f/s, "
                 "the buffer holds %d", self.worker_id, len(job_ids), self.prefetch.rate,
                 self.prefetch.target, extra={"event": "jobs_returned", "job_ids": job_ids})
        return True

    async def _get_jobs(self, n: int) -> list[Job]:
        began = time.perf_counter()
        cur = self._conn.cursor(row_factory=tuple_row)
        await cur.execute(sql.CLAIM_JOBS, {
            "worker_id": self.worker_id,
            "tasks": self.tasks,
            "job_expiry": self.options.job_expiry,
            "batch_size": n,
        })
        rows = await cur.fetchall()
        if self._metrics_on:
            self.metrics.claimed(time.perf_counter() - began)
        worker_id, report, claimed = self.worker_id, self._report_progress, Job.claimed
        return [claimed(row, worker_id, JobControl(report, row[0], row[6])) for row in rows]

    # -- running ----------------------------------------------------------------------

    def _started(self, job: Job) -> None:
        """A runner took the job from the buffer and starts its handler."""
        if self._metrics_on:
            self.metrics.job_started(job.task_identifier)
        if not self._kick.is_set() and self._claim_size():
            self._kick.set()

    def _finished(self, job: Job, outcome: Outcome | None, seconds: float) -> None:
        """A handler ended (or was abandoned): owe its outcome, or drop it when fenced."""
        if self._progress:
            self._progress.pop(job.id, None)
            self._progress_retry.pop(job.id, None)
        self.prefetch.ran(time.monotonic())
        if self.prefetch.over_target():
            self._kick.set()
        if outcome is None:
            self._fenced(job, "was rescued from this worker (fenced): its outcome is dropped")
        else:
            self._owe(outcome)
            if self._metrics_on:
                self.metrics.job_ran(job.task_identifier, seconds)
            self._count(outcome.outcome, +1)
            if self._log_info or outcome.outcome == "failed":
                self._log_outcome(outcome, seconds * 1000)
        if not self._kick.is_set() and self._claim_size():
            self._kick.set()

    def _owe(self, outcome: Outcome) -> None:
        owed = Owed(outcome)
        self._owed[owed.key] = owed
        self._owed_event.set()
        if len(self._owed) >= self.options.flush_size:
            self._owed_full.set()

    def _fenced(self, job: Job, what: str) -> None:
        self.stats.fenced += 1
        self.metrics.job_fenced()
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

    # -- outcomes ---------------------------------------------------------------------

    async def _deliver_loop(self) -> None:
        """Deliver owed outcomes on a connection of its own, (re)connected here: once
        flush_size are owed or flush_delay seconds after the previous delivery began (at
        once if it took longer). Nothing but an asyncio cancel ends this loop."""
        conn: psycopg.AsyncConnection | None = None
        delay = 0.05
        began = 0.0
        try:
            while True:
                self._owed_event.clear()
                now = time.monotonic()
                if not any(o.due(now) for o in self._owed.values()):
                    await self._wait(self._next_owed_due() - now, self._owed_event)
                    continue
                o = self.options
                if (len(self._owed) < o.flush_size and now < began + o.flush_delay
                        and not self._stopping.is_set()):
                    self._owed_full.clear()
                    await self._wait(began + o.flush_delay - now, self._owed_full)
                began = time.monotonic()
                try:
                    if conn is None or conn.closed or conn.broken:
                        await _close_quietly(conn)
                        conn = None
                        conn = await self._open_session("pgjobs-deliver")
                        cur = await conn.execute(sql.FINISH_JOB_ARRAYS_FOUND)
                        self._finish_arrays = (await cur.fetchone())["found"]
                    taken = await self._flush_outcomes(conn)
                    delay = 0.05
                    if taken:
                        # What was delivered may free a queue's slot: look again at once.
                        self._notified = True
                        self._kick.set()
                except psycopg.Error as exc:
                    # _flush_outcomes handles the database refusing an outcome itself.
                    if connection_lost(conn, exc):
                        log.warning("worker %s: delivery connection lost (retry in %.2f s): "
                                    "%s", self.worker_id, delay, first_line(exc))
                        await _close_quietly(conn)
                        conn = None
                    else:
                        self._refused("finish_jobs", exc, then=f"retry in {delay:.2f} s")
                    await asyncio.sleep(delay * (0.5 + random.random()))
                    delay = min(delay * 2, self.options.reconnect_max_delay)
                except Exception:  # noqa: BLE001 - delivery must go on whatever happens
                    log.exception("worker %s: delivering outcomes failed", self.worker_id)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.options.reconnect_max_delay)
        finally:
            await _close_quietly(conn)

    def _next_owed_due(self) -> float:
        """When the first outcome backing off comes due (inf: none owed)."""
        return min((o.retry.at for o in self._owed.values() if o.retry is not None),
                   default=float("inf"))

    async def _flush_outcomes(self, conn: psycopg.AsyncConnection) -> int:
        """Deliver the owed outcomes that are due; how many the database took.

        Fresh outcomes go in one finish_jobs call; one the database refused before goes
        on its own, and so does each outcome of a refused batch. Per outcome, a transient
        refusal keeps it owed (tried again after a backoff) and any other makes it a plain
        failure, so that no claim stays stuck. A 'busy' claim (its row locked by another
        session right now) stays owed too: it is not taken until finish_jobs says so.
        """
        now = time.monotonic()
        due = [o for o in self._owed.values() if o.due(now)]
        batch = [o for o in due if not o.alone]
        alone = [o for o in due if o.alone]
        taken = 0
        if batch:
            try:
                taken += self._settle(batch, await self._finish(conn, batch))
            except psycopg.Error as exc:
                if connection_lost(conn, exc):
                    raise
                self._refused("finish_jobs", exc, (o.outcome.job.id for o in batch),
                              "delivering one by one")
                alone = batch + alone
        for owed in alone:
            taken += await self._deliver_alone(conn, owed)
        return taken

    async def _deliver_alone(self, conn: psycopg.AsyncConnection, owed: Owed) -> int:
        try:
            return self._settle([owed], await self._finish(conn, [owed]))
        except psycopg.Error as exc:
            if connection_lost(conn, exc):
                raise
            owed.alone = True
            if is_transient(exc) or owed.plain:
                return self._keep(owed, exc)
            job = owed.outcome.job
            self._refused("finish_jobs", exc, [job.id], "recording a plain failure instead")
            self._count(owed.outcome.outcome, -1)
            owed.outcome = Outcome(job, "failed",
                                   error=f"outcome could not be stored: {first_line(exc)}")
            owed.plain = True
            self._count("failed", +1)
        return await self._deliver_alone(conn, owed)

    def _keep(self, owed: Owed, exc: psycopg.Error) -> int:
        delay = owed.backoff().refused(time.monotonic())
        self._refused("finish_jobs", exc, [owed.outcome.job.id],
                      f"outcome kept, trying again in {delay:.2f} s")
        return 0

    async def _finish(self, conn: psycopg.AsyncConnection,
                      batch: list[Owed]) -> list[tuple[int, int, str]]:
        outcomes = [o.outcome for o in batch]
        cur = conn.cursor(row_factory=tuple_row)
        if not self._finish_arrays:
            await cur.execute(sql.FINISH_JOBS, (
                self.worker_id, Jsonb([o.as_json() for o in outcomes])))
            return await cur.fetchall()
        ids = [o.job.id for o in outcomes]
        attempts = [o.job.attempts for o in outcomes]
        if all(o.outcome == "completed" and o.result is None for o in outcomes):
            params = (self.worker_id, ids, attempts, None, None, None, None)
        else:
            params = (
                self.worker_id, ids, attempts, [o.outcome for o in outcomes],
                [o.error for o in outcomes],
                [None if o.error_data is None else Jsonb(o.error_data) for o in outcomes],
                [None if o.result is None else Jsonb(o.result) for o in outcomes],
            )
        await cur.execute(sql.FINISH_JOB_ARRAYS, params)
        return await cur.fetchall()

    def _settle(self, sent: list[Owed], rows: list[tuple[int, int, str]]) -> int:
        """Act on finish_jobs' answer for `sent`; how many outcomes it took."""
        owed_now = self._owed
        by_key = {o.key: o for o in sent} if len(sent) > 1 else None
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
                if self._metrics_on:
                    self.metrics.job_recorded(outcome.job.task_identifier, status)
                continue
            self.stats.fenced += 1
            self.metrics.job_fenced()
            # Counted as completed/failed/cancelled when the handler returned: it did not
            # count after all.
            self._count(outcome.outcome, -1)
            log.warning(
                "job %s attempt %s: this worker no longer held the claim (fenced); "
                "its outcome changed nothing", job_id, attempt,
                extra={"event": "job_fenced", "job_id": job_id},
            )
        return taken

    def _count(self, outcome: str, delta: int) -> None:
        """Adjust the summary's count of completed, failed or cancelled attempts."""
        if outcome == "completed":
            self.stats.completed += delta
        elif outcome == "cancelled":
            self.stats.cancelled += delta
        else:
            self.stats.failed += delta

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
                if connection_lost(self._conn, exc):
                    raise
                self._refused("set_progress", exc, fresh, "sending one by one")
                alone = sorted(fresh + alone)
        for job_id in alone:
            try:
                await self._set_progress([job_id], pending)
            except psycopg.Error as exc:
                if connection_lost(self._conn, exc):
                    raise
                if is_transient(exc):
                    retry = self._progress_retry.setdefault(job_id, Backoff())
                    delay = retry.refused(time.monotonic())
                    self._refused("set_progress", exc, [job_id],
                                  f"trying again in {delay:.2f} s")
                else:
                    self._refused("set_progress", exc, [job_id], "progress report dropped")
                    self._sent_progress(job_id, pending[job_id])

    async def _set_progress(self, ids: list[int],
                            pending: dict[int, tuple[int, int, str | None]]) -> None:
        await self._conn.execute(sql.SET_PROGRESS, (
            self.worker_id, ids, [pending[i][1] for i in ids], [pending[i][2] for i in ids],
            [pending[i][0] for i in ids],
        ))
        for job_id in ids:
            self._sent_progress(job_id, pending[job_id])

    def _sent_progress(self, job_id: int, report: tuple[int, int, str | None]) -> None:
        """Done with this report (unless a newer one came meanwhile)."""
        self._progress_retry.pop(job_id, None)
        if self._progress.get(job_id) == report:
            del self._progress[job_id]

    # -- liveness -----------------------------------------------------------------------

    async def _register(self, conn: psycopg.AsyncConnection) -> None:
        await conn.execute(sql.REGISTER_WORKER, (
            self.worker_id, socket.gethostname(), os.getpid(), self.tasks,
            self.options.heartbeat_interval,
        ))

    async def _unregister(self) -> None:
        """Clean exit: release whatever is still held (attempts refunded) and forget this
        worker. Only when no outcome is owed."""
        try:
            await self._ensure_connected(deadline=time.monotonic() + 5)
            await self._conn.execute(sql.UNREGISTER_WORKER, (self.worker_id,))
        except (psycopg.Error, TimeoutError) as exc:
            log.warning("worker %s could not unregister: %s", self.worker_id, first_line(exc))

    async def _heartbeat_loop(self) -> None:
        """Every heartbeat_interval (or at once on a cancel notification): heartbeat on a
        connection of its own, (re)connected here, and act on cancel requests and fencing.
        Nothing but an asyncio cancel ends this loop."""
        conn: psycopg.AsyncConnection | None = None
        try:
            while True:
                self._heartbeat_now.clear()
                try:
                    if conn is None or conn.closed or conn.broken:
                        await _close_quietly(conn)
                        conn = self._heartbeat_conn = None
                        conn = self._heartbeat_conn = await self._open_session(
                            "pgjobs-heartbeat")
                    await self._heartbeat(conn)
                except psycopg.Error as exc:
                    if connection_lost(conn, exc):
                        log.warning("worker %s: heartbeat connection lost: %s",
                                    self.worker_id, first_line(exc))
                        await _close_quietly(conn)
                        conn = self._heartbeat_conn = None
                    else:
                        self._refused("worker_heartbeat", exc)
                except Exception:  # noqa: BLE001 - heartbeats must go on whatever happens
                    log.exception("worker %s: heartbeat failed", self.worker_id)
                await self._wait(self.options.heartbeat_interval, self._heartbeat_now)
        finally:
            self._heartbeat_conn = None
            await _close_quietly(conn)

    async def _heartbeat(self, conn: psycopg.AsyncConnection) -> None:
        # Only the jobs held before the heartbeat is sent are judged by its answer: a
        # claim committed on the work connection meanwhile may be missing from it.
        known = [*self.runners.running.values(), *self.prefetch.jobs()]
        try:
            cur = await conn.execute(sql.HEARTBEAT, (self.worker_id,))
        except psycopg.Error as exc:
            if exc.sqlstate != "PJ019" or connection_lost(conn, exc):
                raise
            log.error(
                "worker %s was presumed dead and reaped; its running jobs were rescued "
                "and will be fenced. Registering again.", self.worker_id,
                extra={"event": "worker_reaped"},
            )
            await self._register(conn)
            cur = await conn.execute(sql.HEARTBEAT, (self.worker_id,))
        held = {row["job_id"]: row for row in await cur.fetchall()}
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
        self._count("cancelled", +1)
        self._owe(Outcome(job, "cancelled", error="cancelled on request"))

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
            extra={"event": "worker_stopped", "completed": s.completed, "failed": s.failed,
                   "cancelled": s.cancelled, "fenced": s.fenced, "released": s.released,
                   "returned": s.returned},
        )


def _milliseconds(seconds: float | None) -> str:
    """A timeout setting's value in whole milliseconds: '0' (no limit) for None or 0, at
    least '1' for any positive number (a tiny limit must not turn into none)."""
    if not seconds or seconds <= 0:
        return "0"
    return str(max(round(seconds * 1000), 1))


async def _fetch_value(conn: psycopg.AsyncConnection, query: str) -> object:
    """The first column of a one-row query, whatever the connection's row factory."""
    row = await (await conn.execute(query)).fetchone()
    return next(iter(row.values())) if isinstance(row, dict) else row[0]


async def _close_quietly(conn: psycopg.AsyncConnection | None) -> None:
    if conn is not None:
        try:
            await conn.close()
        except Exception:  # noqa: BLE001 - a broken connection may fail to close
            pass
