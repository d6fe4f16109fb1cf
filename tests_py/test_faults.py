"""Fault injection (issue 5): real pgjobs-worker processes and a real server, killed,
frozen, restarted and poisoned, each test bounded in time (the file runs in about two
minutes; PGJOBS_SOAK=1 runs longer variants).

Every handler keeps a claim log (faults.py: one O_APPEND write per line,
"job_id attempt pid start|end monotonic-time"), which each test checks against the
database: who ran what, when, and how many times.

1. 10,000 jobs, 4 workers x concurrency 4, batch sizes 1 and 10: every job completed
   exactly once (one completed history row per job), never claimed twice at once, queue
   empty at the end.
2. kill -9 of a random worker every 2 s for 30 s, restarted at once (--heartbeat-interval
   0.5 --dead-for 2): every job completes once; only jobs whose earlier claim died with a
   killed process run again; every orphan is unlocked within dead_for + 5 s of the kill.
3. SIGSTOP a worker past its lease: the job is rescued and finished elsewhere; after
   SIGCONT the stale completion is fenced and changes nothing.
4. pg_ctl restart -m fast three times during a drain: no job lost, workers reconnect on
   their own and finish the rest; the server is up again after the test, pass or fail.
5. A poison job whose handler kills its worker process (workers restarted by the test as
   they die) fails permanently after max_attempts 3, its attempts spaced by the exp(attempts)
   backoff, while other jobs keep completing.
6. SIGTERM with 20 jobs in flight (half outlasting --shutdown-timeout 2): no claim after
   the signal, the long ones released with their attempt refunded, exit within grace + 2 s.

Each test prints its figures on a "[faults]" line (pytest -s). PGJOBS_FAULT_SEED replays
the kill order of test 2. Test 4 needs PGJOBS_CLUSTER_DIR and PGJOBS_PG_BINDIR (set by the
harness) and is skipped without them.
"""
from __future__ import annotations

import math
import signal
import time
from itertools import pairwise

import pytest
from faults import (
    SOAK,
    Cluster,
    Db,
    Fleet,
    by_job,
    completed_counts,
    duplicates,
    enqueue,
    overlaps,
    read_claims,
    seeded_random,
    wait_for,
    write_tasks,
)
from faults import report as tagged_report


def report(name: str, **figures: object) -> None:
    tagged_report("faults", name, **figures)


@pytest.fixture
def fleets():
    made: list[Fleet] = []
    yield made
    for fleet in made:
        fleet.cleanup()


@pytest.fixture
def new_fleet(db, tmp_path, fleets):
    def _new(tasks, prefix: str, *extra: str) -> Fleet:
        log_dir = tmp_path / "logs"
        log_dir.mkdir(exist_ok=True)
        fleet = Fleet(db.info.dsn, tasks, log_dir, prefix, *extra)
        fleets.append(fleet)
        return fleet
    return _new


# -- 1. throughput: every job exactly once ----------------------------------------------------

@pytest.mark.parametrize("batch", [1, 10])
def test_every_job_completed_exactly_once(dbx, new_fleet, tmp_path, batch):
    n_jobs = 50_000 if SOAK else 10_000
    log = tmp_path / "claims"
    tasks = write_tasks(tmp_path, log, """
        @pgjobs.task
        def quick(payload, job):
            claim_log(job, "start")
            claim_log(job, "end")
    """)
    enqueue(dbx, n_jobs, "quick")
    fleet = new_fleet(tasks, f"tp{batch}", "--concurrency", "4", "--batch-size", str(batch))
    t0 = time.monotonic()
    workers = [fleet.start() for _ in range(4)]
    wait_for(lambda: dbx.value("SELECT count(*) FROM app_jobs.jobs") == 0, 240,
             "the queue to drain", step=0.2)
    elapsed = time.monotonic() - t0
    for w in workers:
        assert w.stop() == 0, fleet.logs()

    done = completed_counts(dbx)
    assert dbx.value("SELECT count(*) FROM app_jobs.job_history") == n_jobs
    assert len(done) == n_jobs and set(done.values()) == {1}
    claims = read_claims(log)
    jobs = by_job(claims)
    assert set(jobs) == set(done)
    twice = {j: cs for j, cs in jobs.items() if len(cs) != 1 or cs[0].end is None}
    assert not twice, f"jobs not run exactly once: {list(twice.items())[:5]}"
    assert not overlaps(claims)
    assert dbx.value("SELECT count(*) FROM app_jobs.jobs") == 0
    report(f"throughput batch {batch}", jobs=n_jobs, workers=4, concurrency=4,
           seconds=f"{elapsed:.1f}", jobs_per_s=f"{n_jobs / elapsed:.0f}")


