"""Flow control across real pgjobs-worker processes: queue concurrency and task rate limits.

(a) app_jobs.set_queue_concurrency: a queue allowed 3 running jobs never runs a 4th, with
    3 worker processes of --concurrency 4 competing for it, and a serial queue (1, also
    after being set to 2 and back to 1) never runs two. Two independent observers: a
    sampler session counting the queue's locked jobs (and job_queues.running_count) in one
    snapshot, over and over, and the handlers, which log start and end times to a file.
    Both must see the limit reached and never exceeded; every job gets done.
(b) app_jobs.set_task_settings(rate_limit := 10, rate_interval := '1 second'): with 300
    jobs waiting and 4 worker processes polling every 0.05 s, the handlers start 10 per
    second: 90 to 110 starts within the 10 s after the first. An unlimited task run by the
    same workers is not held back meanwhile.
"""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

from workerproc import LOG_PRELUDE, start_worker, stop, wait_for
from workerproc import write_tasks as write_module


def start_workers(conninfo, tasks, n, workers, sql, *extra) -> None:
    for _ in range(n):
        workers.append(start_worker(conninfo, tasks, *extra, stdout=subprocess.DEVNULL))
    # Registered means connected and listening: every worker competes from the start.
    wait_for(lambda: sql("SELECT count(*) FROM app_jobs.workers")[0][0] == n, 30,
             f"{n} workers to register")


def stop_all(workers) -> None:
    for p in workers:
        code, err = stop(p, timeout=20)
        assert code == 0, err


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """Most intervals open at one instant (an end at the same instant as a start first)."""
    edges = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    best = now = 0
    for _, step in edges:
        now += step
        best = max(best, now)
    return best


# -- (a) queue concurrency ------------------------------------------------------------------

WIDE, NARROW = "wide", "narrow"
WIDE_N = 3

SAMPLE = """
    SELECT
        count(*) FILTER (WHERE j.queue_name = 'wide' AND j.locked_at IS NOT NULL),
        count(*) FILTER (WHERE j.queue_name = 'narrow' AND j.locked_at IS NOT NULL),
        (SELECT coalesce(max(q.running_count) FILTER (WHERE q.queue_name = 'wide'), 0)
         FROM app_jobs.job_queues AS q),
        (SELECT coalesce(max(q.running_count) FILTER (WHERE q.queue_name = 'narrow'), 0)
         FROM app_jobs.job_queues AS q)
    FROM app_jobs.jobs AS j
"""


def test_queue_concurrency_limit_holds_across_worker_processes(db, connect, sql, tmp_path,
                                                               killer):
    conninfo = db.info.dsn
    log = tmp_path / "runs.log"
    tasks = write_tasks(tmp_path, f"""
        LOG = {str(log)!r}

        @pgjobs.task
        def slot(payload, job):
            log(LOG, "start", job.queue_name, job.id, time.time())
            time.sleep(0.25)
            log(LOG, "end", job.queue_name, job.id, time.time())
    """)
    assert sql("SELECT app_jobs.set_queue_concurrency('wide', 3)") == [(3,)]
    sql("SELECT app_jobs.set_queue_concurrency('narrow', 2)")
    sql("SELECT app_jobs.set_queue_concurrency('narrow', 1)")  # back to serial
    assert sql("SELECT app_jobs._queue_concurrency('narrow'), "
               "app_jobs._queue_concurrency('wide')") == [(1, 3)]

    start_workers(conninfo, tasks, 3, killer, sql,
                  "--concurrency", "4", "--poll-interval", "0.1")

    samples = {"n": 0, "wide": 0, "narrow": 0}
    violations: list[tuple] = []
    stop_sampling = threading.Event()
    sampler_conn = connect()

    def sampler() -> None:
        while not stop_sampling.is_set():
            wide, narrow, wide_rc, narrow_rc = sampler_conn.execute(SAMPLE).fetchone()
            samples["n"] += 1
            samples["wide"] = max(samples["wide"], wide)
            samples["narrow"] = max(samples["narrow"], narrow)
            if wide > WIDE_N or narrow > 1 or (wide_rc, narrow_rc) != (wide, narrow):
                violations.append((wide, narrow, wide_rc, narrow_rc))
            time.sleep(0.001)

    thread = threading.Thread(target=sampler, name="sampler", daemon=True)
    thread.start()
    try:
        with db.transaction():  # all visible at once
            for i in range(30):
                db.execute("SELECT app_jobs.add_job(identifier := 'slot', queue_name := 'wide',"
                           " payload := json_build_object('i', %s))", (i,))
            for i in range(8):
                db.execute("SELECT app_jobs.add_job(identifier := 'slot', "
                           "queue_name := 'narrow', payload := json_build_object('i', %s))", (i,))
        db.commit()
        wait_for(lambda: sql("SELECT count(*) FROM app_jobs.jobs")[0][0] == 0, 60,
                 "every job to be done")
    finally:
        stop_sampling.set()
        thread.join(10)
    stop_all(killer)

    assert violations == [], f"(wide, narrow, wide running_count, narrow running_count): " \
                             f"{violations[:10]}"
    print(f"\nqueue concurrency: {samples['n']} samples, max running wide={samples['wide']}"
          f" narrow={samples['narrow']}")
    assert samples["n"] > 20
    assert samples["wide"] == WIDE_N, samples
    assert samples["narrow"] == 1, samples

    runs: dict[tuple[str, int], dict[str, float]] = {}
    for line in log.read_text().splitlines():
        kind, queue, job_id, at = line.split()
        runs.setdefault((queue, int(job_id)), {})[kind] = float(at)
    assert sum(1 for q, _ in runs if q == WIDE) == 30
    assert sum(1 for q, _ in runs if q == NARROW) == 8
    assert all(set(r) == {"start", "end"} for r in runs.values()), "a job ran twice or not out"
    wide_overlap = max_overlap([(r["start"], r["end"]) for (q, _), r in runs.items() if q == WIDE])
    narrow_overlap = max_overlap([(r["start"], r["end"])
                                  for (q, _), r in runs.items() if q == NARROW])
    print(f"handler overlap: wide={wide_overlap} narrow={narrow_overlap}")
    assert wide_overlap == WIDE_N
    assert narrow_overlap == 1
    # Every job went through history as completed.
    assert sql("SELECT status, count(*) FROM app_jobs.job_history GROUP BY 1") == [
        ("completed", 38)]
    assert sql("SELECT count(*) FROM app_jobs.job_queues") == [(0,)]


