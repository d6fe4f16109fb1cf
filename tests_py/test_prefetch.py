"""The prefetch buffer of pgjobs-worker (jobs claimed ahead, not started yet) with real
worker processes: a buffered job is a claim like any other, so it is never lost and never
run twice whatever happens to its worker, and queue, rate-limit and priority semantics
and timeouts hold with a buffer.

Most tests build the same scene, enqueued in one transaction: 40 quick jobs first (the
buffer only fills while handlers are seen to finish fast: it holds about 0.1 s of
work), then four `blocker` jobs that hold the four slots of a --concurrency 4 worker
until the test touches a gate file, then the `held` jobs, which wait in the buffer
behind them (locked by the worker, attempt 1, never started). With every slot stuck the
buffer's target falls to 0, but a worker keeps up to `concurrency` jobs beyond it.
Every handler writes the claim log of faults.py, which says
who started what, when, and how many times. Each test prints its figures on a
"[prefetch]" line (pytest -s).
"""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from pathlib import Path

import psycopg
import pytest
from faults import Db, Fleet, WorkerProc, by_job, read_claims, wait_for, write_tasks
from faults import report as tagged_report


def report(name: str, **figures: object) -> None:
    tagged_report("prefetch", name, **figures)


HB = 0.5
FAST = ("--heartbeat-interval", str(HB), "--dead-for", "2", "--poll-interval", "0.2")

TASKS = """
    GATE = {gate!r}

    @pgjobs.task
    def quick(payload, job):
        claim_log(job, "start")
        claim_log(job, "end")

    @pgjobs.task
    def blocker(payload, job):
        claim_log(job, "start")
        while not os.path.exists(GATE):
            time.sleep(0.01)
        time.sleep(payload.get("after_gate", 0))
        claim_log(job, "end")

    @pgjobs.task
    def held(payload, job):
        claim_log(job, "start")
        time.sleep(payload.get("sleep", 0))
        claim_log(job, "end")
        return {{"pid": os.getpid()}}
"""


@pytest.fixture
def scene(db, tmp_path):
    """(tasks, claims log, gate, fleet(*args)); every worker is killed at teardown."""
    claims, gate = tmp_path / "claims", tmp_path / "gate"
    tasks = write_tasks(tmp_path, claims, TASKS.format(gate=str(gate)))
    made: list[Fleet] = []

    def fleet(*extra: str) -> Fleet:
        f = Fleet(db.info.dsn, tasks, tmp_path, f"p{len(made) + 1}", *FAST, *extra)
        made.append(f)
        return f

    yield tasks, claims, gate, fleet
    for f in made:
        f.cleanup()


def add(dbx: Db, task: str, n: int = 1, **named: str) -> list[int]:
    """n jobs of task (payload {"n": i}, or named['payload']); named: more add_job
    arguments as SQL expressions."""
    payload = named.pop("payload", "json_build_object('n', i)")
    args = "".join(f", {k} := {v}" for k, v in named.items())
    return [r[0] for r in dbx.rows(
        f"SELECT (app_jobs.add_job(identifier := %s, payload := {payload}{args})).id "
        "FROM generate_series(1, %s) AS i ORDER BY 1", (task, n))]


def warm_up(dbx: Db, n: int = 20) -> None:
    """Quick jobs first: the buffer fills only while handlers finish fast."""
    ids = add(dbx, "quick", n)
    wait_for(lambda: dbx.value("SELECT count(*) FROM app_jobs.job_history "
                               "WHERE job_id = ANY(%s)", (ids,)) == n, 30, "the warm-up")


def after_quick(conninfo: str, *batches: tuple[str, int, str]) -> list[list[int]]:
    """In one transaction: 40 quick jobs (priority -1), then each (task, n, more add_job
    arguments as SQL, i the job's number) in turn; the ids of each batch."""
    out = []
    with psycopg.connect(conninfo) as conn:
        conn.execute("SELECT app_jobs.add_job(identifier := 'quick', priority := -1) "
                     "FROM generate_series(1, 40)")
        for task, n, more in batches:
            if "payload :=" not in more:
                more += ", payload := json_build_object('n', i)"
            out.append([r[0] for r in conn.execute(
                f"SELECT (app_jobs.add_job(identifier := %s{more})).id "
                "FROM generate_series(1, %s) AS i ORDER BY 1", (task, n)).fetchall()])
    return out


def locked_by(dbx: Db, worker: WorkerProc, ids: list[int]) -> list[tuple]:
    return dbx.rows("SELECT id, attempts FROM app_jobs.jobs WHERE locked_by = %s "
                    "AND id = ANY(%s) ORDER BY id", (worker.worker_id, ids))


