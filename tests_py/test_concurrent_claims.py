"""Concurrent claiming: 8 sessions drain 1,000 jobs (get_job, get_jobs batches), each once.

Also the named-queue variant: jobs spread over a few named queues are never held two at a
time within one queue (checked by the workers and by a monitor session reading
job_queues and the job locks), and every queue's jobs are claimed in (priority, run_at,
id) order.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict

import pytest
from sessions import Crew, run_concurrently

N_WORKERS = 8
N_JOBS = 1000

CLAIM_ONE = """
    SELECT id, queue_name, attempts, locked_by
    FROM app_jobs.get_job(%s)
    WHERE id IS NOT NULL
"""
CLAIM_BATCH = """
    SELECT id, queue_name, attempts, locked_by
    FROM app_jobs.get_jobs(%s, NULL, '4 hours', %s)
"""
COMPLETE = "SELECT (app_jobs.complete_job(%s, %s)).id"


def claim(conn, worker_id: str, batch_size: int | None) -> list[tuple]:
    if batch_size is None:
        return conn.execute(CLAIM_ONE, (worker_id,)).fetchall()
    return conn.execute(CLAIM_BATCH, (worker_id, batch_size)).fetchall()


def complete(conn, worker_id: str, job_id: int) -> None:
    done = conn.execute(COMPLETE, (worker_id, job_id)).fetchone()[0]
    assert done == job_id, f"{worker_id} could not complete its job {job_id}"


@pytest.mark.parametrize("batch_size", [None, 10, 50], ids=["get_job", "get_jobs10", "get_jobs50"])
def test_each_job_claimed_exactly_once(db, connect, batch_size):
    ids = [
        r[0]
        for r in db.execute(
            "SELECT (app_jobs.add_job(identifier := 'claim_test',"
            " payload := json_build_object('n', g))).id"
            " FROM generate_series(1, %s) AS g",
            (N_JOBS,),
        )
    ]
    db.commit()
    assert len(set(ids)) == N_JOBS

    def worker(n: int):
        conn = connect()
        worker_id = f"worker-{n}"

        def run(crew: Crew) -> list[int]:
            claimed: list[int] = []
            crew.ready()
            empty_polls = 0
            # Nothing to claim three times in a row: the queue is drained (a job can be
            # skipped only while another session is claiming it).
            while empty_polls < 3 and crew.keep_going():
                rows = claim(conn, worker_id, batch_size)
                if not rows:
                    empty_polls += 1
                    time.sleep(0.005)
                    continue
                empty_polls = 0
                assert len(rows) <= (batch_size or 1)
                for job_id, _queue, attempts, locked_by in rows:
                    assert attempts == 1, f"job {job_id} was claimed before"
                    assert locked_by == worker_id
                    claimed.append(job_id)
                for job_id, *_ in rows:
                    complete(conn, worker_id, job_id)
            return claimed

        return run

    claims = run_concurrently([worker(n) for n in range(N_WORKERS)])

    everything = [job_id for per_worker in claims for job_id in per_worker]
    twice = [job_id for job_id, k in Counter(everything).items() if k > 1]
    assert not twice, f"jobs claimed more than once: {twice[:20]}"
    lost = set(ids) - set(everything)
    assert not lost, f"{len(lost)} jobs never claimed, e.g. {sorted(lost)[:20]}"
    assert set(everything) == set(ids)
    idle = [n for n, per_worker in enumerate(claims) if not per_worker]
    assert not idle, f"workers {idle} claimed nothing: the sessions did not run concurrently"
    assert db.execute("SELECT count(*) FROM app_jobs.jobs").fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM app_jobs.job_queues").fetchone()[0] == 0


N_QUEUES = 4
N_NAMED_TEST_JOBS = 240  # every third job has no queue; the rest spread over N_QUEUES

MONITOR = """
    SELECT
        (SELECT coalesce(json_agg(x), '[]') FROM (
            SELECT j.queue_name, count(*) AS held, array_agg(j.locked_by) AS by
            FROM app_jobs.jobs AS j
            WHERE j.queue_name IS NOT NULL AND j.locked_at IS NOT NULL
            GROUP BY j.queue_name HAVING count(*) > 1) AS x),
        (SELECT coalesce(json_agg(x), '[]') FROM (
            SELECT j.id, j.queue_name, j.locked_by AS job_by, q.locked_by AS queue_by
            FROM app_jobs.jobs AS j
            LEFT JOIN app_jobs.job_queues AS q ON q.queue_name = j.queue_name
            WHERE j.queue_name IS NOT NULL AND j.locked_at IS NOT NULL
                AND q.locked_by IS DISTINCT FROM j.locked_by) AS x),
        (SELECT coalesce(json_agg(x), '[]') FROM (
            SELECT q.queue_name, q.locked_by
            FROM app_jobs.job_queues AS q
            WHERE q.locked_at IS NOT NULL AND NOT EXISTS (
                SELECT FROM app_jobs.jobs AS j
                WHERE j.queue_name = q.queue_name AND j.locked_by = q.locked_by)) AS x),
        NOT EXISTS (SELECT FROM app_jobs.jobs)
