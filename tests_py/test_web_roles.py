"""The dashboard under the roles doc/web.md documents: a LOGIN role that is only a member of
pgjobs_viewer (no BYPASSRLS, no grant of its own) opens every page in read-only mode and
sees every tenant's rows, and `pgjobs status` works for it; every write it attempts, through
the dashboard (not in read-only mode) or in SQL, is refused by the database (42501); an admin
role (a member of pgjobs_admin) can also act, pausing and resuming schedules included.
"""

from __future__ import annotations

import uuid

import pytest
from psycopg.conninfo import make_conninfo
from web_helpers import add_job, csrf, failed_job, status_of

pytest.importorskip("starlette")
pytest.importorskip("httpx")

import pgjobs.web  # noqa: E402
import psycopg  # noqa: E402
from pgjobs import admin_cli  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

VIEWER_GRANTS = """
CREATE ROLE {role} LOGIN;
GRANT pgjobs_viewer TO {role};
"""
ADMIN_GRANTS = """
CREATE ROLE {role} LOGIN;
GRANT pgjobs_admin TO {role};
"""


@pytest.fixture
def role(sql):
    """Factory: a login role made with one of the grant scripts; dropped at teardown."""
    made = []

    def _make(script: str) -> str:
        name = f"pgjobs_web_{uuid.uuid4().hex[:10]}"
        for statement in script.format(role=name).strip().split(";"):
            if statement.strip():
                sql(statement)
        made.append(name)
        return name

    yield _make
    for name in made:
        sql(f"DROP OWNED BY {name}")
        sql(f"DROP ROLE {name}")


def test_viewer_role_sees_every_page(role, sql, conninfo):
    tenant, other = str(uuid.uuid4()), str(uuid.uuid4())
    waiting = add_job(sql, "ro_task", '{"secret": "visible"}', db_id=tenant)
    failed = failed_job(sql, "ro_fail", "broken", db_id=other)
    schedule = sql("SELECT (app_jobs.add_scheduled_job(db_id := %s::uuid, identifier := "
                   "'ro_sched', schedule_info := '{\"rule\": \"@daily\"}')).id",
                   (other,))[0][0]
    name = role(VIEWER_GRANTS)
    assert sql("SELECT rolbypassrls FROM pg_roles WHERE rolname = %s", (name,))[0][0] is False
    app = pgjobs.web.app(make_conninfo(conninfo, user=name), read_only=True)
    with TestClient(app) as client:
        expect = {"/": "ro_fail", "/jobs": f'data-id="{waiting}"',
                  f"/jobs/{failed}": "broken", f"/jobs/{waiting}": "visible",
                  "/jobs?status=failed": f'data-id="{failed}"', "/schedules": "ro_sched",
                  "/workers": "web-test-worker"}
        for path, text in expect.items():
            page = client.get(path)
            assert page.status_code == 200, (path, page.text[:500])
            assert text in page.text, path
    with psycopg.connect(make_conninfo(conninfo, user=name), autocommit=True) as conn:
        report = admin_cli.status(conn)
    assert "ro_task" in report and "ro_fail" in report

    # Not read-only mode, same role: each action reaches the database, which refuses it.
    app = pgjobs.web.app(make_conninfo(conninfo, user=name))
    with TestClient(app, follow_redirects=False) as client:
        token = csrf(client.get("/jobs").text)
        for action, job in (("retry", failed), ("cancel", waiting), ("delete", waiting)):
            res = client.post("/jobs/action", data={"csrf": token, "action": action,
                                                    "id": str(job)})
            assert res.status_code == 303
            assert "42501" in client.get("/jobs").text, action  # insufficient_privilege
        for verb in ("run", "pause", "resume"):
            res = client.post(f"/schedules/{schedule}/{verb}", data={"csrf": token})
            assert res.status_code == 303
            assert f"schedule {schedule}: 42501" in client.get("/schedules").text, verb
    assert status_of(sql, failed) == "failed" and status_of(sql, waiting) == "waiting"
    assert sql("SELECT last_scheduled_id, paused_at FROM app_jobs.scheduled_jobs")[0] == (
        None, None)


WRITES = [
    "INSERT INTO app_jobs.jobs (task_identifier) VALUES ('x')",
    "UPDATE app_jobs.jobs SET priority = 1",
    "DELETE FROM app_jobs.job_history",
    "UPDATE app_jobs.scheduled_jobs SET paused_at = now()",
    "DELETE FROM app_jobs.workers",
    "TRUNCATE app_jobs.settings",
    "INSERT INTO app_jobs.settings (name, value) VALUES ('history', 'off')",
    "SELECT nextval('app_jobs.jobs_id_seq')",
    "SELECT app_jobs.add_job(identifier := 'x')",
    "SELECT app_jobs.set_setting('history', 'off')",
    "SELECT * FROM app_jobs.run_due_scheduled_jobs()",
    "SELECT app_jobs.purge_job_history()",
    "CREATE TABLE app_jobs.mine (x int)",
]


def test_viewer_role_writes_nothing_in_sql(role, sql, conninfo):
    name = role(VIEWER_GRANTS)
    with psycopg.connect(make_conninfo(conninfo, user=name), autocommit=True) as conn:
        for statement in WRITES:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)


def test_admin_role_can_act(role, sql, conninfo):
    failed = failed_job(sql, "adm_fail", "broken")
    schedule = sql("SELECT (app_jobs.add_scheduled_job(identifier := 'adm_sched', "
                   "schedule_info := '{\"rule\": \"@daily\"}')).id")[0][0]
    name = role(ADMIN_GRANTS)
    app = pgjobs.web.app(make_conninfo(conninfo, user=name))
    with TestClient(app, follow_redirects=False) as client:
        for path in ("/", "/jobs", f"/jobs/{failed}", "/schedules", "/workers"):
            assert client.get(path).status_code == 200, path
        token = csrf(client.get("/jobs").text)
        res = client.post("/jobs/action", data={"csrf": token, "action": "retry",
                                                "id": str(failed)})
        assert res.status_code == 303
        assert status_of(sql, failed) == "waiting"
        res = client.post(f"/schedules/{schedule}/run", data={"csrf": token})
        assert res.status_code == 303
        job = sql("SELECT last_scheduled_id FROM app_jobs.scheduled_jobs")[0][0]
        assert status_of(sql, job) == "waiting"
        res = client.post(f"/schedules/{schedule}/pause", data={"csrf": token})
        assert res.status_code == 303
        assert sql("SELECT paused_at IS NOT NULL FROM app_jobs.scheduled_jobs")[0][0]
        res = client.post(f"/schedules/{schedule}/resume", data={"csrf": token})
        assert res.status_code == 303
        assert sql("SELECT paused_at IS NULL FROM app_jobs.scheduled_jobs")[0][0]
