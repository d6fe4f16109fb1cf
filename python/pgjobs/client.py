"""Enqueue from Python on the caller's own connection, inside the caller's transaction."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from itertools import chain
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


def add_jobs(conn: Any, jobs: Iterable[Mapping[str, Any]]) -> list[int | None]:
    """Enqueue many jobs in one statement (app_jobs.add_jobs); their ids, in order.

    Each mapping has identifier, payload and add_job's options. The whole call is one
    statement: any bad job refuses them all. Jobs using depends_on, or job_key_mode values
    that differ between jobs, go through add_job one by one (in one pipeline) instead.
    """
    jobs = list(jobs)
    if not jobs:
        return []
    arrays = _arrays(jobs)
    if arrays is not None:
        with conn.cursor() as cur:
            cur.execute(sql.ADD_JOBS, arrays)
            return [row[0] for row in cur.fetchall()]
    params = [_params(**job) for job in jobs]
    ids: list[int | None] = []
    with conn.pipeline(), conn.cursor() as cur:
        cur.executemany(sql.ADD_JOB, params, returning=True)
        while True:
            ids.append(cur.fetchone()[0])
            if not cur.nextset():
                break
    return ids


_ARRAY_FIELDS = ("identifier", "db_id", "queue_name", "run_at", "max_attempts", "priority",
                 "job_key", "timeout", "origin")
_OPTIONS = frozenset(_ARRAY_FIELDS) | {"payload", "job_key_mode", "depends_on"}


def _arrays(jobs: list[Mapping[str, Any]]) -> dict[str, Any] | None:
    """add_jobs' parameters (sql.ADD_JOBS): each field's values as a list, or as one value
    in `<field>_all` when every job has it; a field no job sets as NULL (the default for
    all); the payloads as one JSON array. None when the jobs need add_job one by one
    (depends_on, several key modes)."""
    used = set(chain.from_iterable(jobs))
    if used - _OPTIONS:
        raise TypeError(f"unexpected job option(s): {', '.join(sorted(used - _OPTIONS))}")
    if "depends_on" in used and any(job.get("depends_on") is not None for job in jobs):
        return None
    modes = {job.get("job_key_mode") for job in jobs} if "job_key_mode" in used else {None}
    if len(modes) > 1:
        return None
    try:
        identifiers = [job["identifier"] for job in jobs]
    except KeyError:
        raise TypeError("every job needs an identifier") from None
    arrays: dict[str, Any] = {
        "n": len(jobs),
        "payload": json.dumps([
            {} if job.get("payload") is None else job["payload"] for job in jobs
        ]),
        "job_key_mode": modes.pop(),
    }
    for field in _ARRAY_FIELDS:
        if field == "identifier":
            values = identifiers
        elif field in used:
            values = [job.get(field) for job in jobs]
        else:
            values = None
        if values is not None and field == "db_id":
            values = [None if v is None else str(v) for v in values]
        elif values is not None and field == "timeout":
            values = [timedelta(seconds=v) if isinstance(v, (int, float)) else v
                      for v in values]
        first = values[0] if values else None
        if first is not None and all(v == first for v in values):
            arrays[field], arrays[f"{field}_all"] = None, first
        elif values is not None and (field == "identifier" or any(v is not None for v in values)):
            arrays[field], arrays[f"{field}_all"] = values, None
        else:
            arrays[field], arrays[f"{field}_all"] = None, None
    return arrays


async def add_job_async(
    conn: Any, identifier: str, payload: Any = None, **options: Any
) -> int | None:
    """add_job for a psycopg AsyncConnection."""
    async with conn.cursor() as cur:
        await cur.execute(sql.ADD_JOB, _params(identifier, payload, **options))
        return (await cur.fetchone())[0]


async def add_jobs_async(conn: Any, jobs: Iterable[Mapping[str, Any]]) -> list[int | None]:
    """add_jobs for a psycopg AsyncConnection."""
    jobs = list(jobs)
    if not jobs:
        return []
    arrays = _arrays(jobs)
    if arrays is not None:
        async with conn.cursor() as cur:
            await cur.execute(sql.ADD_JOBS, arrays)
            return [row[0] for row in await cur.fetchall()]
    params = [_params(**job) for job in jobs]
    ids: list[int | None] = []
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