"""


def drain_named_queues(db, connect, batch_size: int | None):
    """Enqueue jobs over N_QUEUES named queues (and none), drain them with N_WORKERS.

    Asserts along the way that no queue ever has two jobs held at once (workers and a
    monitor session check) and that every job is claimed once. Returns the expected
    per-queue order and the order in which each queue's jobs were actually claimed.
    """
    # Interleave queues and unqueued jobs, with mixed priorities and run_at in the past,
    # so the expected per-queue order is not simply the id order.
    db.execute(
        """
        SELECT app_jobs.add_job(
            identifier := 'queued_test',
            payload := json_build_object('n', g),
            queue_name := CASE WHEN g %% 3 = 0 THEN NULL ELSE 'q' || (g %% %(nq)s) END,
            priority := (g * 7919) %% 3,
            run_at := now() - ((g * 31) %% 5) * interval '1 minute')
        FROM generate_series(1, %(total)s) AS g
        """,
        {"nq": N_QUEUES, "total": N_NAMED_TEST_JOBS},
    )
    db.commit()
    expected: dict[str, list[int]] = defaultdict(list)
    for queue, job_id in db.execute(
        "SELECT queue_name, id FROM app_jobs.jobs WHERE queue_name IS NOT NULL"
        " ORDER BY priority, run_at, id"
    ):
        expected[queue].append(job_id)
    assert len(expected) == N_QUEUES
    all_ids = {r[0] for r in db.execute("SELECT id FROM app_jobs.jobs")}
    counts = dict(db.execute("SELECT queue_name, job_count FROM app_jobs.job_queues").fetchall())
    assert counts == {q: len(v) for q, v in expected.items()}

    lock = threading.Lock()
    holder: dict[str, int | None] = {}
    claim_order: dict[str, list[int]] = defaultdict(list)
    claimed_all: list[int] = []

    def worker(n: int):
        conn = connect()
        worker_id = f"worker-{n}"

        def run(crew: Crew) -> int:
            crew.ready()
            n_claimed = 0
            while crew.keep_going():
                rows = claim(conn, worker_id, batch_size)
                if not rows:
                    if conn.execute("SELECT NOT EXISTS (SELECT FROM app_jobs.jobs)").fetchone()[0]:
                        break
                    time.sleep(0.002)
                    continue
                with lock:
                    for job_id, queue, attempts, locked_by in rows:
                        assert attempts == 1 and locked_by == worker_id
                        claimed_all.append(job_id)
                        if queue is None:
                            continue
                        assert holder.get(queue) is None, (
                            f"{worker_id} got job {job_id} of {queue} while job "
                            f"{holder[queue]} of that queue was still held"
                        )
                        holder[queue] = job_id
                        claim_order[queue].append(job_id)
                for job_id, queue, *_ in rows:
                    if queue is not None:
                        # Released before complete_job: until it commits the database
                        # still holds the queue, so no other claim may succeed anyway.
                        with lock:
                            holder[queue] = None
                    complete(conn, worker_id, job_id)
                    n_claimed += 1
            return n_claimed

        return run

    checks = []
    monitor_conn = connect()

    def monitor(crew: Crew) -> None:
        conn = monitor_conn
        crew.ready()
        while crew.keep_going():
            doubled, mismatched, orphan_locks, drained = conn.execute(MONITOR).fetchone()
            checks.append(1)
            assert doubled == [], f"queues holding two running jobs: {doubled}"
            assert mismatched == [], f"running jobs whose queue is not locked by them: {mismatched}"
            assert orphan_locks == [], f"queues locked without a running job: {orphan_locks}"
            if drained:
                return
            time.sleep(0.001)

    done = run_concurrently([worker(n) for n in range(N_WORKERS)] + [monitor])

    assert sorted(claimed_all) == sorted(all_ids), "jobs lost or claimed twice"
    assert sum(done[:N_WORKERS]) == len(all_ids)
    assert len(checks) > 0
    assert db.execute("SELECT count(*) FROM app_jobs.jobs").fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM app_jobs.job_queues").fetchone()[0] == 0
    return expected, claim_order


@pytest.mark.parametrize("batch_size", [None, 5], ids=["get_job", "get_jobs5"])
def test_named_queue_runs_one_job_at_a_time(db, connect, batch_size):
    drain_named_queues(db, connect, batch_size)


@pytest.mark.parametrize("batch_size", [None, 5], ids=["get_job", "get_jobs5"])
def test_named_queue_keeps_its_order(db, connect, batch_size):
    expected, claim_order = drain_named_queues(db, connect, batch_size)
    for queue, ids in expected.items():
        assert claim_order[queue] == ids, f"queue {queue} not run in (priority, run_at, id) order"
