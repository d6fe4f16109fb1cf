"""The job manager: every app_jobs statement the worker sends, and nothing else.

Claims, releases, housekeeping and progress run on the connector's work connection;
outcome delivery and heartbeats on the connection their task passes in. Each method
sends one statement (or one transaction) and returns what the database answered; what
to do with it is the caller's business. Errors are raised as they come (the connector
tells a lost connection from a refusal); `refused` logs a refusal the same way for all.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.rows import tuple_row
from psycopg.types.json import Jsonb

from . import sql
from .connection import first_line
from .connector import Connector, is_transient
from .job import Job, JobControl
from .outcome import Outcome

if TYPE_CHECKING:
    from .worker import WorkerOptions

log = logging.getLogger("pgjobs.worker")


class JobManager:
    """The statements of one worker (`worker_id`, claiming `tasks`)."""

    def __init__(self, connector: Connector, options: WorkerOptions, tasks: list[str],
                 metrics: Any):
        self.connector = connector
        self.options = options
        self.worker_id = options.worker_id
        self.tasks = tasks
        self.metrics = metrics
        self._metrics_on = metrics.enabled
        # The installed finish_jobs takes parallel arrays (looked up per delivery session).
        self.finish_arrays = True

    @property
    def _conn(self) -> psycopg.AsyncConnection:
        return self.connector.work

    def refused(self, statement: str, exc: psycopg.Error, job_ids: Iterable[int] = (),
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

    # -- registration ---------------------------------------------------------------------

    async def register(self, conn: psycopg.AsyncConnection) -> None:
        await conn.execute(sql.REGISTER_WORKER, (
            self.worker_id, socket.gethostname(), os.getpid(), self.tasks,
            self.options.heartbeat_interval,
        ))

    async def set_wakeup(self, conn: psycopg.AsyncConnection, wakeup: str) -> None:
        await conn.execute(sql.SET_WORKER_WAKEUP, (self.worker_id, wakeup))

    async def unregister(self) -> None:
        """Release whatever this worker still holds (attempts refunded) and forget it."""
        await self._conn.execute(sql.UNREGISTER_WORKER, (self.worker_id,))

    async def heartbeat(self, conn: psycopg.AsyncConnection) -> dict[int, dict]:
        """The jobs this worker holds, by id: attempt and cancel_requested."""
        cur = await conn.execute(sql.HEARTBEAT, (self.worker_id,))
        return {row["job_id"]: row for row in await cur.fetchall()}

    # -- claims -----------------------------------------------------------------------

    async def claim(self, n: int,
                    report: Callable[[int, int, int, str | None], None]) -> list[Job]:
        """Claim up to n jobs; each job's progress reports go to `report`."""
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
        worker_id, claimed = self.worker_id, Job.claimed
        return [claimed(row, worker_id, JobControl(report, row[0], row[6])) for row in rows]

    async def release(self, job_ids: list[int]) -> None:
        """Hand jobs back (attempt refunded)."""
        await self._conn.execute(sql.RELEASE_JOBS, (self.worker_id, job_ids))

    async def held_job_ids(self) -> set[int]:
        cur = await self._conn.execute(sql.HELD_JOB_IDS, (self.worker_id,))
        return {row["id"] for row in await cur.fetchall()}

    async def set_progress(self, ids: list[int],
                           reports: dict[int, tuple[int, int, str | None]]) -> None:
        """reports: job id -> (attempt, progress, stage)."""
        await self._conn.execute(sql.SET_PROGRESS, (
            self.worker_id, ids, [reports[i][1] for i in ids], [reports[i][2] for i in ids],
            [reports[i][0] for i in ids],
        ))

    # -- housekeeping -------------------------------------------------------------------

    async def scheduler_tick(self) -> int:
        """Enqueue due recurring jobs (any number of workers may do this at once); how
        many."""
        cur = await self._conn.execute(sql.SCHEDULER_TICK)
        return (await cur.fetchone())["spawned"]

    async def reap(self) -> list[dict]:
        """Rescue the jobs of workers presumed dead: a row per job (or failed reap)."""
        cur = await self._conn.execute(sql.REAP_DEAD_WORKERS, (self.options.dead_for,))
        return await cur.fetchall()

    async def purge_history(self) -> int:
        # Exempt from statement_timeout: a large backlog is deleted in one statement. The
        # limits and the purge go in one pipeline, one implicit transaction that the server
        # commits on its own: making or dropping a partition locks job_history until then,
        # and a worker frozen between its statements (SIGSTOP, a VM pause) must not keep
        # that lock and hold up every completion.
        _, lock_timeout, idle = self.connector.session_limits()
        async with self._conn.pipeline():
            await psycopg.AsyncCursor(self._conn).execute(
                sql.SET_LOCAL_LIMITS, ("0", lock_timeout, idle))
            cur = psycopg.AsyncCursor(self._conn)
            await cur.execute(sql.PURGE_HISTORY)
        return (await cur.fetchone())["purged"]

    async def notification_usage(self) -> float:
        cur = await self._conn.execute(sql.NOTIFICATION_QUEUE_USAGE)
        return (await cur.fetchone())["usage"]

    # -- outcomes -----------------------------------------------------------------------

    async def look_up_finish_arrays(self, conn: psycopg.AsyncConnection) -> None:
        """Whether the installed finish_jobs takes parallel arrays (older ones: JSON)."""
        cur = await conn.execute(sql.FINISH_JOB_ARRAYS_FOUND)
        self.finish_arrays = (await cur.fetchone())["found"]

    async def finish(self, conn: psycopg.AsyncConnection,
                     outcomes: list[Outcome]) -> list[tuple[int, int, str]]:
        """Record outcomes; finish_jobs' answer per outcome: (job id, attempt, status),
        status 'fenced' (the claim is not ours), 'busy' (row locked, nothing done) or
        what was recorded."""
        cur = conn.cursor(row_factory=tuple_row)
        if not self.finish_arrays:
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