def blocked_with_buffer(dbx: Db, claims: Path, worker: WorkerProc, n: int,
                        more: str = "") -> tuple[list[int], list[int]]:
    """Four blockers holding the worker's four slots and n (at most 4) held jobs waiting
    in its buffer; (blocker ids, held ids)."""
    blockers, ids = after_quick(dbx.conninfo, ("blocker", 4, ""),
                                ("held", n, f", priority := 1{more}"))
    wait_for(lambda: set(blockers) <= {c.job_id for c in read_claims(claims)}, 20,
             "the blockers to start")
    wait_for(lambda: locked_by(dbx, worker, ids) == [(i, 1) for i in ids], 20,
             f"{n} held jobs claimed into the buffer")
    assert not {c.job_id for c in read_claims(claims)} & set(ids), "a buffered job started"
    return blockers, ids


def starts(claims: Path, ids) -> dict[int, list]:
    jobs = by_job(read_claims(claims))
    return {i: jobs.get(i, []) for i in ids}


def history(dbx: Db, job_id: int) -> list[tuple]:
    return dbx.rows("SELECT status, attempts FROM app_jobs.job_history WHERE job_id = %s "
                    "ORDER BY id", (job_id,))


# -- SIGTERM ----------------------------------------------------------------------------------

def test_sigterm_hands_buffered_jobs_back_at_once(dbx, scene):
    """SIGTERM: buffered jobs are released at once (attempt refunded, while the running
    jobs still have their shutdown grace), so another worker runs each of them exactly
    once; the stopping worker never starts one and says how many it handed back."""
    _, claims, gate, fleet = scene
    first = fleet("--concurrency", "4", "--prefetch", "10", "--shutdown-timeout", "20").start()
    blockers, ids = blocked_with_buffer(dbx, claims, first, 4)

    signalled = first.signal(signal.SIGTERM)
    # Handed back while the blockers still run in their shutdown grace.
    wait_for(lambda: dbx.rows("SELECT count(*) FROM app_jobs.jobs WHERE id = ANY(%s) "
                              "AND locked_by IS NULL AND attempts = 0", (ids,)) == [(4,)],
             5, "the buffered jobs to be released")
    released_after = time.monotonic() - signalled
    assert first.alive(), first.log_text()
    second = fleet("--concurrency", "4").start()
    wait_for(lambda: all(history(dbx, i) for i in ids), 20, "another worker to run them")
    gate.touch()
    assert first.wait(20) == 0, first.log_text()
    assert second.stop() == 0, second.log_text()

    for job_id, cs in starts(claims, ids).items():
        assert [(c.pid, c.attempt) for c in cs] == [(second.pid, 1)], (job_id, cs)
        assert history(dbx, job_id) == [("completed", 1)]
    for job_id in blockers:
        assert history(dbx, job_id) == [("completed", 1)]
    assert all(c.start < signalled for c in read_claims(claims) if c.pid == first.pid)
    log = first.log_text()
    assert "handed back 4 buffered job(s) that never started" in log, log
    assert "0 released, 4 returned unstarted" in log, log
    report("SIGTERM", buffered=4, released_after_s=f"{released_after:.2f}")


# -- kill -9 ----------------------------------------------------------------------------------

def test_kill9_buffered_jobs_are_rescued_once(dbx, scene):
    """kill -9: the dead worker's buffered jobs are rescued by another worker's reaper
    and run exactly once, by that worker (the reaper cannot tell a buffered claim from a
    running one: each counts one failed attempt, so they run as attempt 2)."""
    _, claims, gate, fleet = scene
    victim = fleet("--concurrency", "4", "--prefetch", "10").start()
    blockers, ids = blocked_with_buffer(dbx, claims, victim, 4)
    killed_at = victim.kill9()
    gate.touch()
    rescuer = fleet("--concurrency", "4").start()
    wait_for(lambda: all(history(dbx, i) for i in [*ids, *blockers]), 40,
             "the rescued jobs to complete")
    rescued_after = time.monotonic() - killed_at
    assert rescuer.stop() == 0, rescuer.log_text()

    for job_id, cs in starts(claims, ids).items():
        assert [(c.pid, c.attempt, c.end is not None) for c in cs] == [
            (rescuer.pid, 2, True)], (job_id, cs)
        assert history(dbx, job_id) == [("completed", 2)]
    for cs in starts(claims, blockers).values():
        assert [(c.pid, c.attempt) for c in cs] == [(victim.pid, 1), (rescuer.pid, 2)]
    assert dbx.value("SELECT count(*) FROM app_jobs.jobs") == 0
    report("kill -9", buffered=4, rescued_and_done_after_s=f"{rescued_after:.1f}")


