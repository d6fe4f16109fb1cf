"""The GET pages: overview, job list, one job, schedules, workers."""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.requests import Request

from . import overview, queries
from .render import render

MAX_ID = 2**63 - 1
MAX_NAME = 126
MAX_SEARCH = 200


def parse_id(text: str | None, what: str = "id", status_code: int = 400) -> int | None:
    """A positive bigint from a query or path parameter (None when empty), else 4xx."""
    if text is None or text == "":
        return None
    if not text.isascii() or not text.isdigit() or len(text) > 19 or not 0 < int(text) <= MAX_ID:
        raise HTTPException(status_code, f"{what} must be a whole number from 1 to {MAX_ID}")
    return int(text)


def _name(request: Request, key: str, limit: int) -> str | None:
    """A text filter: None when empty, 400 when too long or holding control characters."""
    value = request.query_params.get(key, "").strip()
    if not value:
        return None
    if len(value) > limit or any(ord(c) < 32 or c == "\x7f" for c in value):
        raise HTTPException(400, f"{key} must be at most {limit} printable characters")
    return value


async def index(request: Request):
    """/: jobs per task and queue, throughput, workers, schedules, notification queue."""
    state = request.app.state.pgjobs
    async with (await state.pool()).connection() as conn:
        data = await overview.load(conn, state.config)
    return render(request, "overview.html", page="overview", ov=data,
                  columns=overview.COLUMNS)


def _list_filters(request: Request) -> dict:
    """The job list's filters from the query string (400 when malformed)."""
    status = request.query_params.get("status", "").strip() or None
    if status is not None and status not in queries.STATUSES:
        raise HTTPException(400, f"status must be one of {', '.join(queries.STATUSES)}")
    after = parse_id(request.query_params.get("after"), "after")
    before = parse_id(request.query_params.get("before"), "before")
    if after is not None and before is not None:
        raise HTTPException(400, "give after or before, not both")
    return {
        "status": status,
        "task": _name(request, "task", MAX_NAME),
        "queue": _name(request, "queue", MAX_NAME),
        "q": _name(request, "q", MAX_SEARCH),
        "after": after,
        "before": before,
    }


async def job_list(request: Request):
    """/jobs: newest first, filtered, keyset-paginated (?after=<id> older, ?before=<id> newer)."""
    state = request.app.state.pgjobs
    f = _list_filters(request)
    size = state.config.page_size
    params = {**f, "db": state.config.tenant, "limit": size + 1}
    newer = f["before"] is not None
    status = f["status"]
    live = status is None or status in queries.LIVE_STATUSES
    finished = status is None or status in queries.FINISHED_STATUSES
    rows: list = []
    async with (await state.pool()).connection() as conn:
        if live:
            cur = await conn.execute(queries.LIVE_NEWER if newer else queries.LIVE_OLDER, params)
            rows += await cur.fetchall()
        if finished:
            cur = await conn.execute(
                queries.FINISHED_NEWER if newer else queries.FINISHED_OLDER, params)
            rows += await cur.fetchall()
    names = [d.name for d in cur.description]
    jobs = [dict(zip(names, r, strict=True)) for r in rows]
    jobs.sort(key=lambda j: j["id"], reverse=not newer)
    more = len(jobs) > size
    jobs = jobs[:size]
    if newer:
        jobs.reverse()
    filters = {k: f[k] for k in ("status", "task", "queue", "q")}
    older_link = newer_link = None
    if jobs:
        if more or newer:
            older_link = {**filters, "after": jobs[-1]["id"]}
        if (more and newer) or f["after"] is not None:
            newer_link = {**filters, "before": jobs[0]["id"]}
    return render(request, "jobs.html", page="jobs", jobs=jobs, filters=filters,
                  statuses=queries.STATUSES, older_link=older_link, newer_link=newer_link,
                  paged=f["after"] is not None or f["before"] is not None)


