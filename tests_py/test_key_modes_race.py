"""Every job_key_mode under contention: 32 sessions call add_job on the same 3 keys at once.

For replace and preserve_run_at, worker sessions claim the keyed jobs in between and
complete or fail them, so add_job also meets running jobs (whose key it strips) and
retrying ones; for unsafe_dedupe a worker completes jobs so the key frees up again.
Asserted for every mode: add_job never errors and never returns NULL; at every check of a
monitor session (one snapshot each) and at the end, a key has at most one waiting job, a
job stripped of its key is never claimable again, and job_queues counts match the table.
Per mode, from the rows add_job returned:
- replace: the returned row is always the caller's own (payload, run_at), waiting, fresh.
- preserve_run_at: a job keeps the run_at it was created with, whoever updates it later
  (unless a worker failed it, which reschedules it); the payload is the latest caller's.
- unsafe_dedupe: the existing job is never modified: every caller that got a job id got
  the same payload and run_at as its creator, i.e. the first caller's payload wins.
Plus the sequential semantics of the three modes, with pgjobs.add_job(job_key_mode=...).
"""

from __future__ import annotations

import random
import threading
import time
from datetime import datetime, timedelta, timezone

import pgjobs
import psycopg
import pytest
from sessions import Crew, run_concurrently

N_ADDERS = 32
ADDS_PER_ADDER = 100
N_WORKERS = 2
KEYS = ["key-a", "key-b", "key-c"]
BASE = datetime(2020, 1, 1, tzinfo=timezone.utc)  # every run_at is due

ADD = """
    SELECT id, key, payload, run_at, locked_at, attempts
    FROM app_jobs.add_job(
        identifier := 'keyed', job_key := %(key)s, payload := %(payload)s::json,
        run_at := %(run_at)s, queue_name := %(queue)s, job_key_mode := %(mode)s)
"""

CHECK = """
    SELECT
        (SELECT coalesce(json_agg(x), '[]') FROM (
            SELECT key, count(*) AS n FROM app_jobs.jobs
            WHERE key IS NOT NULL AND locked_at IS NULL
            GROUP BY key HAVING count(*) > 1) AS x) AS dup_waiting,
        (SELECT coalesce(json_agg(x), '[]') FROM (
            SELECT coalesce(q.queue_name, j.queue_name) AS queue_name, q.job_count, j.n
            FROM app_jobs.job_queues AS q
            FULL JOIN (
                SELECT queue_name, count(*) AS n FROM app_jobs.jobs
                WHERE queue_name IS NOT NULL GROUP BY queue_name
            ) AS j ON j.queue_name = q.queue_name
            WHERE q.job_count IS DISTINCT FROM j.n) AS x) AS count_drift,
        (SELECT coalesce(json_agg(id), '[]') FROM app_jobs.jobs
            WHERE key IS NULL AND is_available) AS keyless_available
"""


def check_invariants(conn: psycopg.Connection) -> None:
    dup_waiting, count_drift, keyless_available = conn.execute(CHECK).fetchone()
    assert dup_waiting == [], f"keys with more than one waiting job: {dup_waiting}"
    assert count_drift == [], f"job_queues.job_count differs from the jobs table: {count_drift}"
    assert keyless_available == [], f"jobs stripped of their key are claimable: " \
                                    f"{keyless_available}"


