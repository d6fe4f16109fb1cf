"""Tenant checks that hold whatever the interleaving, with real concurrent sessions and
real login roles (each a member of pgjobs_enqueue only, with a tenant claim):

- tenant B holds an open transaction that added a job with key K; tenant A's add_job with
  key K waits for it, and once B commits gets PJ030 in every job_key_mode (it neither
  overwrites B's job nor returns B's row); B's job is unchanged;
- the same for a schedule key (add_scheduled_job);
- A's depends_on on B's running job is refused (PJ030) and takes no lock: B's worker
  finishes the job at once with a lock_timeout of 1 s;
- an enqueuer's open transaction that depends on its own tenant's running job, or that
  added a job to the same named queue, makes finish_jobs report that job busy at once
  instead of waiting (lock_timeout 1 s); delivered again after the commit, it completes
  and unblocks the new dependent.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

TENANT_A = "00000000-0000-0000-0000-00000000000a"
TENANT_B = "00000000-0000-0000-0000-00000000000b"


@pytest.fixture
def tenant(db: psycopg.Connection) -> Iterator[Callable[[str], str]]:
    """Factory: a LOGIN role in pgjobs_enqueue with the given tenant claim; its conninfo."""
    made: list[str] = []

    def _tenant(claim: str) -> str:
        name = f"pgjobs_t_{uuid.uuid4().hex[:12]}"
        db.execute(sql.SQL("CREATE ROLE {} LOGIN IN ROLE pgjobs_enqueue").format(
            sql.Identifier(name)))
        db.execute(sql.SQL("ALTER ROLE {} SET jwt.claims.database_id = {}").format(
            sql.Identifier(name), sql.Literal(claim)))
        db.commit()
        made.append(name)
        return psycopg.conninfo.make_conninfo(db.info.dsn, user=name)

    yield _tenant
    db.rollback()
    for name in made:
        db.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))
    db.commit()


def in_thread(target: Callable[[], object]) -> tuple[threading.Thread, dict]:
    """Run target in a thread; its result or exception lands in the returned dict."""
    out: dict = {}

    def run() -> None:
        try:
            out["result"] = target()
        except BaseException as exc:  # reported to the test
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def wait_until_blocked(db: psycopg.Connection, pid: int, timeout: float = 10.0) -> None:
    """Until backend `pid` waits for a lock (so the interleaving is the one we want)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = db.execute(
            "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)
        ).fetchone()
        db.commit()
        if row and row[0] == "Lock":
            return
        time.sleep(0.02)
    raise AssertionError(f"session {pid} never waited for a lock")


def job_row(db: psycopg.Connection, job_id: int) -> dict:
    row = db.execute(
        "SELECT to_jsonb(j) - 'updated_at' FROM app_jobs.jobs AS j WHERE id = %s", (job_id,)
    ).fetchone()
    db.commit()
    return row[0]


@pytest.mark.parametrize("mode", ["replace", "preserve_run_at", "unsafe_dedupe"])
def test_key_held_by_an_open_transaction_of_another_tenant(db, tenant, mode):
    a = psycopg.connect(tenant(TENANT_A), autocommit=True)
    b = psycopg.connect(tenant(TENANT_B))
    try:
        key = f"k-{mode}"
        b_job = b.execute(
            "SELECT id FROM app_jobs.add_job(identifier := 'secret', job_key := %s,"
            " payload := '{\"card\": \"4111\"}')", (key,)
        ).fetchone()[0]  # B's transaction stays open
        thread, out = in_thread(lambda: a.execute(
            "SELECT id, payload FROM app_jobs.add_job(identifier := 'mine', job_key := %s,"
            " payload := '{\"a\": 1}', job_key_mode := %s)", (key, mode)
        ).fetchone())
        wait_until_blocked(db, a.info.backend_pid)
        b.commit()
        thread.join(10)
        assert not thread.is_alive()
        assert "result" not in out, f"A got B's job or took it over: {out.get('result')}"
        assert isinstance(out["error"], psycopg.Error)
        assert out["error"].sqlstate == "PJ030", out["error"]
        row = job_row(db, b_job)
        assert row["payload"] == {"card": "4111"}
        assert row["task_identifier"] == "secret"
        assert row["database_id"] == TENANT_B
        assert row["key"] == key
    finally:
        a.close()
        b.close()


