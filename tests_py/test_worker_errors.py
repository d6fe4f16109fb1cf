"""pgjobs-worker against database errors and blocked statements (issue 11): a SQLSTATE
error on a live connection never ends the worker, never makes it reconnect and never
strands a claim; heartbeats run on a connection of their own, so a statement blocked on
the work connection cannot make a live worker look dead; a finished handler is never run
again because its outcome could not be delivered yet.

Real worker processes (faults.Fleet) and real errors: triggers planted as superuser,
row locks held by another session, revoked privileges, terminated backends. Every
handler writes the claim log of faults.py, which each test checks for jobs run twice.
Each test prints its figures on a "[errors]" line (pytest -s).
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time
from pathlib import Path

import pytest
from faults import Db, Fleet, WorkerProc, completed_counts, duplicates, read_claims, wait_for
from faults import report as tagged_report
from faults import write_tasks as write_claim_tasks
from pgjobs.worker import Worker, WorkerOptions
from psycopg import sql as pgsql
from psycopg.conninfo import make_conninfo


def report(name: str, **figures: object) -> None:
    tagged_report("errors", name, **figures)


HB, DEAD_FOR = 0.5, 3.0
FAST = ("--heartbeat-interval", str(HB), "--dead-for", str(DEAD_FOR), "--poll-interval", "0.5")


@pytest.fixture
def fleet(db, tmp_path):
    """fleet(tasks, *args): a Fleet of workers with FAST liveness; all killed at teardown."""
    made: list[Fleet] = []

    def _fleet(tasks: Path, *extra: str, conninfo: str | None = None) -> Fleet:
        f = Fleet(conninfo or db.info.dsn, tasks, tmp_path, f"w{len(made) + 1}", *FAST, *extra)
        made.append(f)
        return f

    yield _fleet
    for f in made:
        f.cleanup()


@pytest.fixture
def locker(connect):
    """A transactional session that holds row locks until rollback (closed at teardown)."""
    conn = connect(autocommit=False)
    yield conn
    conn.rollback()


def add(dbx: Db, task: str, n: int = 1, **named: str) -> list[int]:
    """n jobs of task (payload {"n": i}); named: more add_job arguments as SQL."""
    args = "".join(f", {k} := {v}" for k, v in named.items())
    return [r[0] for r in dbx.rows(
        f"SELECT (app_jobs.add_job(identifier := %s, payload := json_build_object('n', i)"
        f"{args})).id FROM generate_series(1, %s) AS i ORDER BY 1", (task, n))]


def plant_delete_error(dbx: Db, task: str, sqlstate: str) -> None:
    """Completing (deleting) a job of `task` raises `sqlstate`, as superuser."""
    dbx.rows(f"""
        CREATE FUNCTION public.planted_error() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF old.task_identifier = {pgsql.quote(task)} THEN
                RAISE EXCEPTION 'planted error for %', old.id USING ERRCODE = '{sqlstate}';
            END IF;
            RETURN old;
        END $$;
        CREATE TRIGGER planted_error BEFORE DELETE ON app_jobs.jobs
            FOR EACH ROW EXECUTE FUNCTION public.planted_error();
    """)


def history(dbx: Db, job_id: int) -> list[tuple]:
    return dbx.rows("SELECT status, attempts FROM app_jobs.job_history WHERE job_id = %s "
                    "ORDER BY id", (job_id,))


def job_row(dbx: Db, job_id: int) -> tuple | None:
    rows = dbx.rows("SELECT attempts, locked_by, last_error FROM app_jobs.jobs WHERE id = %s",
                    (job_id,))
    return rows[0] if rows else None


def assert_ran_once(claims_path: Path, job_ids) -> None:
    claims = read_claims(claims_path)
    assert not duplicates(claims), f"run by two processes: {duplicates(claims)}"
    starts: dict[int, int] = {}
    for c in claims:
        starts[c.job_id] = starts.get(c.job_id, 0) + 1
    twice = {j: n for j, n in starts.items() if j in set(job_ids) and n != 1}
    assert not twice, f"jobs not run exactly once: {twice}"


def stopped(worker: WorkerProc, timeout: float = 20) -> tuple[int, str]:
    code = worker.stop(timeout)
    return code, worker.log_text()


# -- (a) a SQLSTATE error while delivering outcomes -----------------------------------------

def test_sqlstate_error_in_outcome_delivery_is_not_a_lost_connection(dbx, fleet, tmp_path):
    """outcome delivery: completing one task's job raises 54001 (an OperationalError to
    psycopg) from a planted trigger: no reconnect, the worker keeps running, every other
    outcome is delivered, the poisoned one is recorded as a plain failure, nothing runs
    twice."""
    claims = tmp_path / "claims"
    tasks = write_claim_tasks(tmp_path, claims, """
        @pgjobs.task
        def poisoned(payload, job):
            claim_log(job, "start")
            claim_log(job, "end")

        @pgjobs.task
        def fine(payload, job):
            claim_log(job, "start")
            time.sleep(0.01)
            claim_log(job, "end")
    """)
    plant_delete_error(dbx, "poisoned", "54001")
    (poison,) = add(dbx, "poisoned", max_attempts="1", priority="-1")
    first = add(dbx, "fine", 30)
    worker = fleet(tasks, "--concurrency", "4").start()

    wait_for(lambda: job_row(dbx, poison)[:2] == (1, None), 20,
             "the poisoned job to be recorded")
    wait_for(lambda: len(completed_counts(dbx)) >= len(first), 20,
             "the other jobs to be delivered")
    # Still working: later jobs are claimed and delivered too.
    later = add(dbx, "fine", 10)
    wait_for(lambda: len(completed_counts(dbx)) >= len(first) + len(later), 20,
             "later jobs to be delivered")
    assert worker.alive()
    code, log = stopped(worker)

    assert code == 0, log
    assert completed_counts(dbx) == {j: 1 for j in first + later}
    attempts, locked_by, last_error = job_row(dbx, poison)
    assert (attempts, locked_by) == (1, None)
    assert last_error.startswith("outcome could not be stored: planted error"), last_error
    assert_ran_once(claims, [poison, *first, *later])
    assert "SQLSTATE 54001" in log and f"finish_jobs refused (job {poison})" in log, log
    assert "lost its database connection" not in log and "reconnected" not in log, log
    report("outcome delivery 54001", jobs=1 + len(first) + len(later),
           refusals=log.count("SQLSTATE 54001"))


# -- (b) a statement blocked by another session's lock ----------------------------------

JOB_ROW = "SELECT 1 FROM app_jobs.jobs WHERE id = %(job)s FOR SHARE"
LOCKS = {
    # An enqueuer's depends_on share-locks the running job's row: finish_jobs skips it
    # (busy) and must not retry it in a busy loop.
    "job row": (JOB_ROW, False),
    # The same while the handler reports progress: set_progress skips the locked row too.
    "job row, progress": (JOB_ROW, True),
    # A lock on the job's queue row (an open enqueue into that queue holds it until it
    # commits): finish_jobs reports the job busy instead of waiting for it.
    "queue row": ("SELECT 1 FROM app_jobs.job_queues WHERE queue_name = 'q' FOR UPDATE", False),
}


@pytest.mark.parametrize("lock", LOCKS)
def test_blocked_statement_does_not_stop_heartbeats(db, dbx, fleet, tmp_path, locker, lock):
    """blocked statements: another session locks a running job's row (FOR SHARE, with and
    without progress reports from the handler) or its queue row for 6 s, longer than
    --lock-timeout 4 and --dead-for 3, with two workers: both keep heartbeating, nobody
    is reaped, other jobs keep completing, the blocked job completes once the lock goes,
    nothing runs twice, no statement waits for the lock (finish_jobs answers busy,
    set_progress skips the row), and finish_jobs is not called in a busy loop meanwhile."""
    statement, progress = LOCKS[lock]
    claims, gate = tmp_path / "claims", tmp_path / "gate"
    tasks = write_claim_tasks(tmp_path, claims, f"""
        @pgjobs.task
        def blocked(payload, job):
            claim_log(job, "start")
            while not os.path.exists({str(gate)!r}):
                time.sleep(0.01)
            if payload["progress"]:
                job.set_progress(50, "under lock")
                time.sleep(0.5)  # still running while the worker sends the progress
            claim_log(job, "end")

        @pgjobs.task
        def other(payload, job):
            claim_log(job, "start")
            claim_log(job, "end")
    """)
    # Count finish_jobs calls (pg_stat_user_functions) in the workers' sessions.
    db.execute(pgsql.SQL("ALTER DATABASE {} SET track_functions = 'pl'").format(
        pgsql.Identifier(db.info.dbname)))
    db.commit()
    (target,) = dbx.rows("SELECT (app_jobs.add_job(identifier := 'blocked', queue_name := 'q', "
                         "payload := json_build_object('progress', %s::boolean))).id",
                         (progress,))[0]
    f = fleet(tasks, "--concurrency", "2", "--lock-timeout", "4")
    workers = [f.start(), f.start()]
    wait_for(lambda: any(c.job_id == target for c in read_claims(claims)), 20,
             "the job to start")
    others = add(dbx, "other", 4)
    wait_for(lambda: len(completed_counts(dbx)) >= 4, 20, "the first other jobs")

    locker.execute(statement, {"job": target})
    gate.touch()
    finish_calls = dbx.value("SELECT coalesce(sum(calls), 0) FROM pg_stat_user_functions "
                             "WHERE funcname = 'finish_jobs'")
    beats: dict[str, list] = {w.worker_id: [] for w in workers}
    done_under_lock = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < 6:
        if int((time.monotonic() - t0) * 2) > len(others) - 4:  # 2 more jobs a second
            others += add(dbx, "other", 1)
        for worker_id, beat in dbx.rows("SELECT id, last_heartbeat FROM app_jobs.workers"):
            if worker_id in beats and (not beats[worker_id] or beats[worker_id][-1] != beat):
                beats[worker_id].append(beat)
        time.sleep(0.1)
    done_under_lock = len(completed_counts(dbx)) - 4
    now = dbx.value("SELECT now()")
    finish_calls = dbx.value("SELECT coalesce(sum(calls), 0) FROM pg_stat_user_functions "
                             "WHERE funcname = 'finish_jobs'") - finish_calls
    locker.rollback()

    wait_for(lambda: history(dbx, target), 20, "the blocked job to complete after the lock")
    wait_for(lambda: len(completed_counts(dbx)) == len(others) + 1, 20, "every other job")
    results = [stopped(w) for w in workers]
    logs = "".join(log for _, log in results)

    gaps = {w: max(((b - a).total_seconds() for a, b in zip(ts, [*ts[1:], now],
                                                             strict=True)), default=99)
            for w, ts in beats.items()}
    report(f"blocked {lock}", max_heartbeat_gap_s={w: f"{g:.2f}" for w, g in gaps.items()},
           other_jobs_completed_under_lock=done_under_lock, finish_jobs_calls=finish_calls,
           lock_timeouts=logs.count("SQLSTATE 55P03"))
    assert all(code == 0 for code, _ in results), logs
    assert max(gaps.values()) < 2.0, (gaps, logs)
    assert "presumed dead" not in logs and "(fenced)" not in logs, logs
    assert dbx.value("SELECT count(*) FROM app_jobs.job_history "
                     "WHERE error_data ->> 'reason' = 'worker_dead'") == 0
    assert history(dbx, target) == [("completed", 1)]
    assert completed_counts(dbx) == {j: 1 for j in [target, *others]}
    assert_ran_once(claims, [target, *others])
    # A busy outcome is counted once, when its handler returned.
    summaries = re.findall(r"stopped after [\d.]+ s: (\d+) completed", logs)
    assert sum(map(int, summaries)) == len(others) + 1, logs
    assert done_under_lock > 0, "no other job completed while the lock was held"
    assert finish_calls < 300, f"finish_jobs called {finish_calls} times in 6 s"
    assert "lost its database connection" not in logs, logs
    # No statement of the worker waited for the lock at all (busy, not a lock timeout).
    assert "SQLSTATE 55P03" not in logs, logs


def test_work_and_heartbeat_sessions_get_the_limits(db):
    """session limits: the work and heartbeat sessions get statement_timeout,
    idle_in_transaction_session_timeout and lock_timeout (--lock-timeout 2.5 s, 0 off)."""
    async def limits(**options: float) -> list[tuple]:
        worker = Worker(db.info.dsn, {"t": lambda payload, job: None},
                        WorkerOptions(worker_id="x", **options))
        found = []
        for role in ("pgjobs-worker", "pgjobs-heartbeat"):
            conn = await worker.connector.open_session(role)
            cur = await conn.execute(
                "SELECT current_setting('application_name') AS a, "
                "current_setting('statement_timeout') AS s, "
                "current_setting('idle_in_transaction_session_timeout') AS i, "
                "current_setting('lock_timeout') AS l")
            found.append(tuple((await cur.fetchone()).values()))
            await conn.close()
        return found

    assert asyncio.run(limits(lock_timeout=2.5, statement_timeout=7)) == [
        ("pgjobs-worker x", "7s", "1min", "2500ms"), ("pgjobs-heartbeat x", "7s", "1min", "2500ms")]
    assert [row[3] for row in asyncio.run(limits(lock_timeout=0))] == ["0", "0"]


# -- (c) an over-long progress stage --------------------------------------------------------

def test_overlong_progress_stage_raises_in_the_handler(dbx, fleet, tmp_path):
    """progress: job.set_progress(10, "x" * 9000) raises ValueError inside the handler and
    the worker goes on; 1000 characters are accepted; a report the database refuses
    anyway (sent past the check) is dropped with a log line, the job still completes."""
    claims, gate = tmp_path / "claims", tmp_path / "gate"
    tasks = write_claim_tasks(tmp_path, claims, f"""
        @pgjobs.task
        def progress(payload, job):
            claim_log(job, "start")
            try:
                job.set_progress(10, "x" * 9000)
                error = None
            except ValueError as exc:
                error = str(exc)
            job.set_progress(20, "y" * 1000)
            while not os.path.exists({str(gate)!r}):
                time.sleep(0.01)
            claim_log(job, "end")
            return error

        @pgjobs.task
        def sneaky(payload, job):
            claim_log(job, "start")
            job.control.report_progress(10, "z" * 9000)  # past set_progress' check
            time.sleep(1)
            claim_log(job, "end")
    """)
    (checked,) = add(dbx, "progress")
    (sneaky,) = add(dbx, "sneaky")
    worker = fleet(tasks).start()
    wait_for(lambda: dbx.rows("SELECT 1 FROM app_jobs.jobs WHERE id = %s AND progress = 20 "
                              "AND stage = repeat('y', 1000)", (checked,)), 20,
             "the 1000-character stage to be stored")
    (tmp_path / "gate").touch()
    wait_for(lambda: history(dbx, checked) and history(dbx, sneaky), 20, "both jobs to end")
    later = add(dbx, "progress", 2)
    wait_for(lambda: all(history(dbx, j) for j in later), 20, "later jobs")
    code, log = stopped(worker)

    assert code == 0, log
    assert dbx.value("SELECT result FROM app_jobs.job_history WHERE job_id = %s",
                     (checked,)) == "stage must be at most 1000 characters, got 9000"
    assert history(dbx, sneaky) == [("completed", 1)]
    assert f"set_progress refused (job {sneaky})" in log and "dropped" in log, log
    assert_ran_once(claims, [checked, sneaky, *later])


# -- (d) housekeeping statements refused ------------------------------------------------------

def test_refused_tick_reap_and_purge_do_not_end_the_worker(db, dbx, fleet, tmp_path):
    """housekeeping: with EXECUTE on run_due_scheduled_jobs, reap_dead_workers and
    purge_job_history revoked from pgjobs_worker, a worker-only login logs each refusal
    (statement and SQLSTATE 42501) and goes on: heartbeats advance, jobs complete; once
    the privilege is back, the next tick enqueues the due schedule and it runs."""
    claims = tmp_path / "claims"
    tasks = write_claim_tasks(tmp_path, claims, """
        @pgjobs.task
        def plain(payload, job):
            claim_log(job, "start")
            claim_log(job, "end")
    """)
    role = f"pgjobs_t_err_{int(time.time() * 1000) % 10**9}"
    revoked = ("app_jobs.run_due_scheduled_jobs(timestamptz)",
               "app_jobs.reap_dead_workers(interval)", "app_jobs.purge_job_history()")
    dbx.rows(f"CREATE ROLE {role} LOGIN IN ROLE pgjobs_worker")
    try:
        for fn in revoked:
            dbx.rows(f"REVOKE EXECUTE ON FUNCTION {fn} FROM pgjobs_worker")
        (schedule,) = dbx.rows("SELECT (app_jobs.add_scheduled_job(identifier := 'plain', "
                               "schedule_info := %s)).id", (json.dumps({"rule": "* * * * *"}),))[0]
        dbx.rows("UPDATE app_jobs.scheduled_jobs SET next_run_at = date_trunc('minute', now()) "
                 "- interval '5 minutes' WHERE id = %s", (schedule,))
        conninfo = make_conninfo(db.info.dsn, user=role)
        worker = fleet(tasks, "--schedule-interval", "0.2", conninfo=conninfo).start()
        jobs = add(dbx, "plain", 5)
        wait_for(lambda: len(completed_counts(dbx)) == 5, 20, "the jobs")
        first_beat = wait_for(lambda: dbx.rows(
            "SELECT last_heartbeat FROM app_jobs.workers WHERE id = %s", (worker.worker_id,)),
            10, "the registration")[0][0]
        wait_for(lambda: all(f"{name} refused: SQLSTATE 42501" in worker.log_text() for name in
                             ("run_due_scheduled_jobs", "reap_dead_workers",
                              "purge_job_history")), 10, "each refusal to be logged")
        wait_for(lambda: dbx.value("SELECT last_heartbeat FROM app_jobs.workers WHERE id = %s",
                                   (worker.worker_id,)) > first_beat, 10, "a heartbeat")
        assert worker.alive(), worker.log_text()
        assert dbx.value("SELECT count(*) FROM app_jobs.jobs") == 0  # no tick ran

        for fn in revoked:
            dbx.rows(f"GRANT EXECUTE ON FUNCTION {fn} TO pgjobs_worker")
        wait_for(lambda: len(completed_counts(dbx)) == 6, 20, "the scheduled job to run")
        code, log = stopped(worker)
    finally:
        for fn in revoked:
            dbx.rows(f"GRANT EXECUTE ON FUNCTION {fn} TO pgjobs_worker")
        dbx.rows(f"DROP ROLE {role}")

    assert code == 0, log
    assert "lost its database connection" not in log, log
    assert_ran_once(claims, jobs)
    report("housekeeping refused", refusals=log.count("SQLSTATE 42501"))


# -- (e) shutdown while an outcome cannot be delivered -----------------------------------------

def test_shutdown_never_refunds_a_finished_handler(dbx, fleet, tmp_path, locker):
    """shutdown: at SIGTERM one outcome is refused as transient (a planted 54000, the
    notification queue full), one is busy (row share-locked, lock gone during the drain)
    and one handler still runs. The running one is released (attempt refunded), the busy
    one is delivered during the drain, the refused one keeps its claim and attempt: no
    unregister, an ERROR naming it, exit 1; the reaper later counts it a failed attempt."""
    claims, gate = tmp_path / "claims", tmp_path / "gate"
    tasks = write_claim_tasks(tmp_path, claims, f"""
        @pgjobs.task
        def undeliverable(payload, job):
            claim_log(job, "start")
            claim_log(job, "end")

        @pgjobs.task
        def late(payload, job):
            claim_log(job, "start")
            while not os.path.exists({str(gate)!r}):
                time.sleep(0.01)
            claim_log(job, "end")

        @pgjobs.task
        async def slow(payload, job):
            claim_log(job, "start")
            await asyncio.sleep(30)
    """)
    plant_delete_error(dbx, "undeliverable", "54000")
    (stuck,) = add(dbx, "undeliverable", max_attempts="3")
    (slow,) = add(dbx, "slow")
    (late,) = add(dbx, "late")
    worker = fleet(tasks, "--concurrency", "4", "--shutdown-timeout", "1").start()
    wait_for(lambda: {stuck, slow, late} <= {c.job_id for c in read_claims(claims)}, 20,
             "all three jobs to start")
    wait_for(lambda: f"finish_jobs refused (job {stuck})" in worker.log_text(), 20,
             "the outcome to be refused")
    # Share-locked while it runs (as an enqueuer's depends_on does): its outcome is busy.
    locker.execute("SELECT 1 FROM app_jobs.jobs WHERE id = %s FOR SHARE", (late,))
    gate.touch()
    wait_for(lambda: "is locked by another session" in worker.log_text(), 20,
             "the busy outcome")
    signalled = worker.signal(signal.SIGTERM)
    time.sleep(0.5)
    locker.rollback()
    code = worker.wait(30)
    log = worker.log_text()
    report("shutdown", exit_after_s=f"{worker.died_at - signalled:.2f}",
           refusals=log.count("SQLSTATE 54000"))

    # Not refunded, still claimed by the worker, which stays registered.
    assert job_row(dbx, stuck)[:2] == (1, worker.worker_id), log
    assert code == 1, log
    assert f"could not deliver the outcome(s) of job(s) {stuck} " in log, log
    assert history(dbx, late) == [("completed", 1)]
    assert job_row(dbx, slow)[:2] == (0, None), "the running job was not released"
    assert dbx.value("SELECT count(*) FROM app_jobs.workers WHERE id = %s",
                     (worker.worker_id,)) == 1
    # Once presumed dead, the reaper rescues it as a failed attempt (attempt counted).
    wait_for(lambda: dbx.rows("SELECT 1 FROM app_jobs.reap_dead_workers(%s)",
                              (f"{DEAD_FOR} seconds",)), 10, "the reaper")
    attempts, locked_by, last_error = job_row(dbx, stuck)
    assert (attempts, locked_by) == (1, None)
    assert "presumed dead" in last_error
    assert_ran_once(claims, [stuck, late, slow])


# -- (f) reconnects keep what is owed -------------------------------------------------------

def test_reconnect_keeps_owed_claims_and_heartbeats_reconnect_alone(dbx, fleet, tmp_path):
    """reconnect: with an outcome owed (refused as transient), the work connection is
    terminated: the worker reconnects without releasing that claim, and delivers it once
    the error is gone; the heartbeat connection, terminated too, comes back on its own."""
    claims = tmp_path / "claims"
    tasks = write_claim_tasks(tmp_path, claims, """
        @pgjobs.task
        def owed(payload, job):
            claim_log(job, "start")
            claim_log(job, "end")
    """)
    plant_delete_error(dbx, "owed", "40001")
    (job,) = add(dbx, "owed")
    worker = fleet(tasks).start()
    wait_for(lambda: f"finish_jobs refused (job {job})" in worker.log_text(), 20,
             "the outcome to be refused")

    def terminate(role: str) -> int:
        return dbx.value("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                         "WHERE application_name = %s", (f"{role} {worker.worker_id}",))

    assert terminate("pgjobs-worker") == 1
    wait_for(lambda: "reconnected" in worker.log_text(), 20, "the reconnect")
    wait_for(lambda: terminate("pgjobs-heartbeat") == 1, 10, "the heartbeat connection")
    beat = dbx.value("SELECT now()")
    wait_for(lambda: dbx.value("SELECT last_heartbeat FROM app_jobs.workers WHERE id = %s",
                               (worker.worker_id,)) > beat, 10, "heartbeats to come back")
    time.sleep(1)  # a few more rounds of the main loop after the reconnect
    assert job_row(dbx, job)[:2] == (1, worker.worker_id), "the owed claim was released"

    dbx.rows("DROP TRIGGER planted_error ON app_jobs.jobs")
    wait_for(lambda: history(dbx, job), 20, "the outcome to be delivered")
    code, log = stopped(worker)

    assert_ran_once(claims, [job])
    assert code == 0, log
    assert history(dbx, job) == [("completed", 1)]
    assert "heartbeat connection lost" in log, log
    assert "lost with the connection" not in log, log
