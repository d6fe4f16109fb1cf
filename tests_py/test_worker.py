"""pgjobs-worker end to end: burst processing, retries, queue order, SIGTERM, lost connections,
LISTEN wake-up and bad command-line input, each against a real database.

The worker runs as a subprocess of the installed console script; task modules are .py files
written to tmp_path and passed with `--tasks /path/file.py`. Handlers report what they did by
writing files, so the test can watch them from outside.
"""

from __future__ import annotations

import subprocess
import time

import pytest
from workerproc import WORKER, run_burst, start_worker, stop, wait_for, worker_args, write_tasks


def count_jobs(sql) -> int:
    return sql("SELECT count(*) FROM app_jobs.jobs")[0][0]


# -- (1) burst processing, async and sync handlers ------------------------------------------

def test_burst_processes_sql_enqueued_jobs_async_and_sync(conninfo, sql, tmp_path):
    out = tmp_path / "out"
    tasks = write_tasks(tmp_path, f"""
        OUT = {str(out)!r}
        lock = threading.Lock()

        def record(line):
            with lock, open(OUT, "a") as f:
                f.write(line + "\\n")

        @pgjobs.task
        async def async_task(payload, job):
            await asyncio.sleep(0.01)
            record(f"async {{job.id}} {{payload['n']}} {{threading.current_thread().name}}")

        @pgjobs.task("plain_task")
        def sync_handler(payload, job):
            record(f"sync {{job.id}} {{payload['n']}} {{threading.current_thread().name}}")
    """)
    for n in range(5):
        sql("SELECT app_jobs.add_job(identifier := 'async_task', payload := %s::json)",
            (f'{{"n": {n}}}',))
        sql("SELECT app_jobs.add_job(identifier := 'plain_task', payload := %s::json)",
            (f'{{"n": {n}}}',))

    res = run_burst(conninfo, tasks)
    assert res.returncode == 0, res.stderr
    assert count_jobs(sql) == 0
    lines = [ln.split() for ln in out.read_text().splitlines()]
    assert sorted(int(ln[2]) for ln in lines if ln[0] == "async") == list(range(5))
    assert sorted(int(ln[2]) for ln in lines if ln[0] == "sync") == list(range(5))
    # async handlers run on the event loop, plain ones in the handler thread pool
    assert all(ln[3] == "MainThread" for ln in lines if ln[0] == "async")
    assert all(ln[3].startswith("pgjobs-job-") for ln in lines if ln[0] == "sync")
    assert "10 completed, 0 failed" in res.stderr


# -- (2) a raising handler: retried with backoff, then permanently failed -------------------

def test_raising_handler_retried_then_permanently_failed(conninfo, sql, tmp_path):
    tasks = write_tasks(tmp_path, """
        @pgjobs.task
        def boom(payload, job):
            raise RuntimeError(f"kaboom on attempt {job.attempts}")
    """)
    (job_id,) = sql("SELECT id FROM app_jobs.add_job(identifier := 'boom', max_attempts := 2)")[0]

    res = run_burst(conninfo, tasks)
    assert res.returncode == 0, res.stderr
    attempts, last_error, locked_by, later = sql(
        "SELECT attempts, last_error, locked_by, run_at > now() FROM app_jobs.jobs WHERE id = %s",
        (job_id,))[0]
    assert attempts == 1
    assert "kaboom on attempt 1" in last_error
    assert "Traceback" in last_error
    assert locked_by is None
    assert later, "a failed job is retried with a backoff, not at once"

    # the backoff holds it back: another burst finds nothing to do
    res = run_burst(conninfo, tasks)
    assert res.returncode == 0, res.stderr
    assert sql("SELECT attempts FROM app_jobs.jobs WHERE id = %s", (job_id,))[0][0] == 1

    sql("UPDATE app_jobs.jobs SET run_at = now() WHERE id = %s", (job_id,))
    res = run_burst(conninfo, tasks)
    assert res.returncode == 0, res.stderr
    attempts, max_attempts, last_error, available = sql(
        "SELECT attempts, max_attempts, last_error, is_available FROM app_jobs.jobs "
        "WHERE id = %s", (job_id,))[0]
    assert (attempts, max_attempts) == (2, 2)
    assert "kaboom on attempt 2" in last_error
    assert not available, "permanently failed: kept in the table, never claimed again"
    assert "permanently" in res.stderr


# -- (3) named queues keep their order under concurrency ------------------------------------