# -- 2. kill -9 a random worker every 2 s -------------------------------------------------------

def test_kill9_random_workers(dbx, new_fleet, tmp_path):
    chaos_s = 300 if SOAK else 30
    n_jobs = 12_000 if SOAK else 1_500
    dead_for, slots = 2.0, 4
    rng, seed = seeded_random()
    log = tmp_path / "claims"
    tasks = write_tasks(tmp_path, log, """
        @pgjobs.task
        def work(payload, job):
            claim_log(job, "start")
            time.sleep(0.4)
            claim_log(job, "end")
    """)
    enqueue(dbx, n_jobs, "work")
    fleet = new_fleet(tasks, "chaos", "--concurrency", "4", "--heartbeat-interval", "0.5",
                      "--dead-for", str(dead_for))
    workers = [fleet.start() for _ in range(slots)]
    wait_for(lambda: len(read_claims(log)) >= 2 * slots, 30, "the workers to start jobs")

    kills: list[dict] = []  # worker_id, pid, at, orphans, rescued_after
    held = "SELECT id FROM app_jobs.jobs WHERE locked_by = %s ORDER BY id"

    def poll_rescues() -> None:
        for k in kills:
            if k["rescued_after"] is None and not dbx.rows(held, (k["worker_id"],)):
                k["rescued_after"] = time.monotonic() - k["at"]

    t_end = time.monotonic() + chaos_s
    next_kill = time.monotonic() + 2
    while time.monotonic() < t_end:
        poll_rescues()
        if time.monotonic() >= next_kill:
            slot = rng.randrange(slots)
            victim = workers[slot]
            at = victim.kill9()
            workers[slot] = fleet.start()
            kills.append({"worker_id": victim.worker_id, "pid": victim.pid, "at": at,
                          "orphans": [r[0] for r in dbx.rows(held, (victim.worker_id,))],
                          "rescued_after": None})
            next_kill += 2
        time.sleep(0.05)

    left_after_chaos = dbx.value("SELECT count(*) FROM app_jobs.jobs")

    def all_done() -> bool:
        poll_rescues()
        return dbx.value("SELECT count(*) FROM app_jobs.jobs") == 0

    wait_for(all_done, 180, "every job to complete after the kills", step=0.1)
    wait_for(lambda: (poll_rescues(), all(k["rescued_after"] is not None for k in kills))[1],
             30, "every killed worker's jobs to be unlocked")
    for w in workers:
        assert w.alive(), f"worker {w.worker_id} died unkilled:\n{w.log_text()[-3000:]}"
        assert w.stop() == 0, w.log_text()[-3000:]

    # every job completed exactly once
    done = completed_counts(dbx)
    assert len(done) == n_jobs and set(done.values()) == {1}
    assert dbx.value("SELECT count(*) FROM app_jobs.job_history") == n_jobs

    # only killed processes lost claims; no job ran twice at once
    killed_pids = {k["pid"]: k["at"] for k in kills}
    pid_of = {w.worker_id: w.pid for w in fleet.all}
    finisher = {job_id: pid_of[wid] for job_id, wid, in dbx.rows(
        "SELECT job_id, worker_id FROM app_jobs.job_history")}
    claims = read_claims(log)
    dups = duplicates(claims)
    for job_id, cs in dups.items():
        earlier = [c for c in cs if c.pid != finisher[job_id]]
        assert all(c.pid in killed_pids for c in earlier), (
            f"job {job_id} started again although no earlier claim died: {cs}")
    assert not overlaps(claims, killed_pids), overlaps(claims, killed_pids)[:5]
    reaped_alive = [w.worker_id for w in fleet.all if "presumed dead and reaped" in w.log_text()]

    # every orphan unlocked again within dead_for + 5 s of its kill
    with_orphans = [k for k in kills if k["orphans"]]
    worst = max((k["rescued_after"] for k in with_orphans), default=0.0)
    report("kill -9", seed=seed, jobs=n_jobs, chaos_s=chaos_s,
           left_after_chaos=left_after_chaos, kills=len(kills),
           kills_with_orphans=len(with_orphans),
           orphans=sum(len(k["orphans"]) for k in kills), duplicates=len(dups),
           worst_rescue_s=f"{worst:.2f}", live_workers_reaped=len(reaped_alive))
    slow = [(k["worker_id"], round(k["rescued_after"], 2)) for k in with_orphans
            if k["rescued_after"] > dead_for + 5]
    assert not slow, f"orphans unlocked later than dead_for + 5 s after the kill: {slow}"
    assert with_orphans, "no kill caught a worker holding jobs"


