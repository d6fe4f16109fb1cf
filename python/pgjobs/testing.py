"""Test helpers: run waiting jobs inline, or make enqueues disappear.

    from pgjobs import testing

    with testing.ignore_enqueues(conn, "send_email"):
        signup(conn)                      # its send_email jobs are dropped

    testing.run_jobs(conn)                # run every job due now, in this process
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from . import sql
from .job import Job
from .outcome import Outcome, jsonable
from .tasks import Handler, registered

WORKER_ID = "pgjobs-testing"


@dataclass
class RunReport:
    completed: int = 0
    failed: int = 0


@contextmanager
def ignore_enqueues(conn: Any, *tasks: str) -> Iterator[None]:
    """Within the block, add_job on `conn` drops jobs of `tasks` (all tasks when none
    is named) and returns NULL.

    The block is one transaction of `conn` (a savepoint when one is already open): the
    setting is transaction-local, so it never outlives the block and no other client of
    a pooled server connection sees it. It commits when the block ends (or releases the
    savepoint), rolls back when it raises; commit() inside the block is refused."""
    with conn.transaction():
        previous = conn.execute(sql.GET_IGNORE_ENQUEUES).fetchone()[0]
        conn.execute(sql.SET_IGNORE_ENQUEUES, (",".join(tasks) if tasks else "all",))
        yield
        conn.execute(sql.SET_IGNORE_ENQUEUES, (previous or "",))


def run_jobs(
    conn: Any,
    handlers: dict[str, Handler] | None = None,
    max_jobs: int = 10_000,
) -> RunReport:
    """Run every job that is due now, one at a time, in this process, with the
    registered handlers (or `handlers`), until none is left or `max_jobs` ran.

    Outcomes go through the same SQL as a worker's (history, retries with backoff,
    bundles, dependents, events). A failed job is retried only once its backoff is over,
    so it is not run again by this call. Commits after each job: pass a connection whose
    changes the code under test can see."""
    handlers = registered() if handlers is None else dict(handlers)
    report = RunReport()
    tasks = sorted(handlers)
    for _ in range(max_jobs):
        with conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(sql.CLAIM_JOBS, {
                "worker_id": WORKER_ID, "tasks": tasks,
                "job_expiry": None, "batch_size": 1,  # None: the job_expiry setting
            }).fetchone()
        if row is None:
            _commit(conn)
            return report
        job = Job.from_row(row, WORKER_ID)
        outcome = _run(handlers[job.task_identifier], job)
        conn.execute(sql.FINISH_JOBS, (WORKER_ID, Jsonb([outcome])))
        _commit(conn)
        if outcome["outcome"] == "completed":
            report.completed += 1
        else:
            report.failed += 1
    return report


def _commit(conn: Any) -> None:
    if not conn.autocommit:
        conn.commit()


def _run(handler: Handler, job: Job) -> dict[str, Any]:
    try:
        value = handler(job.payload, job)
        if inspect.isawaitable(value):
            value = _resolve(value)
    except Exception as exc:  # noqa: BLE001 - a handler's failure is data
        return Outcome.raised(job, exc, error=f"{type(exc).__name__}: {exc}").as_json()
    return Outcome(job, "completed", result=jsonable(value)).as_json()


async def _await(value: Any) -> Any:
    return await value


def _resolve(value: Any) -> Any:
    """Await an async handler's result; from async code (an event loop running in this
    thread, where asyncio.run refuses to start), on a loop in a thread of its own."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_await(value))
    with ThreadPoolExecutor(1, thread_name_prefix="pgjobs-testing") as pool:
        return pool.submit(asyncio.run, _await(value)).result()