def test_named_queue_order_kept_with_concurrency(conninfo, sql, tmp_path):
    out = tmp_path / "order"
    tasks = write_tasks(tmp_path, f"""
        import random
        lock = threading.Lock()

        @pgjobs.task
        def ordered(payload, job):
            time.sleep(random.random() * 0.01)
            with lock, open({str(out)!r}, "a") as f:
                f.write(f"{{job.queue_name}} {{job.id}}\\n")
    """)
    expected: dict[str, list[int]] = {}
    for i in range(60):
        queue = f"q{i % 3}"
        (job_id,) = sql("SELECT id FROM app_jobs.add_job(identifier := 'ordered', "
                        "queue_name := %s)", (queue,))[0]
        expected.setdefault(queue, []).append(job_id)
    for _ in range(10):  # unqueued jobs run alongside
        sql("SELECT app_jobs.add_job(identifier := 'ordered')")

    res = run_burst(conninfo, tasks, "--concurrency", "4")
    assert res.returncode == 0, res.stderr
    assert count_jobs(sql) == 0
    seen: dict[str, list[int]] = {}
    for line in out.read_text().splitlines():
        queue, job_id = line.split()
        seen.setdefault(queue, []).append(int(job_id))
    assert len(seen.pop("None")) == 10
    assert seen == expected


# -- (4) SIGTERM during a long job -----------------------------------------------------------

def test_sigterm_lets_running_job_finish(conninfo, sql, tmp_path, killer):
    started, done = tmp_path / "started", tmp_path / "done"
    tasks = write_tasks(tmp_path, f"""
        @pgjobs.task
        def slow(payload, job):
            open({str(started)!r}, "w").close()
            time.sleep(2)
            open({str(done)!r}, "w").close()
    """)
    sql("SELECT app_jobs.add_job(identifier := 'slow')")
    proc = start_worker(conninfo, tasks, "--shutdown-timeout", "10")
    killer.append(proc)
    wait_for(started.exists, 10, "the job to start")
    t0 = time.monotonic()
    code, err = stop(proc)
    assert code == 0, err
    assert done.exists(), "the running job was not allowed to finish"
    assert 1 < time.monotonic() - t0 < 8
    assert count_jobs(sql) == 0, "the finished job was not completed"


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_sigterm_releases_job_after_shutdown_timeout(conninfo, sql, tmp_path, killer, kind):
    started = tmp_path / "started"
    prefix = "async def" if kind == "async" else "def"
    sleep = "await asyncio.sleep(30)" if kind == "async" else "time.sleep(30)"
    tasks = write_tasks(tmp_path, f"""
        @pgjobs.task
        {prefix} very_slow(payload, job):
            open({str(started)!r}, "w").close()
            {sleep}
    """)
    (job_id,) = sql("SELECT id FROM app_jobs.add_job(identifier := 'very_slow')")[0]
    proc = start_worker(conninfo, tasks, "--shutdown-timeout", "1")
    killer.append(proc)
    wait_for(started.exists, 10, "the job to start")
    assert sql("SELECT attempts, locked_by IS NOT NULL FROM app_jobs.jobs WHERE id = %s",
               (job_id,))[0] == (1, True)
    t0 = time.monotonic()
    code, err = stop(proc, timeout=10)
    assert code == 0, err
    assert time.monotonic() - t0 < 4, "shutdown took far longer than --shutdown-timeout"
    assert sql("SELECT locked_by, locked_at, attempts FROM app_jobs.jobs WHERE id = %s",
               (job_id,)) == [(None, None, 0)]
    assert "1 released" in err


# -- (5) killed connections mid-run lose no job ----------------------------------------------

def test_terminated_connections_lose_no_job(conninfo, sql, tmp_path, killer):
    tasks = write_tasks(tmp_path, """
        @pgjobs.task
        def short(payload, job):
            time.sleep(0.005)
    """)
    sql("SELECT app_jobs.add_job(identifier := 'short', payload := json_build_object('n', n)) "
        "FROM generate_series(1, 200) AS n")
    proc = start_worker(conninfo, tasks, "--concurrency", "4", "--batch-size", "2")
    killer.append(proc)

    kill = ("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name LIKE 'pgjobs-%%'")
    killed = 0
    for threshold in (170, 110, 50):
        wait_for(lambda t=threshold: count_jobs(sql) <= t, 20, f"{threshold} jobs left")
        killed += sql(kill)[0][0]
    assert killed >= 2, "no worker connection was terminated"

    wait_for(lambda: count_jobs(sql) == 0, 30, "every job to complete")
    assert proc.poll() is None, "the worker died when its connections were terminated"
    code, err = stop(proc)
    assert code == 0, err
    assert "reconnected" in err
    assert count_jobs(sql) == 0


