"""Access control with real login sessions: each test logs in as a fresh role that is a
member of pgjobs_enqueue, pgjobs_worker or pgjobs_admin (or of none), and does what that
kind of client does: a worker-only login runs pgjobs-worker end to end, an enqueue-only
login enqueues and follows its own tenant's jobs, an admin login runs the `pgjobs`
command, a PostgREST-style NOINHERIT authenticator acts through SET ROLE, and a
non-superuser owns a plain (no CREATE EXTENSION) install. An enqueue login is refused
(PJ030) every call on another tenant, unconditionally, and the other tenant's rows stay
as they were.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pgjobs
import psycopg
import pytest
from psycopg import errors, sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

BIN = Path(sys.executable).parent
TENANT_A = "00000000-0000-0000-0000-00000000000a"
TENANT_B = "00000000-0000-0000-0000-00000000000b"


@pytest.fixture
def login(db: psycopg.Connection) -> Iterator[Callable[..., str]]:
    """Factory: a new LOGIN role in the given pgjobs roles; returns its conninfo.

    login("pgjobs_enqueue", claim=A) also sets jwt.claims.database_id for the role;
    inherit=False makes it NOINHERIT. The roles are dropped at teardown.
    """
    made: list[str] = []

    def _login(*groups: str, inherit: bool = True, claim: str | None = None,
               dsn: str | None = None) -> str:
        name = f"pgjobs_t_{uuid.uuid4().hex[:12]}"
        db.execute(sql.SQL("CREATE ROLE {} LOGIN {}").format(
            sql.Identifier(name), sql.SQL("INHERIT" if inherit else "NOINHERIT")))
        made.append(name)
        for group in groups:
            db.execute(sql.SQL("GRANT {} TO {}").format(
                sql.Identifier(group), sql.Identifier(name)))
        if claim:
            db.execute(sql.SQL("ALTER ROLE {} SET jwt.claims.database_id = {}").format(
                sql.Identifier(name), sql.Literal(claim)))
        db.commit()
        return make_conninfo(dsn or db.info.dsn, user=name)

    yield _login
    db.rollback()
    for name in made:
        db.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))
    db.commit()


def owner_sql(db: psycopg.Connection, query: str, params: object = None) -> list:
    cur = db.execute(query, params)
    rows = cur.fetchall() if cur.description else []
    db.commit()
    return rows


def run_worker(conninfo: str, tmp_path: Path) -> subprocess.CompletedProcess:
    tasks = tmp_path / "sec_tasks.py"
    tasks.write_text(textwrap.dedent("""
        import pgjobs

        @pgjobs.task
        def sec_ok(payload, job):
            return {"tenant": str(job.database_id)}

        @pgjobs.task
        def sec_boom(payload, job):
            raise RuntimeError("boom")
    """))
    return subprocess.run(
        [str(BIN / "pgjobs-worker"), "--database-url", conninfo, "--tasks", str(tasks),
         "--burst"],
        capture_output=True, text=True, timeout=60,
    )


def test_roles_exist_and_are_siblings(db):
    rows = db.execute(
        "SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname IN"
        " ('pgjobs_enqueue', 'pgjobs_worker', 'pgjobs_admin') ORDER BY 1"
    ).fetchall()
    assert rows == [("pgjobs_admin", False), ("pgjobs_enqueue", False), ("pgjobs_worker", False)]
    nested = db.execute(
        "SELECT count(*) FROM pg_auth_members AS m"
        " JOIN pg_roles AS g ON g.oid = m.roleid JOIN pg_roles AS r ON r.oid = m.member"
        " WHERE g.rolname LIKE 'pgjobs\\_%' AND r.rolname LIKE 'pgjobs\\_%'"
        "   AND r.rolname NOT LIKE 'pgjobs\\_t\\_%'"
    ).fetchone()[0]
    assert nested == 0


def test_worker_login_runs_the_worker_end_to_end(db, login, tmp_path):
    """Only pgjobs_worker: register, claim, complete, fail, heartbeat, tick, unregister."""
    for tenant in (TENANT_A, TENANT_B, None):
        owner_sql(db, "SELECT app_jobs.add_job(db_id := %s, identifier := 'sec_ok')", (tenant,))
    owner_sql(db, "SELECT app_jobs.add_job(identifier := 'sec_boom', max_attempts := 1)")
    worker = login("pgjobs_worker")

    res = run_worker(worker, tmp_path)

    assert res.returncode == 0, res.stderr
    assert "permission denied" not in res.stderr and "42501" not in res.stderr, res.stderr
    assert "3 completed, 1 failed" in res.stderr
    history = owner_sql(
        db, "SELECT task_identifier, status, count(*) FROM app_jobs.job_history"
        " GROUP BY 1, 2 ORDER BY 1, 2")
    assert history == [("sec_boom", "failed", 1), ("sec_ok", "completed", 3)]
    assert owner_sql(db, "SELECT count(*) FROM app_jobs.workers") == [(0,)]


def test_worker_login_cannot_enqueue_configure_or_write(db, login):
    with psycopg.connect(login("pgjobs_worker"), autocommit=True) as conn:
        for statement in (
            "SELECT app_jobs.add_job(identifier := 'x')",
            "SELECT app_jobs.set_task_settings('x', max_attempts := 1)",
            "SELECT app_jobs.complete_jobs(ARRAY[1]::bigint[])",
            "INSERT INTO app_jobs.jobs (task_identifier) VALUES ('x')",
            "DELETE FROM app_jobs.workers",
        ):
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute(statement)
        assert conn.execute("SELECT count(*) FROM app_jobs.settings").fetchone() == (0,)


def test_enqueue_login_enqueues_and_follows_its_tenant(db, login, tmp_path):
    """Only pgjobs_enqueue, tenant A from a role-level claim; a worker login runs the jobs."""
    owner_sql(db, "SELECT app_jobs.add_job(db_id := %s, identifier := 'sec_ok')", (TENANT_B,))
    with psycopg.connect(login("pgjobs_enqueue", claim=TENANT_A), autocommit=True) as conn:
        job_id = pgjobs.add_job(conn, "sec_ok", {"n": 1})
        assert conn.execute(
            "SELECT database_id::text FROM app_jobs.jobs WHERE id = %s", (job_id,)
        ).fetchone() == (TENANT_A,)
        assert conn.execute("SELECT count(*) FROM app_jobs.jobs").fetchone() == (1,)
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM app_jobs.get_jobs('w_sec')")
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM app_jobs.workers")

        res = run_worker(login("pgjobs_worker"), tmp_path)
        assert res.returncode == 0, res.stderr
        assert "2 completed" in res.stderr

        # job_status (security_invoker) and job_history show the tenant's finished job only.
        assert pgjobs.wait_for_job(conn, job_id, timeout=5) == {"tenant": TENANT_A}
        assert conn.execute("SELECT id, status FROM app_jobs.job_status").fetchall() == [
            (job_id, "completed")]
        assert conn.execute("SELECT count(*) FROM app_jobs.job_history").fetchone() == (1,)


def tenant_rows(db: psycopg.Connection, tenant: str) -> dict[str, list]:
    """Every row of `tenant` in jobs, scheduled_jobs and job_bundles, as the owner sees them."""
    return {
        table: owner_sql(db, f"SELECT to_jsonb(t) FROM app_jobs.{table} AS t"
                             " WHERE database_id = %s ORDER BY id", (tenant,))
        for table in ("jobs", "scheduled_jobs", "job_bundles")
    }


# What an enqueue login held to tenant A tries against tenant B (or no tenant at all).
REFUSED = {
    "add_job for B": (
        "SELECT app_jobs.add_job(db_id := %(b)s, identifier := 'sec_ok')"),
    "add_job for no tenant": (
        "SELECT app_jobs.add_job(db_id := NULL, identifier := 'sec_ok')"),
    "add_job with the key of B's job": (
        "SELECT app_jobs.add_job(identifier := 'sec_ok', job_key := 'sec_b_key')"),
    "add_bundle for B": (
        "SELECT app_jobs.add_bundle('sec', '[{\"identifier\": \"sec_ok\"}]', db_id := %(b)s)"),
    "add_scheduled_job for B": (
        "SELECT app_jobs.add_scheduled_job(db_id := %(b)s, identifier := 'sec_ok',"
        " schedule_info := '{\"rule\": \"* * * * *\"}')"),
    "add_scheduled_job with the key of B's schedule": (
        "SELECT app_jobs.add_scheduled_job(identifier := 'sec_ok',"
        " schedule_info := '{\"rule\": \"* * * * *\"}', job_key := 'sec_b_sched')"),
}


@pytest.mark.parametrize("what", REFUSED)
def test_enqueue_login_cannot_enqueue_for_another_tenant(db, login, what):
    owner_sql(db, "SELECT app_jobs.add_job(db_id := %s, identifier := 'sec_ok',"
                  " job_key := 'sec_b_key')", (TENANT_B,))
    owner_sql(db, "SELECT app_jobs.add_scheduled_job(db_id := %s, identifier := 'sec_ok',"
                  " schedule_info := '{\"rule\": \"0 0 1 1 *\"}', job_key := 'sec_b_sched')",
              (TENANT_B,))
    before = tenant_rows(db, TENANT_B)
    with psycopg.connect(login("pgjobs_enqueue", claim=TENANT_A), autocommit=True) as conn:
        with pytest.raises(psycopg.Error) as err:
            conn.execute(REFUSED[what], {"b": TENANT_B})
        assert err.value.sqlstate == "PJ030", err.value
        # The same login may act on its own tenant: the refusal is about the tenant.
        assert pgjobs.add_job(conn, "sec_ok") is not None
    assert tenant_rows(db, TENANT_B) == before
    assert owner_sql(db, "SELECT count(*) FROM app_jobs.jobs WHERE database_id IS NULL") == [
        (0,)]


def test_enqueue_login_add_job_message_names_the_tenant(db, login):
    with psycopg.connect(login("pgjobs_enqueue", claim=TENANT_A), autocommit=True) as conn:
        with pytest.raises(psycopg.Error, match="permission denied for database_id") as err:
            pgjobs.add_job(conn, "sec_ok", db_id=TENANT_B)
        assert err.value.sqlstate == "PJ030"
        assert TENANT_B in str(err.value)
        with pytest.raises(psycopg.Error) as err:
            pgjobs.add_bundle(conn, "sec", [{"identifier": "sec_ok"}], db_id=TENANT_B)
        assert err.value.sqlstate == "PJ030"
    assert owner_sql(db, "SELECT count(*) FROM app_jobs.jobs") == [(0,)]


def test_enqueue_login_cannot_cancel_another_tenants_job(db, login):
    """cancel_job of B's waiting or running job (or a tenant-less one) is NULL, as if
    the job did not exist, and changes nothing; the login's own job is cancelled."""
    waiting = owner_sql(
        db, "SELECT id FROM app_jobs.add_job(db_id := %s, identifier := 'sec_wait')",
        (TENANT_B,))[0][0]
    running = owner_sql(
        db, "SELECT id FROM app_jobs.add_job(db_id := %s, identifier := 'sec_run')",
        (TENANT_B,))[0][0]
    nobody = owner_sql(db, "SELECT id FROM app_jobs.add_job(identifier := 'sec_wait')")[0][0]
    own = owner_sql(
        db, "SELECT id FROM app_jobs.add_job(db_id := %s, identifier := 'sec_wait')",
        (TENANT_A,))[0][0]
    assert owner_sql(db, "SELECT id FROM app_jobs.get_jobs('w_sec', ARRAY['sec_run'])") == [
        (running,)]
    before = tenant_rows(db, TENANT_B)
    with psycopg.connect(login("pgjobs_enqueue", claim=TENANT_A), autocommit=True) as conn:
        for job_id in (waiting, running, nobody):
            assert conn.execute("SELECT app_jobs.cancel_job(%s)", (job_id,)).fetchone() == (
                None,), job_id
        assert conn.execute("SELECT app_jobs.cancel_job(%s)", (own,)).fetchone() == (
            "cancelled",)
    assert tenant_rows(db, TENANT_B) == before
    assert owner_sql(db, "SELECT count(*) FROM app_jobs.jobs WHERE id = %s", (nobody,)) == [(1,)]
    assert owner_sql(db, "SELECT job_id, status FROM app_jobs.job_history") == [
        (own, "cancelled")]


