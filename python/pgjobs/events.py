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
from collections import deque
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


class _Events:
    """What Listener and AsyncListener share: the state and the unpacking.

    The connection is only ever used inside one call (notifications are read to the end
    of psycopg's notifies() before an event is handed out), so between two events the
    caller may use it for anything, or close the iterator."""

    def __init__(self, conn: Any, timeout: float | None):
        self._conn = conn
        self._timeout = timeout
        self._pending: deque[Event] = deque()  # read, not handed out yet
        self._listening = False
        self._closed = False

    def _take(self, notes: list[Any]) -> None:
        """Queue the events of the notifications read (other channels' are skipped)."""
        for note in notes:
            if note.channel in (JOB_STOPPED, BUNDLE_STOPPED):
                self._pending.extend(_unpack(note))

    def _end(self) -> bool:
        """Mark the iterator ended; True when UNLISTEN is still to be sent."""
        unlisten = self._listening and not self._conn.closed
        self._listening = False
        self._closed = True
        self._pending.clear()
        return unlisten


class Listener(_Events):
    """listen()'s iterator of events; close() (or leaving its `with` block) stops it."""

    def __init__(self, conn: Any, timeout: float | None):
        super().__init__(conn, timeout)
        for statement in sql.LISTEN_STOPPED:
            conn.execute(statement)
        self._listening = True

    def __iter__(self) -> Listener:
        return self

    def __next__(self) -> Event:
        while not self._pending and not self._closed:
            notes = list(self._conn.notifies(timeout=self._timeout, stop_after=1))
            if not notes:
                self.close()  # quiet for `timeout` seconds
            self._take(notes)
        if not self._pending:
            raise StopIteration
        return self._pending.popleft()

    def close(self) -> None:
        """UNLISTEN the event channels and end the iteration; idempotent."""
        if self._end():
            for statement in sql.UNLISTEN_STOPPED:
                self._conn.execute(statement)

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncListener(_Events):
    """listen_async()'s async iterator of events; `await close()` (or leaving its
    `async with` block) stops it."""

    async def _start(self) -> None:
        if not self._listening and not self._closed:
            for statement in sql.LISTEN_STOPPED:
                await self._conn.execute(statement)
            self._listening = True

    def __aiter__(self) -> AsyncListener:
        return self

    async def __anext__(self) -> Event:
        await self._start()
        while not self._pending and not self._closed:
            notes = [n async for n in self._conn.notifies(timeout=self._timeout, stop_after=1)]
            if not notes:
                await self.close()  # quiet for `timeout` seconds
            self._take(notes)
        if not self._pending:
            raise StopAsyncIteration
        return self._pending.popleft()

    async def close(self) -> None:
        """UNLISTEN the event channels and end the iteration; idempotent."""
        if self._end():
            for statement in sql.UNLISTEN_STOPPED:
                await self._conn.execute(statement)

    aclose = close  # the async generator name, for contextlib.aclosing

    async def __aenter__(self) -> AsyncListener:
        await self._start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def listen(conn: Any, timeout: float | None = None) -> Listener:
    """Job and bundle events on `conn` (a psycopg Connection in autocommit mode) as they
    are committed; the iteration stops after `timeout` seconds without one (None: never).

    Listening starts when listen() is called, not at the first next(): events committed
    in between are not lost. Between events the connection is free for other use.
    close(), the end of a `with listen(...)` block or the timeout UNLISTENs."""
    return Listener(conn, timeout)


def listen_async(conn: Any, timeout: float | None = None) -> AsyncListener:
    """listen for a psycopg AsyncConnection in autocommit mode. Listening starts at
    `async with` or at the first event asked for."""
    return AsyncListener(conn, timeout)


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
