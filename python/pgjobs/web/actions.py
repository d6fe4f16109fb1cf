"""The POST actions: retry, cancel, delete jobs; run a schedule now, pause or resume it.

Each is refused with 403 in read-only mode and without a valid CSRF field; each touches
only the tenant's jobs (or schedules), on the shard the form names (with several
databases: its `shard` field, or job ids as <shard>:<id>), and goes through an admin SQL
function, one job per statement, so one refusal (a running job, say) leaves the others
done. The answer is a 303
back to the page the form came from, with what happened as a flash message.
"""

from __future__ import annotations

from urllib.parse import parse_qs

import psycopg
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse

from ..connection import first_line
from . import queries, security
from .pages import parse_id, parse_shard
from .render import base_path, set_flash, when

JOB_ACTIONS = {
    "retry": (queries.RETRY_JOB, "retried"),
    "cancel": (queries.CANCEL_JOB, "cancelled"),
    "delete": (queries.DELETE_JOB, "deleted"),
}
MAX_BULK = 1000
MAX_BODY = 256 * 1024


class Form:
    """An urlencoded form body (no multipart: the dashboard's forms never upload)."""

    def __init__(self, fields: dict[str, list[str]]):
        """Keep the parsed fields."""
        self.fields = fields

    def get(self, key: str, default=None):
        """The first value of a field."""
        values = self.fields.get(key)
        return values[0] if values else default

    def getlist(self, key: str) -> list[str]:
        """Every value of a field."""
        return self.fields.get(key, [])


async def _form(request: Request) -> Form:
    """Parse the POST body as application/x-www-form-urlencoded (413 when too big)."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise HTTPException(413, "request body too large")
    try:
        return Form(parse_qs(body.decode(), keep_blank_values=True, max_num_fields=5000))
    except (UnicodeDecodeError, ValueError):
        raise HTTPException(400, "malformed form") from None


async def _checked_form(request: Request):
    """The form of an allowed POST (403 when read-only or the CSRF field is wrong)."""
    state = request.app.state.pgjobs
    if state.config.read_only:
        raise HTTPException(403, "this dashboard is read-only")
    form = await _form(request)
    if not security.csrf_ok(state.config, request, form.get(security.CSRF_FIELD)):
        raise HTTPException(403, "missing or wrong CSRF token: reload the page and try again")
    return form


def _back(request: Request, form, default: str) -> str:
    """Where to send the browser afterwards: the form's `next` if it is one of our pages."""
    base = base_path(request)
    target = str(form.get("next") or "")
    if (target.startswith(base + "/") and not target.startswith("//")
            and "\\" not in target and "\n" not in target and "\r" not in target):
        return target
    return base + default


def _sqlstate_text(exc: psycopg.Error) -> str:
    """A database refusal in one line (SQLSTATE and message)."""
    text = (exc.diag.message_primary or str(exc)).strip().splitlines()[0]
    return f"{exc.diag.sqlstate or ''} {text}".strip()


def _job_refs(state, form) -> dict[int, list[int]]:
    """The checked jobs per shard: each `id` is <id> (on the form's `shard`, 0 with one
    database) or <shard>:<id> (the job list with several shards)."""
    raw = form.getlist("id")
    if len(raw) > MAX_BULK:
        raise HTTPException(400, f"at most {MAX_BULK} jobs at once")
    refs: dict[int, set[int]] = {}
    for value in (str(v) for v in raw if str(v) != ""):
        shard_text, colon, id_text = value.partition(":")
        if colon:
            shard = parse_shard(state, shard_text)
        else:
            shard, id_text = parse_shard(state, form.get("shard"), required=True), value
        refs.setdefault(shard, set()).add(parse_id(id_text, "job id"))
    return {shard: sorted(ids) for shard, ids in sorted(refs.items())}