# -- 3. a stopped worker's late completion is fenced --------------------------------------------

def test_sigstopped_worker_completion_is_fenced(dbx, new_fleet, tmp_path):
    dead_for = 2.0
    log = tmp_path / "claims"
    go = tmp_path / "go"
    tasks = write_tasks(tmp_path, log, f"""
        @pgjobs.task
        def lease(payload, job):
            claim_log(job, "start")
            # attempt 1 cannot end before the test lets it (while its process is frozen)
            while job.attempts == 1 and not os.path.exists({str(go)!r}):
                time.sleep(0.01)
            claim_log(job, "end")
            return {{"attempt": job.attempts, "pid": os.getpid()}}
    """)
    fleet = new_fleet(tasks, "lease", "--concurrency", "1", "--heartbeat-interval", "0.5",
                      "--dead-for", str(dead_for))
    job_id = dbx.value("SELECT id FROM app_jobs.add_job(identifier := 'lease')")
    stale = fleet.start()
    wait_for(lambda: read_claims(log), 30, "the first attempt to start")
    stopped_at = stale.signal(signal.SIGSTOP)
    try:
        rescuer = fleet.start()
        row = wait_for(lambda: dbx.rows(
            "SELECT worker_id, attempts, result, finished_at FROM app_jobs.job_history "
            "WHERE job_id = %s", (job_id,)), 60, "another worker to finish the rescued job")
        frozen_for = time.monotonic() - stopped_at
        go.touch()
    finally:
        stale.signal(signal.SIGCONT)
    assert row[0][:2] == (rescuer.worker_id, 2), row
    assert frozen_for > dead_for

    # The resumed worker finishes attempt 1 and learns it lost the claim: either its
    # delivery is refused (finish_jobs says 'fenced', 0 rows changed) or its heartbeat
    # learns it first and the outcome is never sent.
    fenced = ("(fenced); its outcome changed nothing", "(fenced): its outcome is dropped")
    wait_for(lambda: any(m in stale.log_text() for m in fenced), 30,
             "the resumed worker to log that its claim was fenced")
    wait_for(lambda: len([c for c in read_claims(log) if c.end is not None]) == 2, 30,
             "the stale attempt to end")
    assert dbx.rows("SELECT worker_id, attempts, result, finished_at FROM "
                    "app_jobs.job_history WHERE job_id = %s", (job_id,)) == row, (
        "the stale completion changed the job's history")
    assert dbx.value("SELECT count(*) FROM app_jobs.jobs WHERE id = %s", (job_id,)) == 0
    assert dbx.rows("SELECT status FROM app_jobs.job_history WHERE job_id = %s",
                    (job_id,)) == [("completed",)]
    assert stale.alive() and rescuer.alive()
    dropped = fenced[0] in stale.log_text()
    assert stale.stop() == 0 and rescuer.stop() == 0

    claims = read_claims(log)
    assert [(c.attempt, c.pid) for c in sorted(claims, key=lambda c: c.start)] == [
        (1, stale.pid), (2, rescuer.pid)]
    report("SIGSTOP", job=job_id, frozen_s=f"{frozen_for:.1f}",
           fenced_by="finish_jobs (0 rows changed)" if dropped else "heartbeat (dropped)",
           history_rows=1)


# -- 4. the server restarts under the workers ----------------------------------------------------

@pytest.fixture
def cluster(db):
    """pg_ctl on the test cluster; the server is up again after the test, pass or fail
    (torn down before `db`, whose teardown drops the database)."""
    handle = Cluster()
    if not handle.available:
        pytest.skip("PGJOBS_CLUSTER_DIR / PGJOBS_PG_BINDIR not set: no pg_ctl to restart with")
    yield handle
    handle.ensure_up()
    wait_for(lambda: Db(db.info.dsn).try_value("SELECT 1") == 1, 60, "the server to accept "
             "connections again")