def test_authenticator_acts_through_set_role(db, login):
    """A PostgREST/PostGraphile-style NOINHERIT login that may become any pgjobs role: it
    has no rights of its own, and after SET ROLE pgjobs_enqueue it is held to the claim,
    although the session user is a member of pgjobs_worker and pgjobs_admin."""
    owner_sql(db, "SELECT app_jobs.add_job(db_id := %s, identifier := 'sec_ok')", (TENANT_B,))
    auth = login("pgjobs_enqueue", "pgjobs_worker", "pgjobs_admin", inherit=False)
    with psycopg.connect(auth) as conn:
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("SELECT app_jobs.add_job(identifier := 'x')")
        conn.rollback()

        conn.execute("SET LOCAL ROLE pgjobs_enqueue")
        conn.execute("SELECT set_config('jwt.claims.database_id', %s, true)", (TENANT_A,))
        row = conn.execute(
            "SELECT id, database_id::text FROM app_jobs.add_job(identifier := 'sec_ok')"
        ).fetchone()
        assert row[1] == TENANT_A
        assert conn.execute("SELECT array_agg(id) FROM app_jobs.job_status").fetchone() == (
            [row[0]],)
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM app_jobs.get_jobs('w_sec')")
        conn.rollback()

        conn.execute("SET LOCAL ROLE pgjobs_worker")
        assert conn.execute(
            "SELECT count(*) FROM app_jobs.get_jobs('w_sec', NULL, '4 hours', 10)"
        ).fetchone() == (1,)
        conn.rollback()

        conn.execute("SET LOCAL ROLE pgjobs_enqueue")
        conn.execute("SELECT set_config('jwt.claims.database_id', %s, true)", (TENANT_A,))
        with pytest.raises(psycopg.Error) as err:
            conn.execute("SELECT app_jobs.add_job(db_id := %s, identifier := 'x')", (TENANT_B,))
        assert err.value.sqlstate == "PJ030"
        conn.rollback()