def test_schedule_key_held_by_an_open_transaction_of_another_tenant(db, tenant):
    a = psycopg.connect(tenant(TENANT_A), autocommit=True)
    b = psycopg.connect(tenant(TENANT_B))
    try:
        b_sched = b.execute(
            "SELECT id FROM app_jobs.add_scheduled_job(identifier := 'b_report',"
            " job_key := 'nightly', schedule_info := '{\"rule\": \"0 2 * * *\"}')"
        ).fetchone()[0]
        thread, out = in_thread(lambda: a.execute(
            "SELECT id FROM app_jobs.add_scheduled_job(identifier := 'a_takeover',"
            " job_key := 'nightly', schedule_info := '{\"rule\": \"* * * * *\"}')"
        ).fetchone())
        wait_until_blocked(db, a.info.backend_pid)
        b.commit()
        thread.join(10)
        assert "result" not in out, f"A took over B's schedule: {out.get('result')}"
        assert out["error"].sqlstate == "PJ030", out["error"]
        row = db.execute(
            "SELECT database_id::text, task_identifier, schedule_info::text"
            " FROM app_jobs.scheduled_jobs WHERE id = %s", (b_sched,)
        ).fetchone()
        db.commit()
        assert row == (TENANT_B, "b_report", '{"rule": "0 2 * * *"}')
    finally:
        a.close()
        b.close()


def claim(db: psycopg.Connection, worker: str, task: str) -> tuple[int, int]:
    row = db.execute(
        "SELECT id, attempts FROM app_jobs.get_jobs(%s, ARRAY[%s])", (worker, task)
    ).fetchone()
    db.commit()
    assert row is not None
    return row


def finish(conn: psycopg.Connection, worker: str, job_id: int, attempt: int) -> str:
    """finish_jobs on a session with a 1 s lock_timeout: its status, fast or 55P03."""
    began = time.monotonic()
    with conn.transaction():
        conn.execute("SET LOCAL lock_timeout = '1s'")
        status = conn.execute(
            "SELECT status FROM app_jobs.finish_jobs(%s, %s)",
            (worker, Jsonb([{"id": job_id, "attempt": attempt}])),
        ).fetchone()[0]
    assert time.monotonic() - began < 0.9, "finish_jobs waited for a lock"
    return status


def test_depends_on_another_tenants_running_job_is_refused_and_holds_nothing(db, tenant, connect):
    b_job = db.execute(
        "SELECT id FROM app_jobs.add_job(db_id := %s, identifier := 'b_work')", (TENANT_B,)
    ).fetchone()[0]
    db.commit()
    job_id, attempt = claim(db, "b_worker", "b_work")
    hostile = psycopg.connect(tenant(TENANT_A))
    try:
        with pytest.raises(psycopg.Error) as refused:
            hostile.execute(
                "SELECT app_jobs.add_job(identifier := 'after', depends_on := ARRAY[%s]::bigint[])",
                (b_job,),
            )
        assert refused.value.sqlstate == "PJ030"
        hostile.rollback()
        # Inside a savepoint the hostile transaction stays open: still nothing is held.
        hostile.execute("SAVEPOINT s")
        with pytest.raises(psycopg.Error):
            hostile.execute(
                "SELECT app_jobs.add_job(identifier := 'after', depends_on := ARRAY[%s]::bigint[])",
                (b_job,),
            )
        hostile.execute("ROLLBACK TO SAVEPOINT s")
        worker = connect(autocommit=False)
        assert finish(worker, "b_worker", job_id, attempt) == "completed"
    finally:
        hostile.close()


@pytest.mark.parametrize("blocker", ["depends_on", "same_queue"])
def test_an_open_enqueue_makes_finish_jobs_report_busy_not_wait(db, connect, blocker):
    db.execute(
        "SELECT app_jobs.add_job(db_id := %s, identifier := 'run', queue_name := 'q1')",
        (TENANT_A,),
    )
    db.commit()
    job_id, attempt = claim(db, "w1", "run")
    enqueuer = connect(autocommit=False)
    if blocker == "depends_on":
        new_id = enqueuer.execute(
            "SELECT id FROM app_jobs.add_job(db_id := %s, identifier := 'next',"
            " depends_on := ARRAY[%s]::bigint[])", (TENANT_A, job_id),
        ).fetchone()[0]
    else:
        new_id = enqueuer.execute(
            "SELECT id FROM app_jobs.add_job(db_id := %s, identifier := 'next',"
            " queue_name := 'q1')", (TENANT_A,),
        ).fetchone()[0]
    worker = connect(autocommit=False)
    assert finish(worker, "w1", job_id, attempt) == "busy"
    assert job_row(db, job_id)["locked_by"] == "w1", "a busy claim is left as it was"
    enqueuer.commit()
    assert finish(worker, "w1", job_id, attempt) == "completed"
    status = db.execute(
        "SELECT status FROM app_jobs.job_status WHERE id = %s", (new_id,)
    ).fetchone()[0]
    db.commit()
    assert status == "waiting", "the new job is unblocked (dependency) or simply waits (queue)"
