"""The dashboard's routes through Starlette's TestClient against the test cluster: every
page and what it shows, the job list's filters and keyset pagination, each action (retry,
cancel, delete, bulk, run a schedule now, pause and resume it) and its effect in the
database, read-only mode,
CSRF refusal, basic auth and the auth hook, the tenant filter, mounting under a base path,
and 4xx pages (never a 500) for bad input.
"""

from __future__ import annotations

import base64
import uuid

import pytest
from web_helpers import add_job, claim, completed_job, csrf, failed_job, status_of

pytest.importorskip("starlette")
pytest.importorskip("httpx")

import pgjobs.web  # noqa: E402
from pgjobs.web import queries  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402


@pytest.fixture
def client_for(conninfo):
    """Factory: a TestClient (lifespan running) on pgjobs.web.app(conninfo, **options)."""
    opened = []

    def _make(**options) -> TestClient:
        client = TestClient(pgjobs.web.app(conninfo, **options), follow_redirects=False)
        client.__enter__()
        opened.append(client)
        return client

    yield _make
    for client in opened:
        client.__exit__(None, None, None)


@pytest.fixture
def client(client_for) -> TestClient:
    """A TestClient on the dashboard with every action allowed and no auth."""
    return client_for()


def post_action(client: TestClient, action: str, ids: list[int], path: str = "/jobs") -> object:
    """Submit the job list's bulk form the way the browser does."""
    token = csrf(client.get(path).text)
    return client.post("/jobs/action", data={"csrf": token, "action": action,
                                             "id": [str(i) for i in ids], "next": path})


def test_every_page_shows_its_data(client, sql):
    waiting = add_job(sql, "send_email", '{"to": "ann@example.com"}')
    add_job(sql, "resize", '{"img": 7}', queue_name="images")
    failed = failed_job(sql, "charge_card", "card declined", '{"order": 981}',
                        error_data='{"type": "CardError", "traceback": "line 12"}')
    running = add_job(sql, "render")
    assert claim(sql, "render") == running
    sql("SELECT app_jobs.set_progress(%s, %s, 40, 'rendering page 4')",
        ("web-test-worker", running))
    done = completed_job(sql, "report", '{"rows": 1234}')
    sql("SELECT app_jobs.add_scheduled_job(identifier := 'nightly', "
        "schedule_info := '{\"rule\": \"30 2 * * *\", \"tz\": \"Europe/Berlin\"}')")

    page = client.get("/")
    assert page.status_code == 200
    for text in ("send_email", "charge_card", "images", "exact counts", "notification queue",
                 "1 completed, 1 failed"):
        assert text in page.text, text

    page = client.get("/jobs")
    assert page.status_code == 200
    for job_id in (waiting, failed, running, done):
        assert f'data-id="{job_id}"' in page.text

    page = client.get(f"/jobs/{failed}")
    assert page.status_code == 200
    for text in ("card declined", "&#34;order&#34;: 981", "CardError", "line 12", "failed"):
        assert text in page.text, text
    page = client.get(f"/jobs/{running}")
    assert "rendering page 4" in page.text and "40%" in page.text
    assert "web-test-worker" in page.text and "testhost" in page.text
    page = client.get(f"/jobs/{done}")
    assert "&#34;rows&#34;: 1234" in page.text and "completed" in page.text

    page = client.get("/schedules")
    assert page.status_code == 200
    next_utc, next_local = sql(
        "SELECT to_char(next_run_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'), "
        "to_char(next_run_at AT TIME ZONE 'Europe/Berlin', 'YYYY-MM-DD HH24:MI:SS') "
        "FROM app_jobs.scheduled_jobs")[0]
    for text in ("nightly", "30 2 * * *", "Europe/Berlin", next_utc, next_local, "Run now"):
        assert text in page.text, text

    page = client.get("/workers")
    assert page.status_code == 200
    assert "web-test-worker" in page.text and f'href="/jobs/{running}"' in page.text


def test_dependencies_and_bundle_on_the_job_page(client, sql):
    first = add_job(sql, "extract")
    second = sql("SELECT (app_jobs.add_job(identifier := 'load', depends_on := ARRAY[%s]::bigint[]"
                 ")).id", (first,))[0][0]
    page = client.get(f"/jobs/{second}")
    assert f'href="/jobs/{first}"' in page.text and "waits for 1" in page.text
    page = client.get(f"/jobs/{first}")
    assert "Jobs waiting for it" in page.text and f'href="/jobs/{second}"' in page.text


