"""job_key under contention: 16 sessions hammer add_job on 5 keys while workers run them.

Workers concurrently claim, complete and fail the keyed jobs (half of them one at a time
with get_job/complete_job/fail_job, half in batches with get_jobs/finish_jobs, as
pgjobs-worker does), so add_job takes both
branches: replacing a waiting job in place and, when the job with that key is running,
stripping its key (no more retries) and inserting a new one. Asserted: add_job never
errors and never returns NULL; at every check made by a monitor session (one consistent
snapshot each) and at the end, a key has at most one waiting job, a job that lost its key
is never available again, and job_queues.job_count matches the jobs table exactly.
"""

from __future__ import annotations

import random
import threading
import time

from psycopg.types.json import Jsonb
from sessions import Crew, run_concurrently

N_ADDERS = 16
ADDS_PER_ADDER = 300
N_WORKERS = 4
KEYS = [f"key-{k}" for k in range(5)]
# Each key moves between no queue and named queues, which exercises every job_count trigger.
QUEUES_OF_KEY = {key: [None, "qa", "qb"] for key in KEYS}

ADD = """
    SELECT id, key, queue_name, payload, locked_at, attempts
    FROM app_jobs.add_job(
        identifier := 'keyed', job_key := %(key)s, queue_name := %(queue)s,
        payload := %(payload)s::json)
"""

CHECK = """
    SELECT
        (SELECT coalesce(json_agg(x), '[]') FROM (
            SELECT key, count(*) AS waiting FROM app_jobs.jobs
            WHERE key IS NOT NULL AND locked_at IS NULL
            GROUP BY key HAVING count(*) > 1) AS x) AS dup_waiting,
        (SELECT coalesce(json_agg(x), '[]') FROM (
            SELECT key, count(*) AS n FROM app_jobs.jobs
            WHERE key IS NOT NULL
            GROUP BY key HAVING count(*) > 1) AS x) AS dup_key,
        (SELECT coalesce(json_agg(x), '[]') FROM (
            SELECT coalesce(q.queue_name, j.queue_name) AS queue_name,
                q.job_count, j.n AS jobs
            FROM app_jobs.job_queues AS q
            FULL JOIN (
                SELECT queue_name, count(*) AS n FROM app_jobs.jobs
                WHERE queue_name IS NOT NULL GROUP BY queue_name
            ) AS j ON j.queue_name = q.queue_name
            WHERE q.job_count IS DISTINCT FROM j.n) AS x) AS count_drift,
        (SELECT coalesce(json_agg(id), '[]') FROM app_jobs.jobs
            WHERE key IS NULL AND is_available) AS keyless_available
"""


def check_invariants(conn) -> None:
    dup_waiting, dup_key, count_drift, keyless_available = conn.execute(CHECK).fetchone()
    assert dup_waiting == [], f"keys with more than one waiting job: {dup_waiting}"
    assert dup_key == [], f"keys held by more than one job: {dup_key}"
    assert count_drift == [], f"job_queues.job_count differs from the jobs table: {count_drift}"
    assert keyless_available == [], (
        f"jobs that lost their key (replaced while running) are claimable again: "
        f"{keyless_available}"
    )