def test_server_restarts_during_drain(dbx, new_fleet, tmp_path, cluster):
    n_jobs = 20_000 if SOAK else 3_000
    restarts = 10 if SOAK else 3
    log = tmp_path / "claims"
    tasks = write_tasks(tmp_path, log, """
        @pgjobs.task
        def steady(payload, job):
            claim_log(job, "start")
            time.sleep(0.02)
            claim_log(job, "end")
    """)
    enqueue(dbx, n_jobs, "steady")
    fleet = new_fleet(tasks, "restart", "--concurrency", "4", "--heartbeat-interval", "1",
                      "--dead-for", "10")
    workers = [fleet.start() for _ in range(3)]
    left = "SELECT count(*) FROM app_jobs.jobs"
    took, left_at = [], []
    for i in range(1, restarts + 1):
        threshold = n_jobs * (restarts + 1 - i) // (restarts + 1)
        left_at.append(wait_for(
            lambda t=threshold: (v := dbx.try_value(left)) is not None and v <= t and v,
            120, f"the drain to reach {threshold} jobs left"))
        took.append(cluster.restart())
    wait_for(lambda: dbx.try_value(left) == 0, 180, "the workers to finish the rest")
    for w in workers:
        assert w.alive(), f"worker {w.worker_id} died:\n{w.log_text()[-3000:]}"

    done = completed_counts(dbx)
    assert len(done) == n_jobs, f"{n_jobs - len(done)} jobs lost"
    assert set(done.values()) == {1}
    assert not overlaps(read_claims(log))
    reconnects = [w.log_text().count("reconnected") for w in workers]
    assert all(reconnects), f"a worker never reconnected: {reconnects}"
    for w in workers:
        assert w.stop() == 0, w.log_text()[-3000:]
    report("pg_ctl restart", jobs=n_jobs, restarts=restarts,
           jobs_left_at_each_restart=left_at,
           restart_s=[round(t, 1) for t in took], worker_reconnects=reconnects,
           reruns=len(read_claims(log)) - n_jobs)


# -- 5. a poison job kills its worker on every attempt ---------------------------------------

def test_poison_job_fails_permanently_with_backoff(dbx, new_fleet, tmp_path):
    n_normal, max_attempts, slots, hb = 600, 3, 2, 0.5
    log = tmp_path / "claims"
    tasks = write_tasks(tmp_path, log, """
        @pgjobs.task
        def poison(payload, job):
            claim_log(job, "start")
            os._exit(1)

        @pgjobs.task
        def normal(payload, job):
            claim_log(job, "start")
            time.sleep(0.1)
            claim_log(job, "end")
    """)
    poison_id = dbx.value("SELECT id FROM app_jobs.add_job(identifier := 'poison', "
                          "max_attempts := %s)", (max_attempts,))
    enqueue(dbx, n_normal, "normal", priority=1)
    fleet = new_fleet(tasks, "poison", "--concurrency", "4", "--heartbeat-interval", str(hb),
                      "--dead-for", "2")
    workers = [fleet.start() for _ in range(slots)]
    exits: list[int] = []

    def supervise() -> None:
        for i, w in enumerate(workers):
            if not w.alive():
                exits.append(w.wait(5))
                workers[i] = fleet.start()

    final = ("SELECT h.status, h.attempts, j.attempts, j.is_available, j.last_error "
             "FROM app_jobs.job_history AS h JOIN app_jobs.jobs AS j ON j.id = h.job_id "
             "WHERE h.job_id = %s")
    rows = wait_for(lambda: (supervise(), dbx.rows(final, (poison_id,)))[1], 120,
                    "the poison job to fail permanently", step=0.1)
    wait_for(lambda: (supervise(), dbx.value(
        "SELECT count(*) FROM app_jobs.job_history WHERE status = 'completed'") == n_normal)[1],
        120, "every normal job to complete", step=0.1)
    for w in workers:
        assert w.stop() == 0, w.log_text()[-3000:]

    status, hist_attempts, attempts, available, last_error = rows[0]
    assert (status, hist_attempts, attempts, available) == (
        "failed", max_attempts, max_attempts, False)
    assert "presumed dead" in last_error
    assert exits == [1] * max_attempts, f"worker exits: {exits}"
    assert dbx.rows("SELECT id FROM app_jobs.jobs") == [(poison_id,)]

    claims = read_claims(log)
    poison = sorted((c for c in claims if c.job_id == poison_id), key=lambda c: c.start)
    assert [c.attempt for c in poison] == list(range(1, max_attempts + 1))
    assert len({c.pid for c in poison}) == max_attempts
    # backoff exp(attempts) s from the dead worker's last heartbeat, which came at most one
    # heartbeat interval before the attempt started
    gaps = [b.start - a.start for a, b in pairwise(poison)]
    for k, gap in enumerate(gaps, 1):
        assert gap >= math.exp(k) - hb - 0.3, f"attempt {k + 1} came {gap:.2f} s after {k}"
    # the other jobs kept flowing while the poison job was retried
    normal_done = [c.end for c in claims if c.job_id != poison_id and c.end is not None]
    between = [sum(a.start < t < b.start for t in normal_done) for a, b in pairwise(poison)]
    assert all(between), f"normal jobs completed between poison attempts: {between}"
    assert not overlaps(claims, {w.pid: w.died_at for w in fleet.all})
    report("poison", max_attempts=max_attempts, worker_restarts=len(exits),
           attempt_gaps_s=[round(g, 2) for g in gaps],
           min_gaps_s=[round(math.exp(k), 2) for k in range(1, max_attempts)],
           normal_completed_between_attempts=between, normal_jobs=n_normal)