@pytest.mark.parametrize(("query", "expect", "reject"), [
    ("status=failed", ["failing"], ["plain", "other"]),
    ("status=waiting", ["plain", "other"], ["failing"]),
    ("status=completed", ["finished"], ["plain", "failing"]),
    ("task=plain", ["plain"], ["other", "failing"]),
    ("queue=q1", ["other"], ["plain", "failing"]),
    ("q=needle", ["plain"], ["other", "failing"]),
    ("q=exploded", ["failing"], ["plain", "other"]),
    ("status=waiting&task=other&queue=q1", ["other"], ["plain"]),
])
def test_job_list_filters(client, sql, query, expect, reject):
    ids = {
        "plain": add_job(sql, "plain", '{"text": "a needle here"}'),
        "other": add_job(sql, "other", queue_name="q1"),
        "failing": failed_job(sql, "failing", "it exploded"),
        "finished": completed_job(sql, "finished"),
    }
    page = client.get(f"/jobs?{query}")
    assert page.status_code == 200
    for name in expect:
        assert f'data-id="{ids[name]}"' in page.text, name
    for name in reject:
        assert f'data-id="{ids[name]}"' not in page.text, name


def test_keyset_pagination_walks_every_job_once(client, sql):
    sql("SELECT app_jobs.add_jobs(ARRAY(SELECT 'page_me' FROM generate_series(1, 120)))")
    for _ in range(3):
        completed_job(sql, "page_done")
    all_ids = [r[0] for r in sql("SELECT id FROM app_jobs.job_status ORDER BY id DESC")]
    assert len(all_ids) == 123
    seen, url, pages = [], "/jobs", []
    while url:
        page = client.get(url)
        assert page.status_code == 200
        ids = [int(x) for x in __import__("re").findall(r'<tr data-id="(\d+)"', page.text)]
        seen += ids
        pages.append(url)
        nxt = __import__("re").search(r'rel="next" href="([^"]+)"', page.text)
        url = nxt.group(1).replace("&amp;", "&") if nxt else None
    assert seen == all_ids and len(pages) == 3
    # Back from the last page: "newer" shows the 50 jobs before it, in the same order.
    last = client.get(pages[-1]).text
    newer = __import__("re").search(r'rel="prev" href="([^"]+)"', last).group(1)
    ids = [int(x) for x in __import__("re").findall(r'<tr data-id="(\d+)"',
                                                    client.get(newer.replace("&amp;", "&")).text)]
    assert ids == all_ids[50:100]
    # No statement of the list uses OFFSET.
    for statement in (queries.LIVE_OLDER, queries.LIVE_NEWER, queries.FINISHED_OLDER,
                      queries.FINISHED_NEWER):
        assert "OFFSET" not in statement.upper()


def test_retry_cancel_delete_and_their_effect(client, sql):
    failed = failed_job(sql, "flaky", "timeout")
    waiting = add_job(sql, "to_cancel")
    doomed = failed_job(sql, "doomed", "bad data")
    running = add_job(sql, "busy")
    claim(sql, "busy")

    res = post_action(client, "retry", [failed], f"/jobs/{failed}")
    assert res.status_code == 303 and res.headers["location"] == f"/jobs/{failed}"
    assert status_of(sql, failed) == "waiting"
    assert "retried 1 job(s)" in client.get(res.headers["location"]).text

    post_action(client, "cancel", [waiting])
    assert status_of(sql, waiting) == "cancelled"

    post_action(client, "delete", [doomed])
    assert sql("SELECT count(*) FROM app_jobs.jobs WHERE id = %s", (doomed,))[0][0] == 0

    # A running job is not deleted (PJ020); the refusal is shown, nothing breaks.
    res = post_action(client, "delete", [running])
    assert res.status_code == 303
    assert "PJ020" in client.get("/jobs").text
    assert status_of(sql, running) == "running"
    # Cancelling a running job asks its worker to stop.
    post_action(client, "cancel", [running])
    assert sql("SELECT cancel_requested_at IS NOT NULL FROM app_jobs.jobs WHERE id = %s",
               (running,))[0][0]