def test_job_key_upsert_under_contention(db, connect):
    adders_done = threading.Event()  # set by the last adder: workers and checker stop
    adders_left = [N_ADDERS]
    stats = {"replaced_while_running": 0, "completed": 0, "failed": 0, "checks": 0}
    stats_lock = threading.Lock()

    def adder(n: int):
        conn = connect()
        rng = random.Random(n)

        def run(crew: Crew) -> int:
            try:
                return add_many(crew)
            finally:
                with stats_lock:
                    adders_left[0] -= 1
                    if adders_left[0] == 0:
                        adders_done.set()

        def add_many(crew: Crew) -> int:
            crew.ready()
            added = 0
            for i in range(ADDS_PER_ADDER):
                if not crew.keep_going():
                    break
                key = rng.choice(KEYS)
                queue = rng.choice(QUEUES_OF_KEY[key])
                payload = f'{{"adder": {n}, "i": {i}}}'
                row = conn.execute(ADD, {"key": key, "queue": queue, "payload": payload})
                row = row.fetchone()
                assert row is not None and row[0] is not None, f"add_job({key}) returned NULL"
                _id, got_key, got_queue, got_payload, locked_at, attempts = row
                assert got_key == key
                assert got_queue == queue
                assert got_payload == {"adder": n, "i": i}
                assert locked_at is None and attempts == 0, f"add_job returned a running job {row}"
                added += 1
            return added

        return run

    def worker(n: int):
        conn = connect()
        worker_id = f"worker-{n}"
        rng = random.Random(1000 + n)
        batched = n % 2 == 1  # odd workers claim and report batches, as pgjobs-worker does

        def run(crew: Crew) -> None:
            crew.ready()
            while not adders_done.is_set() and crew.keep_going():
                claimed = conn.execute(
                    "SELECT id, attempts FROM app_jobs.get_jobs(%s, ARRAY['keyed'],"
                    " batch_size := %s)",
                    (worker_id, 3 if batched else 1),
                ).fetchall()
                ids = [r[0] for r in claimed]
                attempts = dict(claimed)
                if not ids:
                    time.sleep(0.001)
                    continue
                time.sleep(rng.random() * 0.003)  # "work", so adders meet running jobs
                errors = [None if rng.random() < 0.5 else "boom" for _ in ids]
                if batched:
                    outcomes = [
                        {"id": i, "attempt": attempts[i], "error": e,
                         "outcome": "completed" if e is None else "failed"}
                        for i, e in zip(ids, errors, strict=True)
                    ]
                    stripped = conn.execute(
                        "SELECT id, key FROM app_jobs.jobs WHERE id = ANY(%s) AND key IS NULL",
                        (ids,),
                    ).fetchall()
                    # As pgjobs-worker does: an outcome reported busy (its row locked by
                    # an adder at that moment) is delivered again.
                    finished: list[int] = []
                    while outcomes:
                        rows = conn.execute(
                            "SELECT job_id, status FROM app_jobs.finish_jobs(%s, %s)",
                            (worker_id, Jsonb(outcomes)),
                        ).fetchall()
                        finished += [i for i, status in rows if status not in ("fenced", "busy")]
                        busy = {i for i, status in rows if status == "busy"}
                        outcomes = [o for o in outcomes if o["id"] in busy]
                    done = [(i, "?") for i in finished if i not in dict(stripped)]
                    done += stripped
                else:
                    fn = "complete_job(%s, %s)" if errors[0] is None else "fail_job(%s, %s, 'boom')"
                    done = conn.execute(
                        f"SELECT id, key FROM app_jobs.{fn}", (worker_id, ids[0])
                    ).fetchall()
                assert sorted(d[0] for d in done) == sorted(ids), (
                    f"{worker_id} lost its lock on one of {ids}"
                )
                with stats_lock:
                    stats["completed"] += errors.count(None)
                    stats["failed"] += len(errors) - errors.count(None)
                    stats["replaced_while_running"] += sum(1 for d in done if d[1] is None)

        return run

    checker_conn = connect()

    def checker(crew: Crew) -> None:
        crew.ready()
        while not adders_done.is_set() and crew.keep_going():
            check_invariants(checker_conn)
            stats["checks"] += 1
            time.sleep(0.002)

    results = run_concurrently(
        [adder(n) for n in range(N_ADDERS)] + [worker(n) for n in range(N_WORKERS)] + [checker]
    )

    assert sum(results[:N_ADDERS]) == N_ADDERS * ADDS_PER_ADDER
    check_invariants(db)
    assert stats["checks"] > 0
    assert stats["completed"] > 0 and stats["failed"] > 0, stats
    assert stats["replaced_while_running"] > 0, (
        f"the locked-job branch of add_job was never exercised: {stats}"
    )
    # Every key still has at most one job; those jobs are waiting or running, with a key.
    rows = db.execute(
        "SELECT key, count(*) FROM app_jobs.jobs WHERE key IS NOT NULL GROUP BY key"
    ).fetchall()
    assert {k for k, _ in rows} <= set(KEYS)
    assert all(n == 1 for _, n in rows)
    # Whatever lost its key was failed by a worker: kept for inspection, never retried.
    stale = db.execute(
        "SELECT count(*) FROM app_jobs.jobs"
        " WHERE key IS NULL AND (attempts < max_attempts OR locked_at IS NOT NULL)"
    ).fetchone()[0]
    assert stale == 0


def test_add_job_moving_keyed_jobs_between_queues_never_deadlocks(db, connect):
    for key, queue in [("k1", "qa"), ("k2", "qb")]:
        db.execute(
            "SELECT app_jobs.add_job(identifier := 'keyed', job_key := %s, queue_name := %s)",
            (key, queue),
        )
    db.commit()

    def mover(key: str, first: str, second: str):
        conn = connect()

        def run(crew: Crew) -> None:
            crew.ready()
            for i in range(300):
                if not crew.keep_going():
                    return
                queue = first if i % 2 == 0 else second
                conn.execute(
                    "SELECT app_jobs.add_job(identifier := 'keyed', job_key := %s,"
                    " queue_name := %s)",
                    (key, queue),
                )

        return run

    run_concurrently([mover("k1", "qb", "qa"), mover("k2", "qa", "qb")] * 2, timeout=30)
    check_invariants(db)
