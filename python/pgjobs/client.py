"""Enqueue from Python on the caller's own connection, inside the caller's transaction."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb

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
    job_key_mode: str | None = None,
    origin: str | None = None,
    depends_on: Iterable[int] | None = None,
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
        "job_key_mode": job_key_mode,
        "origin": origin,
        "depends_on": None if depends_on is None else list(depends_on),
    }


def add_job(conn: Any, identifier: str, payload: Any = None, **options: Any) -> int | None:
    """Enqueue one job with app_jobs.add_job on `conn` (a psycopg Connection); its id.

    Options: job_key, job_key_mode (replace, preserve_run_at, unsafe_dedupe), queue_name,
    run_at, max_attempts, priority, db_id, timeout (seconds or timedelta), origin,
    depends_on (job ids that must complete first). None when enqueues of the task are
    being ignored (pgjobs.testing.ignore_enqueues). Nothing is
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


async def add_job_async(
    conn: Any, identifier: str, payload: Any = None, **options: Any
) -> int | None:
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


def add_bundle(
    conn: Any,
    bundle_type: str,
    jobs: Iterable[Mapping[str, Any]],
    *,
    origin: str | None = None,
    followup: Mapping[str, Any] | None = None,
    db_id: UUID | str | None = None,
) -> int:
    """Create a bundle of jobs in one statement; its id.

    Each job is a mapping with identifier and optionally payload, queue_name, run_at,
    max_attempts, priority, timeout, origin. `followup` ({identifier, payload,
    queue_name, priority, max_attempts}) is enqueued once every job of the bundle has
    stopped, with the bundle's outcome and counts in its payload.
    """
    specs = [_bundle_spec(job) for job in jobs]
    with conn.cursor() as cur:
        cur.execute(sql.ADD_BUNDLE, {
            "bundle_type": bundle_type, "jobs": Jsonb(specs), "origin": origin,
            "followup": None if followup is None else Jsonb(dict(followup)),
            "db_id": None if db_id is None else str(db_id),
        })
        return cur.fetchone()[0]


def _bundle_spec(job: Mapping[str, Any]) -> dict[str, Any]:
    spec = {k: v for k, v in job.items() if v is not None}
    if isinstance(spec.get("run_at"), datetime):
        spec["run_at"] = spec["run_at"].isoformat()
    timeout = spec.get("timeout")
    if isinstance(timeout, (int, float)):
        spec["timeout"] = f"{timeout} seconds"
    elif isinstance(timeout, timedelta):
        spec["timeout"] = f"{timeout.total_seconds()} seconds"
    return spec