def test_bulk_retry_of_every_failed_job(client, sql):
    ids = [failed_job(sql, f"bulk_{i}", "nope") for i in range(4)]
    res = post_action(client, "retry", ids, "/jobs?status=failed")
    assert res.status_code == 303 and res.headers["location"] == "/jobs?status=failed"
    assert [status_of(sql, i) for i in ids] == ["waiting"] * 4


def test_run_schedule_now(client, sql):
    schedule = sql("SELECT (app_jobs.add_scheduled_job(identifier := 'hourly', "
                   "schedule_info := '{\"rule\": \"@hourly\"}')).id")[0][0]
    token = csrf(client.get("/schedules").text)
    res = client.post(f"/schedules/{schedule}/run", data={"csrf": token, "next": "/schedules"})
    assert res.status_code == 303
    job = sql("SELECT last_scheduled_id FROM app_jobs.scheduled_jobs")[0][0]
    assert status_of(sql, job) == "waiting"
    # Again while that job waits: run_scheduled_job refuses (PJ041), shown as a message.
    res = client.post(f"/schedules/{schedule}/run", data={"csrf": token, "next": "/schedules"})
    assert res.status_code == 303 and "PJ041" in client.get("/schedules").text


def test_pause_and_resume_schedule(client, sql):
    schedule = sql("SELECT (app_jobs.add_scheduled_job(identifier := 'pausable', "
                   "schedule_info := '{\"rule\": \"*/10 * * * *\"}')).id")[0][0]
    page = client.get("/schedules").text
    assert f'action="/schedules/{schedule}/pause"' in page and ">active<" in page
    assert "/resume" not in page
    token = csrf(page)
    res = client.post(f"/schedules/{schedule}/pause", data={"csrf": token, "next": "/schedules"})
    assert res.status_code == 303 and res.headers["location"] == "/schedules"
    assert sql("SELECT paused_at IS NOT NULL FROM app_jobs.scheduled_jobs")[0][0]
    page = client.get("/schedules").text
    assert f"schedule {schedule}: paused" in page  # the flash
    assert 'class="status paused"' in page and f'action="/schedules/{schedule}/resume"' in page
    assert "/pause" not in page
    assert "(1 paused)" in client.get("/").text
    # While paused the scheduler tick enqueues nothing for it.
    sql("UPDATE app_jobs.scheduled_jobs SET next_run_at = now() - interval '1 hour'")
    assert sql("SELECT count(*) FROM app_jobs.run_due_scheduled_jobs()")[0][0] == 0
    # Pausing twice is harmless; resuming starts from the next slot after now.
    client.post(f"/schedules/{schedule}/pause", data={"csrf": token})
    res = client.post(f"/schedules/{schedule}/resume", data={"csrf": token, "next": "/schedules"})
    assert res.status_code == 303
    paused, future = sql("SELECT paused_at IS NOT NULL, next_run_at > now() "
                         "FROM app_jobs.scheduled_jobs")[0]
    assert not paused and future
    page = client.get("/schedules").text
    assert f"schedule {schedule}: resumed, next run" in page
    assert f'action="/schedules/{schedule}/pause"' in page


@pytest.mark.parametrize("verb", ["pause", "resume"])
@pytest.mark.parametrize("token", [None, "forged"])
def test_pause_resume_need_csrf(client, sql, verb, token):
    schedule = sql("SELECT (app_jobs.add_scheduled_job(identifier := 'csrf_s', "
                   "schedule_info := '{\"rule\": \"@daily\"}')).id")[0][0]
    if verb == "resume":
        sql("SELECT app_jobs.pause_scheduled_job(%s)", (schedule,))
    before = sql("SELECT paused_at, next_run_at FROM app_jobs.scheduled_jobs")[0]
    client.get("/schedules")  # the browser has its cookie
    res = client.post(f"/schedules/{schedule}/{verb}",
                      data={} if token is None else {"csrf": token})
    assert res.status_code == 403
    assert sql("SELECT paused_at, next_run_at FROM app_jobs.scheduled_jobs")[0] == before