async def job_detail(request: Request):
    """/jobs/<id>: payload, result, every history record, progress, worker, dependencies."""
    state = request.app.state.pgjobs
    job_id = parse_id(request.path_params["job_id"], "job id", status_code=404)
    params = {"id": job_id, "db": state.config.tenant}
    async with (await state.pool()).connection() as conn:
        cur = await conn.execute(queries.JOB_LIVE, params)
        job = await cur.fetchone()
        job = dict(zip([d.name for d in cur.description], job, strict=True)) if job else None
        cur = await conn.execute(queries.JOB_HISTORY, params)
        names = [d.name for d in cur.description]
        history = [dict(zip(names, r, strict=True)) for r in await cur.fetchall()]
        if job is None and not history:
            raise HTTPException(404, f"no job {job_id}")
        if job is None:  # finished: its latest record stands for it
            last = history[-1]
            job = {**last, "id": job_id, "run_at": None, "locked_at": last["started_at"],
                   "locked_by": None, "progress": None, "stage": None, "updated_at": None,
                   "cancel_requested_at": None, "timeout": None, "blocked_by": 0,
                   "live": False}
        else:
            job["live"] = True
        depends_on = await (await conn.execute(queries.JOB_DEPENDS_ON, params)).fetchall()
        dependents = await (await conn.execute(queries.JOB_DEPENDENTS, params)).fetchall()
        bundle = None
        if job.get("bundle_id") is not None:
            bundle = await (await conn.execute(
                queries.JOB_BUNDLE, {"id": job["bundle_id"]})).fetchone()
        worker = None
        if job.get("locked_by"):
            worker = await (await conn.execute(
                queries.JOB_WORKER, {"id": job["locked_by"]})).fetchone()
    result = next((h["result"] for h in reversed(history) if h["result"] is not None), None)
    return render(request, "job.html", page="jobs", job=job, history=history, result=result,
                  depends_on=depends_on, dependents=dependents, bundle=bundle, worker=worker)


CRON_FIELDS = ("minute", "hour", "dayOfMonth", "month", "dayOfWeek")


def describe_schedule(text: str) -> dict:
    """Rule, cron fields, start/end and backfill of a schedule_info, for display."""
    try:
        info = json.loads(text)
    except ValueError:
        info = None
    if not isinstance(info, dict):
        return {"rule": None, "fields": [], "extra": []}
    fields = [(k, ",".join(str(v) for v in info[k]) if isinstance(info[k], list) else info[k])
              for k in CRON_FIELDS if k in info]
    extra = [(k, info[k]) for k in ("start", "end", "backfill") if k in info]
    return {"rule": info.get("rule"), "fields": fields, "extra": extra}


async def schedules(request: Request):
    """/schedules: rule or cron fields, zone, next run (local and UTC), last run and error."""
    state = request.app.state.pgjobs
    async with (await state.pool()).connection() as conn:
        cur = await conn.execute(queries.SCHEDULES, {"db": state.config.tenant})
        names = [d.name for d in cur.description]
        rows = [dict(zip(names, r, strict=True)) for r in await cur.fetchall()]
    for row in rows:
        row["spec"] = describe_schedule(row["schedule_info"])
    return render(request, "schedules.html", page="schedules", schedules=rows)


async def workers(request: Request):
    """/workers: registered workers, heartbeat age, wake-up mode, the jobs each holds."""
    state = request.app.state.pgjobs
    async with (await state.pool()).connection() as conn:
        cur = await conn.execute(queries.WORKERS)
        names = [d.name for d in cur.description]
        rows = [dict(zip(names, r, strict=True)) for r in await cur.fetchall()]
        cur = await conn.execute(queries.HELD_JOBS, {"db": state.config.tenant})
        names = [d.name for d in cur.description]
        held = [dict(zip(names, r, strict=True)) for r in await cur.fetchall()]
    by_worker: dict[str, list] = {}
    for job in held:
        by_worker.setdefault(job["locked_by"], []).append(job)
    for row in rows:
        row["jobs"] = by_worker.pop(row["id"], [])
    # Jobs held by a worker id that is no longer registered (reaped, or never registered).
    orphans = [j for jobs in by_worker.values() for j in jobs]
    return render(request, "workers.html", page="workers", workers=rows, orphans=orphans)
