"""The dashboard under the roles README "Web dashboard" documents: a read-only role with only
USAGE on the schema, SELECT on its tables and BYPASSRLS can open every page (and sees every
row); an admin role (a member of pgjobs_admin) can also act; the read-only role cannot
act even where the dashboard is not in read-only mode (the database refuses).
"""

from __future__ import annotations

import uuid

import pytest
from psycopg.conninfo import make_conninfo
from web_helpers import add_job, csrf, failed_job, status_of

pytest.importorskip("starlette")
pytest.importorskip("httpx")

import pgjobs.web  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

READ_ONLY_GRANTS = """
CREATE ROLE {role} LOGIN BYPASSRLS;
GRANT USAGE ON SCHEMA app_jobs TO {role};
GRANT SELECT ON ALL TABLES IN SCHEMA app_jobs TO {role};
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


def test_read_only_role_sees_every_page(role, sql, conninfo):
    tenant = str(uuid.uuid4())
    waiting = add_job(sql, "ro_task", '{"secret": "visible"}', db_id=tenant)
    failed = failed_job(sql, "ro_fail", "broken", db_id=tenant)
    sql("SELECT app_jobs.add_scheduled_job(identifier := 'ro_sched', "
        "schedule_info := '{\"rule\": \"@daily\"}')")
    name = role(READ_ONLY_GRANTS)
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
    # Not read-only mode, same role: the action reaches the database, which refuses it.
    app = pgjobs.web.app(make_conninfo(conninfo, user=name))
    with TestClient(app, follow_redirects=False) as client:
        token = csrf(client.get("/jobs").text)
        res = client.post("/jobs/action", data={"csrf": token, "action": "retry",
                                                "id": str(failed)})
        assert res.status_code == 303
        assert "42501" in client.get("/jobs").text  # insufficient_privilege
    assert status_of(sql, failed) == "failed"


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