# -- fenced while buffered ----------------------------------------------------------------------

def test_buffered_job_rescued_elsewhere_is_dropped_never_run(dbx, scene):
    """fencing: a buffered job whose claim another worker took over (rescued, attempt
    moved on) is dropped at the next heartbeat and never run here; the claim stays the
    other worker's; the rest of the buffer runs once the slots are free."""
    _, claims, gate, fleet = scene
    worker = fleet("--concurrency", "4", "--prefetch", "10", "--log-format", "json").start()
    _, ids = blocked_with_buffer(dbx, claims, worker, 4)
    taken = ids[0]
    dbx.rows("UPDATE app_jobs.jobs SET locked_by = 'rescuer-1', attempts = attempts + 1 "
             "WHERE id = %s", (taken,))
    time.sleep(4 * HB)  # a few heartbeats
    gate.touch()
    wait_for(lambda: all(history(dbx, i) for i in ids[1:]), 20, "the rest to complete")
    time.sleep(2 * HB)
    assert worker.stop() == 0, worker.log_text()

    assert starts(claims, [taken])[taken] == [], "the fenced job ran"
    assert dbx.rows("SELECT locked_by, attempts FROM app_jobs.jobs WHERE id = %s",
                    (taken,)) == [("rescuer-1", 2)]
    assert history(dbx, taken) == []
    for job_id in ids[1:]:
        assert [c.attempt for c in starts(claims, [job_id])[job_id]] == [1]
        assert history(dbx, job_id) == [("completed", 1)]
    log = worker.log_text()
    assert f'"job_id": {taken}' in log and "before it started (fenced): dropped" in log, log
    assert '"fenced": 1' in log, log


# -- cancelled while buffered -------------------------------------------------------------------

def test_buffered_job_cancelled_ends_cancelled_without_running(dbx, scene):
    """cancel: cancel_job on a buffered job ('cancelling': it is claimed) ends it
    cancelled at once, without running it, while the running jobs go on; the rest of the
    buffer runs afterwards."""
    _, claims, gate, fleet = scene
    worker = fleet("--concurrency", "4", "--prefetch", "10").start()
    blockers, ids = blocked_with_buffer(dbx, claims, worker, 4)
    target = ids[1]
    assert dbx.value("SELECT app_jobs.cancel_job(%s)", (target,)) == "cancelling"
    wait_for(lambda: history(dbx, target), 10, "the cancelled job to end")
    assert history(dbx, target) == [("cancelled", 1)]
    assert dbx.value("SELECT status FROM app_jobs.job_status WHERE id = %s",
                     (target,)) == "cancelled"
    assert not any(history(dbx, b) for b in blockers), "a running job was stopped too"
    gate.touch()
    wait_for(lambda: all(history(dbx, i) for i in [*ids, *blockers]), 20,
             "the rest to complete")
    assert worker.stop() == 0, worker.log_text()

    assert starts(claims, [target])[target] == [], "the cancelled job ran"
    for job_id in set(ids + blockers) - {target}:
        assert history(dbx, job_id) == [("completed", 1)]
    assert "1 cancelled" in worker.log_text(), worker.log_text()


# -- timeouts ---------------------------------------------------------------------------------

def test_timeout_counts_from_the_start_not_the_claim(dbx, scene):
    """timeouts: jobs with timeout 1 s wait 2 s in the buffer; the one that then runs
    0.5 s completes, the one that runs 1.5 s fails 'timed out' about 1 s after it
    started."""
    _, claims, gate, fleet = scene
    worker = fleet("--concurrency", "4", "--prefetch", "10").start()
    blockers, (fits, slow) = blocked_with_buffer(
        dbx, claims, worker, 2, ", timeout := '1 second', payload := json_build_object("
                                "'sleep', CASE WHEN i = 1 THEN 0.5 ELSE 1.5 END)")
    time.sleep(2)
    gate.touch()
    wait_for(lambda: history(dbx, fits) and dbx.rows(
        "SELECT 1 FROM app_jobs.jobs WHERE id = %s AND locked_by IS NULL", (slow,)),
        20, "both attempts to end")
    assert worker.stop() == 0, worker.log_text()

    assert history(dbx, fits) == [("completed", 1)]
    (fit,) = starts(claims, [fits])[fits]
    assert fit.end - fit.start >= 0.5
    assert fit.start - starts(claims, blockers)[blockers[0]][0].start >= 2, (
        "the job did not wait in the buffer")
    assert dbx.value("SELECT last_error FROM app_jobs.jobs WHERE id = %s",
                     (slow,)).startswith("timed out after 1 s")