def test_admin_login_runs_the_admin_command(db, login):
    failed = owner_sql(
        db, "SELECT id FROM app_jobs.add_job(identifier := 'sec_ok', max_attempts := 1)")[0][0]
    owner_sql(db, "SELECT app_jobs.permanently_fail_jobs(ARRAY[%s]::bigint[])", (failed,))
    admin = login("pgjobs_admin")

    def pgjobs_cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "pgjobs"), "--database-url", admin, *args],
                              capture_output=True, text=True, timeout=30)

    res = pgjobs_cli("status")
    assert res.returncode == 0, res.stderr
    assert "sec_ok" in res.stdout
    res = pgjobs_cli("add", "sec_ok", '{"n": 2}', "--db-id", TENANT_B)
    assert res.returncode == 0, res.stderr
    res = pgjobs_cli("retry", "--all-failed")
    assert res.returncode == 0, res.stderr
    assert f"retrying 1 job(s): [{failed}]" in res.stdout
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("SELECT app_jobs.set_task_settings('sec_ok', max_attempts := 3)")
        conn.execute("SELECT app_jobs.set_setting('history_retention', '1 day')")
        assert conn.execute("SELECT count(*) FROM app_jobs.jobs").fetchone() == (2,)
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("UPDATE app_jobs.jobs SET priority = 1")


