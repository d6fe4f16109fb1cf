"""Enqueue from Python on the caller's own connection, inside the caller's transaction."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from . import sql


def _params(
    identifier: str,
    payload: Any = None,
    *,
    job_key: str | None = None,
    queue_name: str | None = None,
    run_at: datetime | None = None,
    max_attempts: int | None = None,
    priority: int | None = None,
    db_id: UUID | str | None = None,
    timeout: timedelta | float | None = None,
) -> dict[str, Any]:
    if isinstance(timeout, (int, float)):
        timeout = timedelta(seconds=timeout)
    return {
        "identifier": identifier,
        "payload": json.dumps({} if payload is None else payload),
        "job_key": job_key,
        "queue_name": queue_name,
        "run_at": run_at,
        "max_attempts": max_attempts,
        "priority": priority,
        "db_id": None if db_id is None else str(db_id),
        "timeout": timeout,
    }


def add_job(conn: Any, identifier: str, payload: Any = None, **options: Any) -> int:
    """Enqueue one job with app_jobs.add_job on `conn` (a psycopg Connection); its id.

    Options: job_key, queue_name, run_at, max_attempts, priority, db_id, timeout
    (seconds or timedelta). Nothing is
    committed here: the job exists when the caller's transaction commits.
    """
    with conn.cursor() as cur:
        cur.execute(sql.ADD_JOB, _params(identifier, payload, **options))
        return cur.fetchone()[0]


def add_jobs(conn: Any, jobs: Iterable[Mapping[str, Any]]) -> list[int]:
    """Enqueue many jobs in one pipeline; each mapping has identifier, payload and options."""
    params = [_params(**job) for job in jobs]
    ids: list[int] = []
    if not params:
        return ids
    with conn.pipeline(), conn.cursor() as cur:
        cur.executemany(sql.ADD_JOB, params, returning=True)
        while True:
            ids.append(cur.fetchone()[0])
            if not cur.nextset():
                break
    return ids


async def add_job_async(conn: Any, identifier: str, payload: Any = None, **options: Any) -> int:
    """add_job for a psycopg AsyncConnection."""
    async with conn.cursor() as cur:
        await cur.execute(sql.ADD_JOB, _params(identifier, payload, **options))
        return (await cur.fetchone())[0]


async def add_jobs_async(conn: Any, jobs: Iterable[Mapping[str, Any]]) -> list[int]:
    """add_jobs for a psycopg AsyncConnection."""
    params = [_params(**job) for job in jobs]
    ids: list[int] = []
    if not params:
        return ids
    async with conn.pipeline(), conn.cursor() as cur:
        await cur.executemany(sql.ADD_JOB, params, returning=True)
        while True:
            ids.append((await cur.fetchone())[0])
            if not cur.nextset():
                break
    return ids
