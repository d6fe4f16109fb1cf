"""Observability end to end: the worker's /metrics endpoint (--metrics-port) scraped over HTTP
while it works, several workers' registries side by side, a taken port, the worker sessions'
statement and idle-in-transaction timeouts (read back and enforced), app_jobs.metrics()
parsed by prometheus_client's own parser with a hostile task name, and `pgjobs status`
with workers and `--watch`.

Worker helpers come from workerproc (task modules written to tmp_path, the worker run as a
subprocess of the installed console script).
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

import psycopg
import psycopg.rows
import pytest
from pgjobs.worker import Worker, WorkerOptions
from pooler import free_port
from prometheus_client.parser import text_string_to_metric_families
from test_admin import PGJOBS, pgjobs
from workerproc import start_worker, stop, wait_for, worker_args, write_tasks

LIVENESS = ("--heartbeat-interval", "0.5", "--dead-for", "2", "--poll-interval", "0.5")


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """GET /metrics: {(sample name, sorted labels): value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def scrape_when_up(port: int, proc: subprocess.Popen) -> dict[tuple[str, tuple], float]:
    def attempt():
        assert proc.poll() is None, proc.communicate()[1]
        try:
            return scrape(port)
        except (urllib.error.URLError, ConnectionError):
            return None

    return wait_for(attempt, 15, "the metrics endpoint")


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


# -- the worker's /metrics ----------------------------------------------------------------

def test_worker_metrics_endpoint_counts_jobs(conninfo, sql, tmp_path, killer):
    tasks = write_tasks(tmp_path, """
        @pgjobs.task
        async def fine(payload, job):
            await asyncio.sleep(0.01)

        @pgjobs.task
        def broken(payload, job):
            raise RuntimeError("no")

        @pgjobs.task
        async def slow(payload, job):
            await asyncio.sleep(30)
    """)
    port = free_port()
    proc = start_worker(conninfo, tasks, "--metrics-port", str(port), *LIVENESS)
    killer.append(proc)

    before = scrape_when_up(port, proc)
    assert value(before, "pgjobs_worker_jobs_started_total", task="fine") == 0
    assert value(before, "pgjobs_worker_running") == 0
    wait_for(lambda: value(scrape(port), "pgjobs_worker_connected") == 1, 15, "connected 1")

    sql("SELECT app_jobs.add_job(identifier := 'fine') FROM generate_series(1, 7)")
    sql("SELECT app_jobs.add_job(identifier := 'broken', max_attempts := 1) "
        "FROM generate_series(1, 3)")
    wait_for(lambda: sql("SELECT count(*) FROM app_jobs.jobs WHERE attempts = 0")[0][0] == 0
             and value(scrape(port), "pgjobs_worker_jobs_failed_total", task="broken") == 3
             and value(scrape(port), "pgjobs_worker_jobs_completed_total", task="fine") == 7,
             20, "7 completed and 3 failed jobs")
    (slow_id,) = sql("SELECT id FROM app_jobs.add_job(identifier := 'slow')")[0]
    wait_for(lambda: value(scrape(port), "pgjobs_worker_running") == 1, 15, "one running job")

    after = scrape(port)
    assert value(after, "pgjobs_worker_jobs_started_total", task="fine") == 7
    assert value(after, "pgjobs_worker_jobs_started_total", task="broken") == 3
    assert value(after, "pgjobs_worker_jobs_started_total", task="slow") == 1
    assert value(after, "pgjobs_worker_jobs_completed_total", task="fine") == 7
    assert value(after, "pgjobs_worker_jobs_failed_total", task="fine") == 0
    assert value(after, "pgjobs_worker_jobs_failed_total", task="broken") == 3
    assert value(after, "pgjobs_worker_jobs_completed_total", task="broken") == 0
    # One duration per attempt that ended: the completed ones for fine, the failed ones
    # for broken; none yet for the running slow job.
    assert value(after, "pgjobs_worker_job_duration_seconds_count", task="fine") == 7
    assert value(after, "pgjobs_worker_job_duration_seconds_count", task="broken") == 3
    assert value(after, "pgjobs_worker_job_duration_seconds_count", task="slow") == 0
    assert value(after, "pgjobs_worker_job_duration_seconds_sum", task="fine") >= 7 * 0.01
    assert value(after, "pgjobs_worker_job_duration_seconds_bucket",
                 task="fine", le="+Inf") == 7
    assert value(after, "pgjobs_worker_claim_seconds_count") >= 3
    assert value(after, "pgjobs_worker_claim_seconds_sum") > 0
    assert value(after, "pgjobs_worker_running") == 1
    assert value(after, "pgjobs_worker_connected") == 1
    assert ("pgjobs_worker_notification_queue_usage", ()) in after
    assert value(after, "pgjobs_worker_jobs_cancelled_total") == 0
    assert value(after, "pgjobs_worker_jobs_fenced_total") == 0

    # A cancel moves the cancelled counter (no task label) and adds one duration.
    assert sql("SELECT app_jobs.cancel_job(%s)", (slow_id,))[0][0] == "cancelling"
    wait_for(lambda: value(scrape(port), "pgjobs_worker_jobs_cancelled_total") == 1, 15,
             "the cancel counted")
    last = scrape(port)
    assert value(last, "pgjobs_worker_running") == 0
    assert value(last, "pgjobs_worker_job_duration_seconds_count", task="slow") == 1

    code, err = stop(proc)
    assert code == 0, err
    assert f"serving metrics at http://127.0.0.1:{port}/metrics" in err
    # The endpoint goes away with the worker.
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        scrape(port)


def test_fenced_attempts_are_counted(conninfo, sql, tmp_path, killer):
    tasks = write_tasks(tmp_path, """
        @pgjobs.task
        async def held(payload, job):
            await asyncio.sleep(30)
    """)
    port = free_port()
    proc = start_worker(conninfo, tasks, "--metrics-port", str(port), *LIVENESS)
    killer.append(proc)
    scrape_when_up(port, proc)
    (job_id,) = sql("SELECT id FROM app_jobs.add_job(identifier := 'held')")[0]
    wait_for(lambda: value(scrape(port), "pgjobs_worker_running") == 1, 15, "the job running")
    # Take the claim away (as a rescue would): the next heartbeat fences the attempt.
    sql("UPDATE app_jobs.jobs SET locked_by = 'someone-else' WHERE id = %s", (job_id,))
    wait_for(lambda: value(scrape(port), "pgjobs_worker_jobs_fenced_total") == 1, 15,
             "the fenced attempt counted")
    samples = scrape(port)
    assert value(samples, "pgjobs_worker_running") == 0
    assert value(samples, "pgjobs_worker_job_duration_seconds_count", task="held") == 0
    assert value(samples, "pgjobs_worker_jobs_failed_total", task="held") == 0
    stop(proc)


def test_no_metrics_port_no_endpoint(conninfo, tmp_path, killer):
    tasks = write_tasks(tmp_path, """
        @pgjobs.task
        def t(payload, job):
            pass
    """)
    proc = start_worker(conninfo, tasks, *LIVENESS)
    killer.append(proc)
    time.sleep(1.5)
    code, err = stop(proc)
    assert code == 0, err
    assert "metrics" not in err


def test_metrics_port_taken_is_one_line(conninfo, tmp_path):
    tasks = write_tasks(tmp_path, """
        @pgjobs.task
        def t(payload, job):
            pass
    """)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        res = subprocess.run(
            worker_args(conninfo, tasks, "--metrics-port", str(port), "--burst"),
            capture_output=True, text=True, timeout=30,
        )
    assert res.returncode == 1
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert f"cannot serve metrics on 127.0.0.1:{port}" in res.stderr


def test_bad_metrics_port_is_refused(conninfo, tmp_path):
    tasks = write_tasks(tmp_path, """
        @pgjobs.task
        def t(payload, job):
            pass
    """)
    res = subprocess.run(worker_args(conninfo, tasks, "--metrics-port", "70000", "--burst"),
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 2
    assert "must be a TCP port" in res.stderr


def test_two_in_process_workers_serve_their_own_metrics(conninfo, sql):
    """Two Worker objects in one process: each its own registry and port."""
    ports = [free_port(), free_port()]
    sql("SELECT app_jobs.add_job(identifier := 'inproc') FROM generate_series(1, 6)")

    async def main():
        workers = [
            Worker(conninfo, {"inproc": lambda payload, job: None}, WorkerOptions(
                burst=True, concurrency=1, batch_size=1, metrics_port=port,
                schedule_interval=0, heartbeat_interval=0.5, dead_for=2,
            ))
            for port in ports
        ]
        await asyncio.gather(*(w.run() for w in workers))
        return workers

    workers = asyncio.run(main())
    done = [int(value(
        {(s.name, tuple(sorted(s.labels.items()))): s.value
         for f in text_string_to_metric_families(w.metrics.text()) for s in f.samples},
        "pgjobs_worker_jobs_completed_total", task="inproc")) for w in workers]
    assert sum(done) == 6, done
    assert sql("SELECT count(*) FROM app_jobs.jobs")[0][0] == 0


# -- session timeouts ------------------------------------------------------------------------

async def session_settings(conn: psycopg.AsyncConnection) -> dict[str, str]:
    """The timeouts in milliseconds one statement sees, whatever the row factory."""
    cur = conn.cursor(row_factory=psycopg.rows.tuple_row)
    await cur.execute(
        "SELECT name, setting FROM pg_settings WHERE name IN ('statement_timeout', "
        "'idle_in_transaction_session_timeout', 'idle_session_timeout', 'lock_timeout')")
    return dict(await cur.fetchall())


@pytest.mark.parametrize("statement, idle, lock, expect", [
    (None, None, None, ("60000", "60000", "5000")),
    (7.5, 2, 0.25, ("7500", "2000", "250")),
    (0, 0, 0, ("0", "0", "0")),
])
def test_worker_statements_get_timeouts_for_their_own_transaction(
        conninfo, statement, idle, lock, expect):
    # Each statement of the work session runs under the worker's limits, set for its own
    # transaction: the session itself keeps the server's defaults (a pooler may hand it
    # to other clients). The LISTEN session (a session of its own, proved by the probe)
    # gets session settings: no statement or idle-session limit.
    kw = {}
    if statement is not None:
        kw = {"statement_timeout": statement, "idle_in_transaction_timeout": idle,
              "lock_timeout": lock}

    async def main():
        w = Worker(conninfo, {"t": lambda payload, job: None}, WorkerOptions(**kw))
        c = w.connector
        await c.connect()
        try:
            # The listener holds its connection while it waits for notifications.
            c.listener.cancel()
            await asyncio.gather(c.listener, return_exceptions=True)
            statement = await session_settings(c.work)
            async with c.work.transaction():
                session = await session_settings(c.work)
            return statement, session, await session_settings(c.listen_conn), w.wakeup
        finally:
            await w.jobs.unregister()
            await c.close()

    with psycopg.connect(conninfo) as plain:
        defaults = server_defaults(plain)
    statement, session, listen, wakeup = asyncio.run(main())
    assert (statement["statement_timeout"], statement["idle_in_transaction_session_timeout"],
            statement["lock_timeout"]) == expect
    assert session == defaults
    assert wakeup == "listen"
    # The LISTEN connection idles by design: only the idle-in-transaction limit.
    assert listen["statement_timeout"] == "0"
    assert listen["idle_in_transaction_session_timeout"] == expect[1]
    assert listen.get("idle_session_timeout", "0") == "0"


def server_defaults(conn: psycopg.Connection) -> dict[str, str]:
    """The same timeouts in a fresh session of the test's own."""
    return dict(conn.execute(
        "SELECT name, setting FROM pg_settings WHERE name IN ('statement_timeout', "
        "'idle_in_transaction_session_timeout', 'idle_session_timeout', 'lock_timeout')"
    ).fetchall())


def test_statement_timeout_is_enforced_and_the_worker_recovers(
        conninfo, sql, connect, tmp_path, killer):
    out = tmp_path / "out"
    tasks = write_tasks(tmp_path, f"""
        @pgjobs.task
        def mark(payload, job):
            open({str(out)!r}, "a").write(f"{{job.id}}\\n")
    """)
    proc = start_worker(conninfo, tasks, "--statement-timeout", "0.3",
                        "--poll-interval", "0.1", "--heartbeat-interval", "0.5",
                        "--dead-for", "5")
    killer.append(proc)
    wait_for(lambda: sql("SELECT count(*) FROM app_jobs.workers")[0][0] == 1, 15,
             "the worker registered")
    # Hold the jobs table for 2 s: every claim the worker tries meanwhile times out.
    locker = connect(autocommit=False)
    locker.execute("LOCK TABLE app_jobs.jobs IN ACCESS EXCLUSIVE MODE")
    time.sleep(2)
    locker.rollback()
    (job_id,) = sql("SELECT id FROM app_jobs.add_job(identifier := 'mark')")[0]
    try:
        wait_for(lambda: out.exists() and out.read_text().split() == [str(job_id)], 15,
                 "the job run once the lock is gone")
    finally:
        code, err = stop(proc)
    assert code == 0, err
    assert "canceling statement due to statement timeout" in err, err
    assert "1 completed" in err


# -- app_jobs.metrics() ------------------------------------------------------------------------

def test_sql_metrics_parse_with_a_hostile_task_name(sql):
    hostile = 'ev"il\\ta\nsk} 1\n# TYPE'
    # Straight into the table: add_job refuses control characters in names, but rows
    # from before that check (or written directly) may hold them.
    sql("INSERT INTO app_jobs.jobs (task_identifier, queue_name) VALUES (%s, %s)",
        (hostile, 'q"\n\\'))
    sql("SELECT app_jobs.add_job(identifier := 'plain', run_at := now() - interval '1 minute')")
    sql("SELECT app_jobs.register_worker('w1')")
    (text,) = sql("SELECT app_jobs.metrics()")[0]
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert set(families) == {
        "pgjobs_jobs", "pgjobs_oldest_waiting_seconds", "pgjobs_finished_last_5m",
        "pgjobs_history_enabled", "pgjobs_workers", "pgjobs_workers_stale",
        "pgjobs_notification_queue_usage", "pgjobs_notifications_skipped",
        "pgjobs_schedules_failing",
    }
    assert all(f.documentation for f in families.values())
    assert {f.name for f in families.values() if f.type != "gauge"} == {
        "pgjobs_notifications_skipped"
    }
    assert families["pgjobs_notifications_skipped"].type == "counter"
    assert families["pgjobs_notifications_skipped"].samples[0].value == 0
    assert families["pgjobs_schedules_failing"].samples[0].value == 0
    jobs = {(s.labels["task"], s.labels["queue"], s.labels["state"]): s.value
            for s in families["pgjobs_jobs"].samples}
    assert jobs[(hostile, 'q"\n\\', "waiting")] == 1
    assert jobs[("plain", "", "waiting")] == 1
    assert jobs[("plain", "", "running")] == 0
    oldest = {(s.labels["task"], s.labels["queue"]): s.value
              for s in families["pgjobs_oldest_waiting_seconds"].samples}
    assert oldest[("plain", "")] >= 60
    assert families["pgjobs_workers"].samples[0].value == 1
    assert families["pgjobs_workers_stale"].samples[0].value == 0
    assert 0 <= families["pgjobs_notification_queue_usage"].samples[0].value < 1


# -- pgjobs status ------------------------------------------------------------------------------

def test_status_shows_stats_workers_and_notification_queue(db, sql):
    sql("SELECT app_jobs.add_job(identifier := 'dep_parent')")
    sql("SELECT app_jobs.register_worker('worker-fresh', 'host-a', 4242)")
    sql("SELECT app_jobs.register_worker('worker-silent', 'host-b', 99, NULL, "
        "interval '1 second')")
    sql("UPDATE app_jobs.workers SET last_heartbeat = now() - interval '10 seconds' "
        "WHERE id = 'worker-silent'")
    res = pgjobs(db.info.dsn, "status")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].split()[:2] == ["task", "queue"]
    assert lines[0].split()[-3:] == ["blocked", "completed/min", "failed/min"]
    assert "workers: 2 (1 stale)" in lines
    fresh = next(ln for ln in lines if ln.startswith("worker-fresh")).split()
    assert fresh[1:3] == ["host-a", "4242"]
    silent = next(ln for ln in lines if ln.startswith("worker-silent"))
    assert "(stale)" in silent and "ago" in silent
    assert any(ln.startswith("notification queue usage: ") and ln.endswith("%")
               for ln in lines)


def test_status_without_jobs_or_workers(db):
    res = pgjobs(db.info.dsn, "status")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[0] == "no jobs"
    assert "workers: none registered" in res.stdout


def test_status_watch_refreshes_until_interrupted(db, sql, killer):
    sql("SELECT app_jobs.add_job(identifier := 'watched')")
    proc = subprocess.Popen([PGJOBS, "--database-url", db.info.dsn, "status", "--watch", "0.2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killer.append(proc)
    time.sleep(1.5)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert err == ""
    refreshes = out.count("pgjobs status at ")
    assert refreshes >= 2, out
    assert out.count("\nwatched ") == refreshes
    assert out.count("notification queue usage: ") == refreshes
    # Not a terminal: no screen clearing, just one refresh after another.
    assert "\x1b[" not in out


def test_status_watch_terminated(db, killer):
    proc = subprocess.Popen([PGJOBS, "--database-url", db.info.dsn, "status", "--watch", "0.2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killer.append(proc)
    time.sleep(1.0)
    proc.terminate()
    out, _ = proc.communicate(timeout=10)
    # Each refresh is flushed as it is printed, so a kill loses none of them.
    assert out.count("pgjobs status at ") >= 2, out


def test_status_watch_bad_interval(db):
    for bad in ("0", "-1", "soon"):
        res = pgjobs(db.info.dsn, "status", "--watch", bad)
        assert res.returncode == 2, (bad, res.stderr)