def test_login_without_a_pgjobs_role_gets_nothing(db, login):
    with psycopg.connect(login(), autocommit=True) as conn:
        for statement in (
            "SELECT app_jobs.add_job(identifier := 'x')",
            "SELECT * FROM app_jobs.job_status",
            "SELECT app_jobs.get_job('w')",
        ):
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute(statement)


def test_plain_install_by_a_non_superuser_owner(db, login, empty_db):
    """`pgjobs install` (no CREATE EXTENSION) by a role that only has CREATE on the
    database: it owns everything, the grants and policies are in place, and an enqueue
    login works."""
    target = empty_db()
    dbname = conninfo_to_dict(target)["dbname"]
    owner = login(dsn=target)
    owner_name = conninfo_to_dict(owner)["user"]
    with psycopg.connect(target, autocommit=True) as su:
        su.execute(sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(
            sql.Identifier(dbname), sql.Identifier(owner_name)))
    res = subprocess.run([str(BIN / "pgjobs"), "--database-url", owner, "install"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    enqueue = login("pgjobs_enqueue", claim=TENANT_A, dsn=target)
    try:
        with psycopg.connect(enqueue, autocommit=True) as conn:
            job_id = pgjobs.add_job(conn, "sec_ok")
            assert conn.execute("SELECT id FROM app_jobs.job_status").fetchall() == [(job_id,)]
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute("SELECT app_jobs.get_job('w')")
        with psycopg.connect(owner, autocommit=True) as conn:
            # The owner is not a superuser: it still acts on every tenant.
            conn.execute("SELECT app_jobs.add_job(db_id := %s, identifier := 'x')", (TENANT_B,))
            assert conn.execute("SELECT count(*) FROM app_jobs.jobs").fetchone() == (2,)
    finally:
        # The owner's objects go with its database; drop them first so DROP ROLE works.
        with psycopg.connect(target, autocommit=True) as su:
            su.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(owner_name)))