@pytest.mark.parametrize("mode", ["replace", "preserve_run_at", "unsafe_dedupe"])
def test_job_key_modes_under_contention(db, connect, mode):
    adders_done = threading.Event()
    left = [N_ADDERS]
    lock = threading.Lock()
    returned: list[tuple] = []  # (job id, passed payload, passed run_at, returned row...)
    failed_ids: set[int] = set()  # rescheduled by a worker: their run_at moved
    stats = {"checks": 0, "completed": 0, "failed": 0, "stripped": 0, "running_returned": 0}

    def adder(n: int):
        conn = connect()
        rng = random.Random(n)

        def run(crew: Crew) -> None:
            try:
                crew.ready()
                mine = []
                for i in range(ADDS_PER_ADDER):
                    if not crew.keep_going():
                        break
                    key = rng.choice(KEYS)
                    # Unique per call, so a returned run_at tells whose it is.
                    run_at = BASE + timedelta(seconds=n * 1000 + i,
                                              microseconds=rng.randrange(1000))
                    payload = f'{{"adder": {n}, "i": {i}}}'
                    row = conn.execute(ADD, {
                        "key": key, "payload": payload, "run_at": run_at,
                        "queue": rng.choice([None, "q1"]), "mode": mode,
                    }).fetchone()
                    assert row is not None and row[0] is not None, f"add_job({key}) gave NULL"
                    job_id, got_key, got_payload, got_run_at, locked_at, attempts = row
                    assert got_key == key
                    mine.append((job_id, {"adder": n, "i": i}, run_at, got_payload, got_run_at,
                                 locked_at, attempts))
                with lock:
                    returned.extend(mine)
            finally:
                with lock:
                    left[0] -= 1
                    if left[0] == 0:
                        adders_done.set()

        return run

    def worker(n: int):
        conn = connect()
        worker_id = f"w{n}"
        rng = random.Random(100 + n)

        def run(crew: Crew) -> None:
            crew.ready()
            while not adders_done.is_set() and crew.keep_going():
                ids = [r[0] for r in conn.execute(
                    "SELECT id FROM app_jobs.get_jobs(%s, ARRAY['keyed'])", (worker_id,))]
                if not ids:
                    time.sleep(0.002)
                    continue
                time.sleep(rng.random() * 0.004)  # adders meet the running job
                fail = mode != "unsafe_dedupe" and rng.random() < 0.3
                fn = "fail_job(%s, %s, 'boom')" if fail else "complete_job(%s, %s)"
                done = conn.execute(f"SELECT id, key FROM app_jobs.{fn}",
                                    (worker_id, ids[0])).fetchall()
                assert [d[0] for d in done] == ids, f"{worker_id} lost its claim on {ids}"
                with lock:
                    stats["failed" if fail else "completed"] += 1
                    stats["stripped"] += done[0][1] is None
                    if fail:
                        failed_ids.add(ids[0])

        return run

    checker_conn = connect()

    def checker(crew: Crew) -> None:
        crew.ready()
        while not adders_done.is_set() and crew.keep_going():
            check_invariants(checker_conn)
            stats["checks"] += 1
            time.sleep(0.002)

    run_concurrently([adder(n) for n in range(N_ADDERS)]
                     + [worker(n) for n in range(N_WORKERS)] + [checker], timeout=60)

    assert len(returned) == N_ADDERS * ADDS_PER_ADDER
    check_invariants(db)
    assert stats["checks"] > 0
    assert stats["completed"] > 0, stats

    by_job: dict[int, list[tuple]] = {}
    for r in returned:
        by_job.setdefault(r[0], []).append(r)

    if mode == "replace":
        for job_id, passed, run_at, payload, got_run_at, locked_at, attempts in returned:
            assert (payload, got_run_at) == (passed, run_at), f"job {job_id}: not ours"
            assert locked_at is None and attempts == 0
        assert stats["stripped"] > 0, f"add_job never met a running job: {stats}"
        assert stats["failed"] > 0, stats

    elif mode == "preserve_run_at":
        for job_id, rows in by_job.items():
            assert all(r[3] == r[1] for r in rows), f"job {job_id}: payload not the caller's"
            assert all(r[5] is None and r[6] == 0 for r in rows)
            if job_id in failed_ids:
                continue
            run_ats = {r[4] for r in rows}
            assert len(run_ats) == 1, f"job {job_id}: run_at changed {sorted(run_ats)}"
            creators = [r for r in rows if r[2] == r[4]]
            assert len(creators) == 1, (
                f"job {job_id}: its run_at {run_ats} is not exactly one caller's own")
        assert any(len(rows) > 1 for rows in by_job.values()), "no job was ever updated"
        assert stats["stripped"] > 0, f"add_job never met a running job: {stats}"

    else:  # unsafe_dedupe
        for job_id, rows in by_job.items():
            seen = {(str(r[3]), r[4]) for r in rows}
            assert len(seen) == 1, f"job {job_id} was modified: {seen}"
            creators = [r for r in rows if r[3] == r[1]]
            assert len(creators) == 1 and creators[0][2] == rows[0][4], (
                f"job {job_id}: not the first caller's payload and run_at")
            stats["running_returned"] += sum(1 for r in rows if r[5] is not None)
        assert any(len(rows) > 1 for rows in by_job.values()), "never deduplicated"
        assert len(by_job) > len(KEYS), "the key never freed up (no job completed)"
        # A running job with the key is returned as is, never stripped.
        assert stats["stripped"] == 0
        # What is left in the table is the first caller's job for each key.
        for job_id, payload in db.execute("SELECT id, payload FROM app_jobs.jobs"):
            assert {str(r[3]) for r in by_job[job_id]} == {str(payload)}
        assert stats["running_returned"] > 0, f"add_job never met a running job: {stats}"
    print(f"\n{mode}: {len(by_job)} jobs for {len(returned)} adds; {stats}")