def test_read_only_hides_and_refuses_every_action(client_for, sql):
    failed = failed_job(sql, "ro", "x")
    schedule = sql("SELECT (app_jobs.add_scheduled_job(identifier := 'ro_s', "
                   "schedule_info := '{\"rule\": \"@daily\"}')).id")[0][0]
    client = client_for(read_only=True)
    for path in ("/", "/jobs", f"/jobs/{failed}", "/schedules", "/workers"):
        page = client.get(path)
        assert page.status_code == 200
        assert 'name="action"' not in page.text and "Run now" not in page.text
        assert ">Pause<" not in page.text and ">Resume<" not in page.text
        assert 'class="pick"' not in page.text
    # Even with a valid token (taken from a writable dashboard with the same secret).
    writable = client_for(secret=b"k" * 32)
    token = csrf(writable.get("/jobs").text)
    client = client_for(read_only=True, secret=b"k" * 32)
    client.cookies = writable.cookies
    res = client.post("/jobs/action", data={"csrf": token, "action": "retry", "id": failed})
    assert res.status_code == 403
    for verb in ("run", "pause", "resume"):
        res = client.post(f"/schedules/{schedule}/{verb}", data={"csrf": token})
        assert res.status_code == 403, verb
    assert status_of(sql, failed) == "failed"
    assert sql("SELECT last_scheduled_id, paused_at FROM app_jobs.scheduled_jobs")[0] == (
        None, None)


@pytest.mark.parametrize("token", [None, "", "0" * 64, "forged"])
def test_csrf_refusal(client, sql, token):
    failed = failed_job(sql, "csrf", "x")
    client.get("/jobs")  # the browser has its cookie
    data = {"action": "retry", "id": str(failed)}
    if token is not None:
        data["csrf"] = token
    res = client.post("/jobs/action", data=data)
    assert res.status_code == 403
    assert status_of(sql, failed) == "failed"


def test_csrf_field_must_match_this_browsers_cookie(client_for, sql):
    failed = failed_job(sql, "csrf2", "x")
    alice = client_for(secret=b"s" * 32)
    mallory = client_for(secret=b"s" * 32)
    token_for_mallory = csrf(mallory.get("/jobs").text)
    alice.get("/jobs")
    res = alice.post("/jobs/action", data={"csrf": token_for_mallory, "action": "retry",
                                           "id": str(failed)})
    assert res.status_code == 403 and status_of(sql, failed) == "failed"