async def jobs_action(request: Request):
    """POST /jobs/action: action=retry|cancel|delete on the checked ids (of any shard)."""
    state = request.app.state.pgjobs
    form = await _checked_form(request)
    action = form.get("action")
    if action not in JOB_ACTIONS:
        raise HTTPException(400, "action must be retry, cancel or delete")
    refs = _job_refs(state, form)
    back = _back(request, form, "/jobs")
    query, verb = JOB_ACTIONS[action]
    done: list[str] = []
    problems: list[str] = []
    for shard, ids in refs.items():
        def name(job_id: int, shard: int = shard) -> str:
            return f"{shard}:{job_id}" if state.sharded else str(job_id)

        try:
            async with state.connection(shard) as conn:
                cur = await conn.execute(queries.TENANT_JOB_IDS,
                                         {"ids": ids, "db": state.config.tenant})
                mine = {r[0] for r in await cur.fetchall()}
                for job_id in ids:
                    if job_id not in mine:
                        problems.append(f"{name(job_id)}: not a live job")
                        continue
                    try:
                        row = await (await conn.execute(query, {"id": job_id})).fetchone()
                    except psycopg.Error as exc:
                        if state.sharded and conn.broken:  # (the shard went away)
                            raise
                        problems.append(f"{name(job_id)}: {_sqlstate_text(exc)}")
                        continue
                    if row is None or row[0] is None:
                        problems.append(f"{name(job_id)}: gone")
                    elif action == "cancel" and row[0] not in ("cancelled", "cancelling"):
                        problems.append(f"{name(job_id)}: {row[0]}, not cancelled")
                    else:
                        done.append(name(job_id))
        except psycopg.OperationalError as exc:
            if not state.sharded:
                raise
            problems.append(f"shard {shard} unreachable ({first_line(exc)})")
    state.kick()
    message = f"{verb} {len(done)} job(s)" + (f": {', '.join(done)}" if done else "")
    if problems:
        message += "; not " + verb + ": " + "; ".join(problems[:20])
    response = RedirectResponse(back, status_code=303)
    set_flash(response, request, message)
    return response


async def _schedule_action(request: Request, query: str, done) -> RedirectResponse:
    """Run `query` on the tenant's schedule of the path, on the form's shard (404 for
    another's or none); the flash says done(the query's value), or the database's
    refusal."""
    state = request.app.state.pgjobs
    form = await _checked_form(request)
    schedule_id = parse_id(request.path_params["schedule_id"], "schedule id", 404)
    shard = parse_shard(state, form.get("shard"), required=True)
    back = _back(request, form, "/schedules")
    async with state.connection(shard) as conn:
        cur = await conn.execute(queries.TENANT_SCHEDULE,
                                 {"id": schedule_id, "db": state.config.tenant})
        if await cur.fetchone() is None:
            raise HTTPException(404, f"no schedule {schedule_id}")
        try:
            row = await (await conn.execute(query, {"id": schedule_id})).fetchone()
            message = f"schedule {schedule_id}: {done(row[0])}"
        except psycopg.Error as exc:
            message = f"schedule {schedule_id}: {_sqlstate_text(exc)}"
    state.kick()
    response = RedirectResponse(back, status_code=303)
    set_flash(response, request, message)
    return response


async def schedule_run_now(request: Request):
    """POST /schedules/<id>/run: enqueue the schedule's job now (run_scheduled_job)."""
    return await _schedule_action(request, queries.RUN_SCHEDULE_NOW,
                                  lambda job_id: f"enqueued job {job_id}")


async def schedule_pause(request: Request):
    """POST /schedules/<id>/pause: the scheduler skips it until resumed (pause_scheduled_job)."""
    return await _schedule_action(request, queries.PAUSE_SCHEDULE, lambda _: "paused")


async def schedule_resume(request: Request):
    """POST /schedules/<id>/resume: from its next slot after now (resume_scheduled_job)."""
    return await _schedule_action(
        request, queries.RESUME_SCHEDULE,
        lambda next_run: f"resumed, next run {when(next_run)}" if next_run else "resumed (ended)")