# -- priority -----------------------------------------------------------------------------------

def test_buffered_jobs_start_in_claim_order(dbx, scene):
    """priority: jobs claimed ahead start in claim order (priority, run_at, id), one at
    a time from the buffer of a --concurrency 1 worker."""
    _, claims, gate, fleet = scene
    worker = fleet("--concurrency", "1", "--prefetch", "50").start()
    (ids,) = after_quick(dbx.conninfo, ("held", 30, ", priority := (i * 7919) %% 13"))
    wait_for(lambda: all(history(dbx, i) for i in ids), 20, "the jobs to run")
    assert worker.stop() == 0, worker.log_text()

    # One statement added them: the same run_at (now()), so priority, then id.
    expected = [r[0] for r in dbx.rows(
        "SELECT job_id FROM app_jobs.job_history WHERE job_id = ANY(%s) "
        "ORDER BY priority, job_id", (ids,))]
    started = [c.job_id for c in sorted(read_claims(claims), key=lambda c: c.start)
               if c.job_id in set(ids)]
    assert started == expected


# -- named queues across workers, with lost connections ------------------------------------------

def test_serial_queue_and_exactly_once_with_buffers_and_reconnects(dbx, scene, connect):
    """named queue: with two workers prefetching and their work connections terminated
    twice mid-drain, a serial queue never runs two jobs at once and every job runs
    exactly once (a reconnect releases only claims whose answer was lost, never a
    buffered one)."""
    _, claims, gate, fleet = scene
    workers = [fleet("--concurrency", "2", "--prefetch", "50").start() for _ in range(2)]
    warm_up(dbx, 40)
    gate.touch()
    serial = add(dbx, "held", 30, queue_name="'serial'",
                 payload="json_build_object('sleep', 0.02)")
    plain = add(dbx, "held", 300, payload="json_build_object('sleep', 0.005)")
    killer = connect()
    terminated = 0
    for left in (240, 120):
        wait_for(lambda n=left: dbx.value("SELECT count(*) FROM app_jobs.jobs") <= n, 60,
                 f"{left} jobs left")
        terminated += killer.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE "
            "datname = current_database() AND application_name LIKE 'pgjobs-worker %%'"
        ).fetchone()[0]
    wait_for(lambda: dbx.value("SELECT count(*) FROM app_jobs.jobs") == 0, 60,
             "every job to complete")
    for w in workers:
        assert w.alive(), w.log_text()
        assert w.stop() == 0, w.log_text()

    assert terminated >= 2
    all_claims = read_claims(claims)
    counts = Counter(c.job_id for c in all_claims)
    twice = {j: n for j, n in counts.items() if j in set(serial + plain) and n != 1}
    assert not twice, f"jobs not run exactly once: {twice}"
    assert dbx.rows("SELECT status, count(*) FROM app_jobs.job_history WHERE job_id = "
                    "ANY(%s) GROUP BY 1", (serial + plain,)) == [("completed", 330)]
    spans = sorted((c.start, c.end) for c in all_claims if c.job_id in set(serial))
    overlapping = [(a, b) for a, b in zip(spans, spans[1:], strict=False) if b[0] < a[1]]
    assert not overlapping, f"serial queue jobs ran at once: {overlapping[:3]}"
    reconnects = sum(w.log_text().count("reconnected") for w in workers)
    report("queue + reconnects", jobs=330, terminated_connections=terminated,
           reconnects=reconnects)


# -- rate limit -----------------------------------------------------------------------------------

def test_rate_limit_holds_with_a_buffer(db, dbx, scene):
    """rate limit: 10 starts a second across two prefetching workers (90 to 110 starts in
    the 10 s after the first), each job started once: a buffered job starts only because
    it was claimed, and claims spend the tokens."""
    _, claims, gate, fleet = scene
    workers = [fleet("--concurrency", "4", "--prefetch", "100").start() for _ in range(2)]
    warm_up(dbx, 40)
    dbx.rows("SELECT app_jobs.set_task_settings('held', rate_limit := 10, "
             "rate_interval := interval '1 second')")
    with db.transaction():
        db.execute("SELECT app_jobs.add_job(identifier := 'held', "
                   "payload := json_build_object('n', g)) FROM generate_series(1, 300) AS g")
    held_ids = {r[0] for r in dbx.rows(
        "SELECT id FROM app_jobs.jobs WHERE task_identifier = 'held'")}

    def held_starts() -> list[float]:
        return sorted(c.start for c in read_claims(claims) if c.job_id in held_ids)

    first = wait_for(held_starts, 15, "the first limited start")[0]
    time.sleep(max(0.0, first + 10.5 - time.monotonic()))
    for w in workers:
        assert w.stop() == 0, w.log_text()
    started = held_starts()
    in_window = sum(1 for t in started if first <= t < first + 10.0)
    counts = Counter(c.job_id for c in read_claims(claims) if c.job_id in held_ids)
    report("rate limit", starts_in_10_s=in_window, started=len(started))
    assert 90 <= in_window <= 110, f"{in_window} starts in 10 s at a limit of 10/s"
    assert set(counts.values()) == {1}, "a limited job started twice"