def test_job_key_modes_sequentially(db):
    future = datetime.now(timezone.utc) + timedelta(hours=1)
    later = future + timedelta(hours=1)

    def job(job_id):
        return db.execute("SELECT payload, run_at, priority, attempts FROM app_jobs.jobs "
                          "WHERE id = %s", (job_id,)).fetchone()

    # replace: the waiting job takes the new payload and run_at.
    a = pgjobs.add_job(db, "t", {"v": 1}, job_key="r", run_at=later)
    assert pgjobs.add_job(db, "t", {"v": 2}, job_key="r", run_at=future, priority=5) == a
    assert job(a) == ({"v": 2}, future, 5, 0)

    # preserve_run_at: new payload and priority, the first run_at (earlier or later) stays.
    b = pgjobs.add_job(db, "t", {"v": 1}, job_key="p", run_at=future,
                       job_key_mode="preserve_run_at")
    assert pgjobs.add_job(db, "t", {"v": 2}, job_key="p", run_at=later, priority=3,
                          job_key_mode="preserve_run_at") == b
    assert job(b) == ({"v": 2}, future, 3, 0)
    assert pgjobs.add_job(db, "t", {"v": 3}, job_key="p", run_at=BASE,
                          job_key_mode="preserve_run_at") == b
    assert job(b) == ({"v": 3}, future, 0, 0)

    # unsafe_dedupe: nothing changes, the existing id comes back.
    c = pgjobs.add_job(db, "t", {"v": 1}, job_key="u", run_at=later,
                       job_key_mode="unsafe_dedupe")
    assert pgjobs.add_job(db, "t", {"v": 2}, job_key="u", run_at=future, priority=9,
                          job_key_mode="unsafe_dedupe") == c
    assert job(c) == ({"v": 1}, later, 0, 0)

    # A running job: replace strips its key and adds a new one; unsafe_dedupe returns it.
    db.execute("UPDATE app_jobs.jobs SET run_at = now() WHERE id IN (%s, %s)", (a, c))
    claimed = {r[0] for r in db.execute("SELECT id FROM app_jobs.get_jobs('w', ARRAY['t'], "
                                        "batch_size := 10)")}
    assert claimed == {a, c}
    assert pgjobs.add_job(db, "t", {"v": 9}, job_key="u", job_key_mode="unsafe_dedupe") == c
    new_a = pgjobs.add_job(db, "t", {"v": 9}, job_key="r")
    assert new_a != a
    assert db.execute("SELECT key, is_available FROM app_jobs.jobs WHERE id = %s",
                      (a,)).fetchone() == (None, False)

    with pytest.raises(psycopg.Error, match="job_key_mode") as err:
        pgjobs.add_job(db, "t", job_key="x", job_key_mode="merge")
    assert err.value.sqlstate == "PJ021"
