"""Job and bundle events: what LISTEN "jobs:stopped" / "jobs:bundle_stopped" deliver.

A notification holds one event, or a JSON array of them (a worker's batch of
completions); listen() yields them one by one. Events carry ids and names only (never
payloads): a job's `id`, `task`, `outcome`
(completed, failed, cancelled), `will_retry`, `bundle_id`, `origin`; a bundle's `id`,
`bundle_type`, `origin`, `outcome`, `followup_job_id`.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

from . import sql

JOB_STOPPED = "jobs:stopped"
BUNDLE_STOPPED = "jobs:bundle_stopped"


@dataclass(frozen=True)
class Event:
    channel: str  # jobs:stopped or jobs:bundle_stopped
    data: dict[str, Any]


class JobFailed(Exception):
    """wait_for_job: the job failed for good or was cancelled."""

    def __init__(self, job_id: int, status: str, error: str | None):
        super().__init__(f"job {job_id} {status}: {error or 'no error text'}")
        self.job_id = job_id
        self.status = status
        self.error = error


def listen(conn: Any, timeout: float | None = None) -> Iterator[Event]:
    """Yield job and bundle events on `conn` (a psycopg Connection in autocommit mode)
    as they are committed; stops after `timeout` seconds without one (None: never).

    Listening starts when listen() is called, not at the first next(): events committed
    in between are not lost."""
    for statement in sql.LISTEN_STOPPED:
        conn.execute(statement)
    return _events(conn, timeout)


def _events(conn: Any, timeout: float | None) -> Iterator[Event]:
    while True:
        got = False
        for note in conn.notifies(timeout=timeout, stop_after=1):
            got = True
            yield from _unpack(note)
        if not got:
            return


async def listen_async(conn: Any, timeout: float | None = None) -> AsyncIterator[Event]:
    """listen for a psycopg AsyncConnection in autocommit mode."""
    for statement in sql.LISTEN_STOPPED:
        await conn.execute(statement)
    while True:
        got = False
        async for note in conn.notifies(timeout=timeout, stop_after=1):
            got = True
            for event in _unpack(note):
                yield event
        if not got:
            return


def _unpack(note: Any) -> list[Event]:
    """One notification carries one event, or (completions of a whole batch) a list."""
    data = json.loads(note.payload)
    items = data if isinstance(data, list) else [data]
    return [Event(note.channel, item) for item in items]


def wait_for_job(conn: Any, job_id: int, timeout: float = 30.0) -> Any:
    """Block until job `job_id` stops; return its result (the handler's return value),
    or raise JobFailed when it failed for good or was cancelled, TimeoutError when it is
    still going after `timeout` seconds, LookupError when there is no such job.

    `conn` must be in autocommit mode; it LISTENs on jobs:stopped. A completed job's
    result comes from app_jobs.job_history, so history must be on."""
    for statement in sql.LISTEN_STOPPED:
        conn.execute(statement)
    deadline = time.monotonic() + timeout
    while True:
        done, result = _outcome(conn, job_id)
        if done:
            return result
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"job {job_id} did not stop within {timeout:g} s")
        # Wake on any stop event (or after a second, in case one was missed).
        for _ in conn.notifies(timeout=min(left, 1.0), stop_after=1):
            pass


def _outcome(conn: Any, job_id: int) -> tuple[bool, Any]:
    """(True, result) once the job completed; (False, None) while it is not done."""
    row = conn.execute(sql.JOB_OUTCOME, (job_id,)).fetchone()
    if row is None:
        raise LookupError(f"job {job_id} does not exist (or its history was purged)")
    status, result, error = row
    if status == "completed":
        return True, result
    if status in ("failed", "cancelled"):
        raise JobFailed(job_id, status, error)
    return False, None