# -- the buffer's bounds --------------------------------------------------------------------------

def test_claims_never_exceed_prefetch_plus_concurrency(dbx, scene, connect):
    """bounds: while draining quick jobs a worker never holds more than --prefetch +
    --concurrency claimed jobs that have not started (and more than --concurrency: the
    buffer fills); with --prefetch 0 never more than --concurrency. Sampled every few
    milliseconds: the jobs locked by the worker whose handler had not started when the
    sample was back (outcomes not delivered yet are locked too, but started)."""
    _, claims, gate, fleet = scene
    sampler = connect()
    samples: list[tuple[float, str, list[int]]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            rows = sampler.execute(
                "SELECT locked_by, array_agg(id) FROM app_jobs.jobs "
                "WHERE locked_by IS NOT NULL GROUP BY 1").fetchall()
            at = time.monotonic()
            samples.extend((at, worker_id, ids) for worker_id, ids in rows)
            time.sleep(0.002)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        buffered = fleet("--concurrency", "3", "--prefetch", "20").start()
        warm_up(dbx)
        add(dbx, "held", 3000)
        wait_for(lambda: dbx.value("SELECT count(*) FROM app_jobs.jobs") == 0, 60,
                 "the drain with a buffer")
        assert buffered.stop() == 0, buffered.log_text()
        strict = fleet("--concurrency", "3", "--prefetch", "0").start()
        warm_up(dbx)
        add(dbx, "held", 1000)
        wait_for(lambda: dbx.value("SELECT count(*) FROM app_jobs.jobs") == 0, 60,
                 "the drain without a buffer")
        assert strict.stop() == 0, strict.log_text()
    finally:
        stop.set()
        thread.join(5)
    started = {c.job_id: c.start for c in read_claims(claims)}
    peak: Counter = Counter()
    for at, worker_id, ids in samples:
        waiting = sum(1 for i in ids if started.get(i, float("inf")) > at)
        peak[worker_id] = max(peak[worker_id], waiting)
    report("bounds", samples=len(samples), peak_unstarted_claims=dict(peak))
    assert 3 < peak[buffered.worker_id] <= 23, peak
    assert peak[strict.worker_id] <= 3, peak


def test_slow_handlers_are_not_hoarded(dbx, scene):
    """hoarding: a worker that has only seen quick handlers claims a batch of slow ones
    (0.3 s) into its buffer; once they turn out slow it hands back what it cannot start
    within about 0.1 s (attempt refunded), and a second worker runs its share; every job
    runs once."""
    _, claims, gate, fleet = scene
    first = fleet("--concurrency", "2", "--prefetch", "100").start()
    (ids,) = after_quick(dbx.conninfo, ("held", 30, ", payload := json_build_object("
                                                    "'sleep', 0.3)"))
    wait_for(lambda: len(locked_by(dbx, first, ids)) > 10, 10, "the first worker to claim")
    grabbed = len(locked_by(dbx, first, ids))
    second = fleet("--concurrency", "2", "--prefetch", "100").start()
    wait_for(lambda: all(history(dbx, i) for i in ids), 60, "the slow jobs to complete")
    assert first.stop() == 0 and second.stop() == 0, first.log_text() + second.log_text()

    ran = Counter(c.pid for c in read_claims(claims) if c.job_id in set(ids))
    report("hoarding", claimed_at_first=grabbed, runs_per_worker=dict(ran))
    assert sum(ran.values()) == 30 and set(Counter(
        c.job_id for c in read_claims(claims) if c.job_id in set(ids)).values()) == {1}
    assert "handed back" in first.log_text(), first.log_text()
    assert ran[second.pid] >= 6, ran
    assert all(h[0] == [("completed", 1)][0] for i in ids for h in [history(dbx, i)])