# -- 6. SIGTERM with 20 jobs in flight ----------------------------------------------------------

def test_sigterm_with_jobs_in_flight(dbx, new_fleet, tmp_path):
    grace = 2.0
    log = tmp_path / "claims"
    tasks = write_tasks(tmp_path, log, """
        @pgjobs.task
        def flight(payload, job):
            claim_log(job, "start")
            time.sleep(30 if payload["long"] else 0.5)
            claim_log(job, "end")
    """)
    dbx.rows("SELECT count(app_jobs.add_job(identifier := 'flight', "
             "payload := json_build_object('long', i % 2 = 0))) FROM generate_series(1, 20) AS i")
    # queued behind them (lower priority): must never be claimed once the signal is sent
    dbx.rows("SELECT count(app_jobs.add_job(identifier := 'flight', priority := 1, "
             "payload := json_build_object('long', false))) FROM generate_series(1, 10)")
    long_ids = {r[0] for r in dbx.rows(
        "SELECT id FROM app_jobs.jobs WHERE (payload ->> 'long')::boolean")}
    short_ids = {r[0] for r in dbx.rows(
        "SELECT id FROM app_jobs.jobs WHERE NOT (payload ->> 'long')::boolean "
        "AND priority = 0")}
    fleet = new_fleet(tasks, "term", "--concurrency", "20", "--shutdown-timeout", str(grace))
    worker = fleet.start()
    wait_for(lambda: len(read_claims(log)) >= 20, 30, "20 jobs in flight", step=0.01)
    signalled = worker.signal(signal.SIGTERM)
    code = worker.wait(grace + 30)
    exit_after = worker.died_at - signalled
    assert code == 0, worker.log_text()

    claims = read_claims(log)
    late = [c for c in claims if c.start > signalled]
    assert not late, f"claims after SIGTERM: {late}"
    # A test process stalled for 0.5 s before signalling could let a freed slot take
    # a queued job first: allowed, it is short and must then complete like the others.
    early_extra = {c.job_id for c in claims} - long_ids - short_ids
    assert {c.job_id for c in claims} >= long_ids | short_ids
    assert {c.job_id for c in claims if c.end is not None} == short_ids | early_extra
    assert {r[0] for r in dbx.rows("SELECT job_id FROM app_jobs.job_history "
                                   "WHERE status = 'completed'")} == short_ids | early_extra
    released = dbx.rows("SELECT id, attempts, locked_by, locked_at FROM app_jobs.jobs "
                        "WHERE id = ANY(%s) ORDER BY id", (sorted(long_ids),))
    assert released == [(i, 0, None, None) for i in sorted(long_ids)], "not released"
    assert dbx.value("SELECT count(*) FROM app_jobs.jobs WHERE priority = 1 AND attempts = 0 "
                     "AND locked_by IS NULL") == 10 - len(early_extra)
    assert dbx.value("SELECT count(*) FROM app_jobs.jobs") == 20 - len(early_extra)
    assert "10 released" in worker.log_text()
    report("SIGTERM", in_flight=len(claims), long_released=len(released),
           short_completed=len(short_ids), claimed_before_signal_extra=len(early_extra),
           exit_after_s=f"{exit_after:.2f}", grace_s=grace)
    assert exit_after <= grace + 2, f"exited {exit_after:.2f} s after SIGTERM"