def _basic(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_basic_auth_from_the_environment(client_for, monkeypatch):
    monkeypatch.setenv("PGJOBS_WEB_USER", "ops")
    monkeypatch.setenv("PGJOBS_WEB_PASSWORD", "s3cret")
    client = client_for()
    for path in ("/", "/jobs", "/jobs/1", "/schedules", "/workers", "/events",
                 "/static/htmx.min.js"):
        res = client.get(path)
        assert res.status_code == 401, path
        assert res.headers["www-authenticate"].startswith("Basic")
    assert client.post("/jobs/action").status_code == 401
    assert client.get("/", headers=_basic("ops", "wrong")).status_code == 401
    assert client.get("/", headers=_basic("opx", "s3cret")).status_code == 401
    assert client.get("/", headers={"Authorization": "Basic !!!"}).status_code == 401
    assert client.get("/", headers=_basic("ops", "s3cret")).status_code == 200


def test_auth_hook(client_for):
    client = client_for(auth=lambda request: request.headers.get("x-user") == "admin")
    assert client.get("/").status_code == 403
    assert client.get("/", headers={"x-user": "admin"}).status_code == 200

    async def async_hook(request):
        return request.cookies.get("session") == "ok"

    client = client_for(auth=async_hook)
    assert client.get("/jobs").status_code == 403
    client.cookies.set("session", "ok")
    assert client.get("/jobs").status_code == 200


def test_tenant_filter(client_for, sql):
    mine, theirs = str(uuid.uuid4()), str(uuid.uuid4())
    own = add_job(sql, "tenant_task", '{"who": "mine"}', db_id=mine)
    other = add_job(sql, "tenant_task", '{"who": "theirs"}', db_id=theirs)
    other_failed = failed_job(sql, "tenant_fail", "x", db_id=theirs)
    sql("SELECT app_jobs.add_scheduled_job(db_id := %s::uuid, identifier := 'their_sched', "
        "schedule_info := '{\"rule\": \"@daily\"}')", (theirs,))
    client = client_for(tenant=mine)
    page = client.get("/jobs")
    assert f'data-id="{own}"' in page.text and f'data-id="{other}"' not in page.text
    assert client.get(f"/jobs/{other}").status_code == 404
    assert client.get(f"/jobs/{own}").status_code == 200
    overview = client.get("/").text
    assert "tenant_fail" not in overview
    assert "their_sched" not in client.get("/schedules").text
    res = post_action(client, "retry", [other_failed])
    assert res.status_code == 303 and status_of(sql, other_failed) == "failed"
    post_action(client, "cancel", [other])
    assert status_of(sql, other) == "waiting"
    schedule = sql("SELECT id FROM app_jobs.scheduled_jobs")[0][0]
    token = csrf(client.get("/jobs").text)
    for verb in ("run", "pause", "resume"):
        res = client.post(f"/schedules/{schedule}/{verb}", data={"csrf": token})
        assert res.status_code == 404, verb
    assert sql("SELECT last_scheduled_id, paused_at FROM app_jobs.scheduled_jobs")[0] == (
        None, None)


def test_base_path(client_for, sql):
    job = add_job(sql, "mounted")
    client = client_for(base_path="/ops/jobs")
    page = client.get("/ops/jobs/jobs")
    assert page.status_code == 200
    assert f'href="/ops/jobs/jobs/{job}"' in page.text
    assert 'src="/ops/jobs/static/htmx.min.js"' in page.text
    assert client.get("/ops/jobs/static/htmx.min.js").status_code == 200
    assert client.get("/jobs").status_code == 404
    res = post_action(client, "cancel", [job], "/ops/jobs/jobs")
    # post_action posts to /jobs/action: outside the mount, so nothing happened.
    assert res.status_code == 404 and status_of(sql, job) == "waiting"
    token = csrf(client.get("/ops/jobs/jobs").text)
    res = client.post("/ops/jobs/jobs/action", data={"csrf": token, "action": "cancel",
                                                     "id": str(job), "next": "/elsewhere"})
    assert res.status_code == 303 and res.headers["location"] == "/ops/jobs/jobs"
    assert status_of(sql, job) == "cancelled"


BAD_INPUT = [
    ("/jobs/0", 404), ("/jobs/-1", 404), ("/jobs/abc", 404), ("/jobs/1.5", 404),
    ("/jobs/99999999", 404), ("/jobs/9223372036854775807", 404),
    ("/jobs/9223372036854775808", 404), ("/jobs/" + "9" * 400, 404), ("/jobs/١٢", 404),
    ("/jobs?status=exploded", 400), ("/jobs?status=%00", 400),
    ("/jobs?after=abc", 400), ("/jobs?after=-5", 400), ("/jobs?after=" + "9" * 30, 400),
    ("/jobs?before=1e9", 400), ("/jobs?after=5&before=3", 400),
    ("/jobs?task=" + "t" * 500, 400), ("/jobs?q=" + "q" * 5000, 400),
    ("/jobs?task=%01bell", 400), ("/nowhere", 404), ("/jobs/1/extra", 404),
]


@pytest.mark.parametrize(("path", "status"), BAD_INPUT)
def test_bad_input_gets_a_4xx_page(client, path, status):
    res = client.get(path)
    assert res.status_code == status
    assert "Traceback" not in res.text and "psycopg" not in res.text


@pytest.mark.parametrize("data", [
    {"action": "explode", "id": "1"},
    {"action": "retry", "id": "abc"},
    {"action": "retry", "id": "9" * 40},
    {"action": "retry", "id": [str(i) for i in range(1, 1100)]},
])
def test_bad_action_input_gets_a_4xx(client, data):
    token = csrf(client.get("/jobs").text)
    res = client.post("/jobs/action", data={"csrf": token, **data})
    assert res.status_code == 400


def test_bad_schedule_ids(client):
    token = csrf(client.get("/jobs").text)
    for verb in ("run", "pause", "resume"):
        for sid in ("0", "abc", "99999", "9" * 30):
            res = client.post(f"/schedules/{sid}/{verb}", data={"csrf": token})
            assert res.status_code == 404, (verb, sid)
        assert client.get(f"/schedules/1/{verb}").status_code == 405
    assert client.post("/schedules/1/explode", data={"csrf": token}).status_code == 404
