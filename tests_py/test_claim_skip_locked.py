"""Claims skip rows another session holds (FOR UPDATE SKIP LOCKED), never wait for them:
while session A holds a fresh claim in an open transaction, session B (lock_timeout 1 s)
gets the next job at once, for single and batch claims, in named queues, and when both
free the same expired lock (or end the same expired cancel-requested claim).

Each case sets up jobs, lets A claim inside a transaction it keeps open, then lets B
claim with lock_timeout = '1s': waiting for one of A's row locks would raise
LockNotAvailable (55P03) instead of returning. Finally A commits and every job has
exactly one holder.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import psycopg
import pytest

LOCK_TIMEOUT = 1.0
CLAIM = "SELECT id FROM app_jobs.get_jobs(%s, ARRAY['sl'], '4 hours', %s) ORDER BY id"


@dataclass
class Case:
    setup: str          # SQL run (and committed) first; it creates jobs j1, j2, ... in order
    a_batch: int        # A's batch size; A claims inside an open transaction
    a_gets: list[str]   # the jobs A holds afterwards
    b_batch: int        # B's batch size (autocommit, lock_timeout 1 s)
    b_gets: list[str]   # the jobs B must get at once
    gone: tuple[str, ...] = ()  # jobs no longer in the table once A committed


def jobs(*specs: str) -> str:
    """add_job calls for jobs j1, j2, ... of task 'sl' (each spec: extra arguments)."""
    return "".join(
        f"SELECT app_jobs.add_job(identifier := 'sl', payload := '{{\"n\": \"j{n}\"}}',"
        f" run_at := now() - interval '{100 - n} seconds'{', ' + spec if spec else ''});"
        for n, spec in enumerate(specs, start=1)
    )


# A job whose lock is 5 hours old, held by a session that never registered: presumed dead.
EXPIRE_J1 = ("UPDATE app_jobs.jobs SET locked_by = 'gone-worker', locked_at = now() - "
             "interval '5 hours', attempts = 1 WHERE payload->>'n' = 'j1';")

CASES = {
    "single claim": Case(jobs("", "", ""), 1, ["j1"], 1, ["j2"]),
    "batch claim": Case(jobs("", "", ""), 1, ["j1"], 10, ["j2", "j3"]),
    "A's batch, B's single": Case(jobs("", "", ""), 2, ["j1", "j2"], 1, ["j3"]),
    # A holds qa's job_queues row; with concurrency 2, j2 of qa is a candidate for B,
    # whose lock on the queue row must be skipped too.
    "named queue row": Case(
        "SELECT app_jobs.set_queue_concurrency('qa', 2);"
        + jobs("queue_name := 'qa'", "queue_name := 'qa'", ""),
        1, ["j1"], 5, ["j3"]),
    "serial queue": Case(
        jobs("queue_name := 'qa'", "queue_name := 'qa'", ""), 1, ["j1"], 5, ["j3"]),
    # A frees the expired lock on j1 and claims j1 again; B sees j1 still expired.
    "expired lock freed by both": Case(jobs("", "") + EXPIRE_J1, 1, ["j1"], 5, ["j2"]),
    # A ends the expired, cancel-requested claim of j1 (it is cancelled, not retried); B
    # sees it still there and must not wait for A to finish with it.
    "expired cancel-requested claim ended by both": Case(
        jobs("", "", "") + EXPIRE_J1
        + "UPDATE app_jobs.jobs SET cancel_requested_at = now() WHERE payload->>'n' = 'j1';",
        1, ["j2"], 5, ["j3"], gone=("j1",)),
}


def names(conn: psycopg.Connection, ids: list[int]) -> list[str]:
    if not ids:
        return []
    rows = conn.execute("SELECT payload->>'n' FROM app_jobs.jobs WHERE id = ANY(%s) ORDER BY id",
                        (ids,)).fetchall()
    return [r[0] for r in rows]


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_second_claimer_skips_what_the_first_holds(db, connect, case):
    for statement in case.setup.split(";"):
        if statement.strip():
            db.execute(statement)
    db.commit()
    all_jobs = [r[0] for r in db.execute(
        "SELECT payload->>'n' FROM app_jobs.jobs ORDER BY id").fetchall()]
    db.commit()

    a = connect(autocommit=False)
    a_ids = [r[0] for r in a.execute(CLAIM, ("worker-a", case.a_batch)).fetchall()]
    # A's transaction stays open: its row locks (jobs, job_queues) are held.

    b = connect()
    b.execute("SELECT set_config('lock_timeout', %s, false)", (f"{int(LOCK_TIMEOUT * 1000)}ms",))
    began = time.monotonic()
    try:
        b_ids = [r[0] for r in b.execute(CLAIM, ("worker-b", case.b_batch)).fetchall()]
    except psycopg.errors.LockNotAvailable as exc:
        pytest.fail(f"B waited for a row A holds instead of skipping it: {exc}")
    elapsed = time.monotonic() - began
    assert elapsed < LOCK_TIMEOUT, f"B took {elapsed:.2f} s"
    assert names(db, b_ids) == case.b_gets
    db.commit()

    a.commit()
    assert names(db, a_ids) == case.a_gets
    held = db.execute(
        "SELECT payload->>'n', locked_by FROM app_jobs.jobs"
        " WHERE locked_by IS NOT NULL ORDER BY id").fetchall()
    expected = sorted([(n, "worker-a") for n in case.a_gets]
                      + [(n, "worker-b") for n in case.b_gets])
    assert sorted(held) == expected
    assert not set(case.a_gets) & set(case.b_gets)
    left = {r[0] for r in db.execute("SELECT payload->>'n' FROM app_jobs.jobs").fetchall()}
    assert left == set(all_jobs) - set(case.gone)
    db.commit()