# -- (b) rate limit -------------------------------------------------------------------------

def test_rate_limit_holds_across_worker_processes(db, sql, tmp_path, killer):
    conninfo = db.info.dsn
    log = tmp_path / "starts.log"
    tasks = write_tasks(tmp_path, f"""
        LOG = {str(log)!r}

        @pgjobs.task
        def limited(payload, job):
            log(LOG, "limited", time.time())

        @pgjobs.task
        def unlimited(payload, job):
            log(LOG, "unlimited", time.time())
            time.sleep(0.01)
    """)
    start_workers(conninfo, tasks, 4, killer, sql,
                  "--concurrency", "4", "--poll-interval", "0.05")

    # A new limit starts with an empty bucket: set it once the workers are polling, so no
    # burst builds up before the first start.
    settings = sql("SELECT rate_limit, rate_interval, rate_burst, tokens FROM "
                   "app_jobs.set_task_settings('limited', rate_limit := 10, "
                   "rate_interval := interval '1 second')")
    assert settings[0][0] == 10 and settings[0][2] is None and settings[0][3] == 0
    with db.transaction():
        db.execute("SELECT app_jobs.add_job(identifier := 'limited', "
                   "payload := json_build_object('i', g)) FROM generate_series(1, 300) AS g")
        db.execute("SELECT app_jobs.add_job(identifier := 'unlimited', "
                   "payload := json_build_object('i', g)) FROM generate_series(1, 100) AS g")
    db.commit()
    enqueued_at = time.time()

    def starts(kind: str) -> list[float]:
        if not log.exists():
            return []
        return sorted(float(at) for k, at in (ln.split() for ln in log.read_text().splitlines())
                      if k == kind)

    first = wait_for(lambda: starts("limited"), 15, "the first limited start")[0]
    time.sleep(max(0.0, first + 10.0 - time.time()) + 0.5)
    stop_all(killer)

    limited = starts("limited")
    in_window = sum(1 for t in limited if first <= t < first + 10.0)
    print(f"\nrate limit 10/s: {in_window} starts in the 10 s after the first "
          f"({len(limited)} in all)")
    assert 90 <= in_window <= 110, f"{in_window} starts in 10 s at a limit of 10/s"

    unlimited = starts("unlimited")
    assert len(unlimited) == 100, "the unlimited task's jobs did not all run"
    assert unlimited[-1] - enqueued_at < 5, (
        f"the unlimited task was held back: its last job started "
        f"{unlimited[-1] - enqueued_at:.1f} s after the enqueue")
    # Limited jobs are still waiting: the limit, not a lack of work, set the pace.
    assert sql("SELECT count(*) FROM app_jobs.jobs WHERE task_identifier = 'limited'")[0][0] \
        >= 300 - len(limited)
    assert len(limited) < 300


def write_tasks(tmp_path: Path, body: str) -> Path:
    return write_module(tmp_path, body, "flow_tasks", LOG_PRELUDE)
