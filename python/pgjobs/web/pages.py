"""The GET pages: overview, job list, one job, schedules, workers."""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.requests import Request

from ..connection import describe
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


def parse_shard(state, text: str | None, *, required: bool = False) -> int:
    """A shard index (the position of its URL, from 0) from a query or form field: 0 when
    empty with a single database; 400 when malformed or (several shards) missing and
    required, 404 when there is no such shard."""
    n = len(state.config.urls)
    if text is None or text == "":
        if required and state.sharded:
            raise HTTPException(400, f"which shard? this dashboard shows {n} shards: "
                                     f"give shard=0 to {n - 1}")
        return 0
    if not text.isascii() or not text.isdigit() or len(text) > 6:
        raise HTTPException(400, "shard must be a whole number from 0")
    if int(text) >= n:
        raise HTTPException(404, f"no shard {int(text)} (there are {n}: 0 to {n - 1})")
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
    """/: jobs per task and queue, throughput, workers, schedules, notification queue;
    with several shards, their sum and a line per shard (reachable or not)."""
    state = request.app.state.pgjobs

    async def load(conn, _shard: int) -> overview.Overview:
        return await overview.load(conn, state.config)

    results = await state.each(load)
    if not state.sharded:
        data, shards = results[0][1], None
    else:
        data = overview.add_up([(i, ov) for i, ov, error in results if error is None])
        shards = [overview.shard_line(i, describe(state.config.urls[i]), ov, error)
                  for i, ov, error in results]
    return render(request, "overview.html", page="overview", ov=data, shards=shards,
                  columns=overview.COLUMNS)


def _cursor(state, text: str | None, what: str) -> tuple[int, int] | None:
    """A keyset cursor: `<id>` with one database, `<shard>:<id>` with several (400 when
    malformed)."""
    if text is None or text == "":
        return None
    shard_text, colon, id_text = text.partition(":")
    if not colon:
        if state.sharded:
            raise HTTPException(400, f"{what} must be <shard>:<id> with several shards")
        shard_text, id_text = "", text
    shard = parse_shard(state, shard_text)
    return parse_id(id_text, what), shard


def _list_filters(request: Request) -> dict:
    """The job list's filters from the query string (400 when malformed)."""
    state = request.app.state.pgjobs
    status = request.query_params.get("status", "").strip() or None
    if status is not None and status not in queries.STATUSES:
        raise HTTPException(400, f"status must be one of {', '.join(queries.STATUSES)}")
    after = _cursor(state, request.query_params.get("after"), "after")
    before = _cursor(state, request.query_params.get("before"), "before")
    if after is not None and before is not None:
        raise HTTPException(400, "give after or before, not both")
    shard = request.query_params.get("shard", "").strip()
    return {
        "status": status,
        "task": _name(request, "task", MAX_NAME),
        "queue": _name(request, "queue", MAX_NAME),
        "q": _name(request, "q", MAX_SEARCH),
        "shard": parse_shard(state, shard) if shard else None,
        "after": after,
        "before": before,
    }


def _bounds(f: dict, shard: int) -> tuple[int | None, int | None]:
    """The shard's id bounds (after, before) for a page in the order of the list: id
    descending, then shard ascending (ids are per shard, so ties between shards are
    many). Older than cursor (X, S): id < X on shards up to S, id <= X on the later ones;
    newer: id > X on shards from S, id >= X on the earlier ones."""
    if f["after"] is not None:
        x, s = f["after"]
        return (x if shard <= s else (x + 1 if x < MAX_ID else None)), None
    if f["before"] is not None:
        x, s = f["before"]
        return None, (x if shard >= s else x - 1)
    return None, None


