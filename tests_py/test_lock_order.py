"""The shared lock order (job rows by id, then their bundles, then their queues by name;
app_jobs._lock_jobs) against a session that follows it by hand: while that session holds
a job row and the caller waits for it, the session goes on to the job's queue row. In
the shared order the caller holds no queue row yet, so the session gets it, commits, and
the caller then does its work: no deadlock (40P01) in either session. Covered callers:
complete_jobs (via _stop_jobs), reap_dead_workers and release_jobs of a cancel-requested
claim (via _end_cancelled_claims).
"""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

QUEUE = "q_lock_order"


def _waiting_for_lock(db: psycopg.Connection, pid: int, timeout: float = 10.0) -> None:
    """Wait until backend `pid` waits for a lock."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = db.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s",
                         (pid,)).fetchone()
        db.commit()
        if row and row[0] == "Lock":
            return
        time.sleep(0.02)
    raise AssertionError("the caller never waited for the job row")


# name -> (setup after the job is added, the caller's statement, rows it must return)
CALLERS = {
    "complete_jobs": (
        [],
        "SELECT id::text FROM app_jobs.complete_jobs(ARRAY[%(id)s::bigint])",
        lambda job_id: [(str(job_id),)],
    ),
    "reap_dead_workers": (
        ["SELECT app_jobs.register_worker('w_lock_dead')",
         "SELECT id FROM app_jobs.get_jobs('w_lock_dead', NULL, NULL, 1)",
         "UPDATE app_jobs.workers SET last_heartbeat = now() - interval '1 hour'"
         " WHERE id = 'w_lock_dead'"],
        "SELECT job_id::text || ' ' || status FROM app_jobs.reap_dead_workers('20 seconds')",
        lambda job_id: [(f"{job_id} retrying",)],
    ),
    "release_jobs (cancel requested)": (
        ["SELECT id FROM app_jobs.get_jobs('w_lock_live', NULL, NULL, 1)",
         "SELECT app_jobs.cancel_job(%(id)s)"],
        "SELECT app_jobs.release_jobs('w_lock_live')::text",
        lambda job_id: [("",)],  # void: the job ends cancelled (checked below),
    ),
}


@pytest.mark.parametrize("caller", CALLERS.values(), ids=CALLERS.keys())
def test_caller_waits_in_the_shared_lock_order(db, connect, caller):
    setup, statement, expected = caller
    job_id = db.execute("SELECT (app_jobs.add_job(identifier := 'lock_order',"
                        " queue_name := %s)).id", (QUEUE,)).fetchone()[0]
    for step in setup:
        db.execute(step, {"id": job_id})
    db.commit()

    # The session that follows the order by hand: the job row first.
    holder = connect(autocommit=False)
    holder.execute("SET lock_timeout = '20s'")
    holder.execute("SELECT 1 FROM app_jobs.jobs WHERE id = %s FOR UPDATE", (job_id,))

    caller_conn = connect()
    caller_conn.execute("SET lock_timeout = '20s'")
    pid = caller_conn.info.backend_pid
    result: dict[str, object] = {}

    def call() -> None:
        try:
            result["rows"] = caller_conn.execute(statement, {"id": job_id}).fetchall()
        except psycopg.Error as exc:
            result["error"] = exc

    thread = threading.Thread(target=call)
    thread.start()
    try:
        _waiting_for_lock(db, pid)
        # Then the queue row: free, unless the caller took it before the job row.
        holder.execute("UPDATE app_jobs.job_queues SET locked_at = locked_at"
                       " WHERE queue_name = %s", (QUEUE,))
        holder.commit()
    finally:
        thread.join(30)
    assert "error" not in result, f"the caller failed: {result.get('error')}"
    assert result["rows"] == expected(job_id)
    # Whatever the caller did, the job is no longer waiting or claimed.
    assert db.execute("SELECT count(*) FROM app_jobs.jobs WHERE id = %s AND locked_by IS NOT NULL",
                      (job_id,)).fetchone()[0] == 0