# -- (6) LISTEN wakes an idle worker long before its poll interval ---------------------------

def test_idle_worker_wakes_on_notify(conninfo, sql, tmp_path, killer):
    ran = tmp_path / "ran"
    tasks = write_tasks(tmp_path, f"""
        @pgjobs.task
        def wake(payload, job):
            open({str(ran)!r}, "w").close()
    """)
    proc = start_worker(conninfo, tasks, "--poll-interval", "30")
    killer.append(proc)
    # The work and LISTEN sessions idle (the heartbeat and delivery sessions have their
    # own rhythm: counting them made this wait for a moment when one of them was busy).
    wait_for(lambda: sql(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND state = 'idle' AND (application_name LIKE 'pgjobs-listen %%' "
        "     OR application_name LIKE 'pgjobs-worker %%' AND query LIKE '%%app_jobs.%%')"
        )[0][0] == 2,
        10, "the worker to be idle")
    time.sleep(0.3)  # well into its 30 s wait

    t0 = time.monotonic()
    sql("SELECT app_jobs.add_job(identifier := 'wake')")
    wait_for(ran.exists, 2, "the handler to run after the notification")
    assert time.monotonic() - t0 < 2
    code, err = stop(proc)
    assert code == 0, err


# -- (7) bad command-line input ---------------------------------------------------------------

def stderr_lines(res: subprocess.CompletedProcess) -> list[str]:
    return [ln for ln in res.stderr.splitlines() if ln.strip()]


def test_unknown_task_module_is_one_clear_line(conninfo):
    res = subprocess.run([WORKER, "--database-url", conninfo, "--tasks",
                          "no_such_pgjobs_module_xyz", "--burst"],
                         capture_output=True, text=True, timeout=20)
    assert res.returncode != 0
    lines = stderr_lines(res)
    assert len(lines) == 1, res.stderr
    assert "no_such_pgjobs_module_xyz" in lines[0]


def test_missing_task_file_is_one_clear_line(conninfo, tmp_path):
    res = subprocess.run([WORKER, "--database-url", conninfo, "--tasks",
                          str(tmp_path / "missing.py"), "--burst"],
                         capture_output=True, text=True, timeout=20)
    assert res.returncode != 0
    assert len(stderr_lines(res)) == 1, res.stderr
    assert "missing.py" in res.stderr


def test_bad_database_url_is_one_clear_line(tmp_path):
    tasks = write_tasks(tmp_path, """
        @pgjobs.task
        def anything(payload, job):
            pass
    """)
    res = subprocess.run(worker_args("postgresql://nobody@127.0.0.1:1/x", tasks, "--burst"),
                         capture_output=True, text=True, timeout=20)
    assert res.returncode != 0
    lines = stderr_lines(res)
    assert len(lines) == 1, res.stderr
    assert "cannot connect" in lines[0]
    assert "127.0.0.1" in lines[0]


# -- scheduler tick ---------------------------------------------------------------------------

def test_worker_ticks_the_scheduler(conninfo, sql, tmp_path, killer):
    ran = tmp_path / "ran"
    tasks = write_tasks(tmp_path, f"""
        @pgjobs.task
        def every_minute(payload, job):
            open({str(ran)!r}, "a").write(str(job.id) + "\\n")
    """)
    sql("SELECT app_jobs.add_scheduled_job(identifier := 'every_minute', "
        "schedule_info := '{\"rule\": \"* * * * *\"}')")
    # As if the slot of a minute ago had just come due.
    sql("UPDATE app_jobs.scheduled_jobs SET next_run_at = date_trunc('minute', now())")
    proc = start_worker(conninfo, tasks, "--poll-interval", "30", "--schedule-interval", "0.2")
    killer.append(proc)
    wait_for(ran.exists, 5, "the scheduled job to be enqueued and run")
    code, err = stop(proc)
    assert code == 0, err
    assert len(ran.read_text().split()) == 1
    next_run = sql("SELECT next_run_at > now() FROM app_jobs.scheduled_jobs")[0][0]
    assert next_run