async def job_list(request: Request):
    """/jobs: newest first, filtered, keyset-paginated (?after=<id> older, ?before=<id>
    newer; with several shards the cursor is <shard>:<id> and the pages merge the shards)."""
    state = request.app.state.pgjobs
    f = _list_filters(request)
    size = state.config.page_size
    newer = f["before"] is not None
    status = f["status"]
    live = status is None or status in queries.LIVE_STATUSES
    finished = status is None or status in queries.FINISHED_STATUSES

    async def fetch(conn, shard: int) -> list[dict]:
        after, before = _bounds(f, shard)
        params = {**f, "after": after, "before": before, "db": state.config.tenant,
                  "limit": size + 1}
        rows: list = []
        cur = None
        if live:
            cur = await conn.execute(queries.LIVE_NEWER if newer else queries.LIVE_OLDER,
                                     params)
            rows += await cur.fetchall()
        if finished:
            cur = await conn.execute(
                queries.FINISHED_NEWER if newer else queries.FINISHED_OLDER, params)
            rows += await cur.fetchall()
        names = [d.name for d in cur.description]
        return [{**dict(zip(names, r, strict=True)), "shard": shard} for r in rows]

    results = await state.each(fetch, None if f["shard"] is None else [f["shard"]])
    jobs = [j for _, rows, error in results if error is None for j in rows]
    down = [(i, error) for i, _, error in results if error is not None]
    jobs.sort(key=lambda j: (j["id"], -j["shard"]), reverse=not newer)
    more = len(jobs) > size
    jobs = jobs[:size]
    if newer:
        jobs.reverse()

    def cursor(job: dict) -> str:
        return f"{job['shard']}:{job['id']}" if state.sharded else str(job["id"])

    filters = {k: f[k] for k in ("status", "task", "queue", "q", "shard")}
    older_link = newer_link = None
    if jobs:
        if more or newer:
            older_link = {**filters, "after": cursor(jobs[-1])}
        if (more and newer) or f["after"] is not None:
            newer_link = {**filters, "before": cursor(jobs[0])}
    return render(request, "jobs.html", page="jobs", jobs=jobs, filters=filters,
                  statuses=queries.STATUSES, older_link=older_link, newer_link=newer_link,
                  paged=f["after"] is not None or f["before"] is not None, down=down)


async def job_detail(request: Request):
    """/jobs/<id>: payload, result, every history record, progress, worker, dependencies."""
    state = request.app.state.pgjobs
    job_id = parse_id(request.path_params["job_id"], "job id", status_code=404)
    shard = parse_shard(state, request.query_params.get("shard"), required=True)
    params = {"id": job_id, "db": state.config.tenant}
    async with state.connection(shard) as conn:
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
                  depends_on=depends_on, dependents=dependents, bundle=bundle, worker=worker,
                  shard=shard)


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


async def _rows(conn, query: str, params: dict | None, shard: int) -> list[dict]:
    """The rows of `query` as dicts, each with its shard."""
    cur = await conn.execute(query, params)
    names = [d.name for d in cur.description]
    return [{**dict(zip(names, r, strict=True)), "shard": shard}
            for r in await cur.fetchall()]


async def schedules(request: Request):
    """/schedules: rule or cron fields, zone, next run (local and UTC), last run and error."""
    state = request.app.state.pgjobs

    async def fetch(conn, shard: int) -> list[dict]:
        return await _rows(conn, queries.SCHEDULES, {"db": state.config.tenant}, shard)

    results = await state.each(fetch)
    rows = [r for _, part, error in results if error is None for r in part]
    for row in rows:
        row["spec"] = describe_schedule(row["schedule_info"])
    return render(request, "schedules.html", page="schedules", schedules=rows,
                  down=[(i, error) for i, _, error in results if error is not None])


async def workers(request: Request):
    """/workers: registered workers, heartbeat age, wake-up mode, the jobs each holds."""
    state = request.app.state.pgjobs

    async def fetch(conn, shard: int) -> tuple[list[dict], list[dict]]:
        rows = await _rows(conn, queries.WORKERS, None, shard)
        held = await _rows(conn, queries.HELD_JOBS, {"db": state.config.tenant}, shard)
        by_worker: dict[str, list] = {}
        for job in held:
            by_worker.setdefault(job["locked_by"], []).append(job)
        for row in rows:
            row["jobs"] = by_worker.pop(row["id"], [])
        # Jobs held by a worker id that is no longer registered (reaped, or never
        # registered).
        return rows, [j for jobs in by_worker.values() for j in jobs]

    results = await state.each(fetch)
    parts = [part for _, part, error in results if error is None]
    return render(request, "workers.html", page="workers",
                  workers=[w for rows, _ in parts for w in rows],
                  orphans=[j for _, orphans in parts for j in orphans],
                  down=[(i, error) for i, _, error in results if error is not None])
