"""pgjobs-worker liveness end to end: registration and heartbeats, handler results and errors,
timeouts, cancellation, progress, fencing after being reaped while alive, and the
--dead-for / --heartbeat-interval check, each with real worker processes.

Helpers come from workerproc (task modules written to tmp_path, the worker run as a
subprocess). Handlers report what they did by writing files; every wait polls with a
generous deadline, and the only timing assertions are lower bounds or far below the
handlers' 30 s sleeps.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from datetime import timedelta
from pathlib import Path

from workerproc import WORKER, run_burst, start_worker, stop, wait_for, write_tasks

# Fast liveness for the tests: heartbeats every 0.5 s, presumed dead after 2 s.
HB = 0.5
LIVENESS = ("--heartbeat-interval", str(HB), "--dead-for", "2", "--poll-interval", "0.5")


def add_job(sql, identifier: str, payload: object = None, **kw: str) -> int:
    """app_jobs.add_job(identifier, payload, <name> := <SQL expression>...); the job id."""
    extra = "".join(f", {name} := {expr}" for name, expr in kw.items())
    return sql(f"SELECT id FROM app_jobs.add_job(identifier := %s, payload := %s::json{extra})",
               (identifier, json.dumps(payload if payload is not None else {})))[0][0]


def history(sql, job_id: int) -> list[dict]:
    rows = sql("SELECT status, attempts, result, last_error, error_data, worker_id "
               "FROM app_jobs.job_history WHERE job_id = %s ORDER BY id", (job_id,))
    keys = ("status", "attempts", "result", "last_error", "error_data", "worker_id")
    return [dict(zip(keys, row, strict=True)) for row in rows]


def status(sql, job_id: int) -> str | None:
    rows = sql("SELECT status FROM app_jobs.job_status WHERE id = %s", (job_id,))
    assert len(rows) <= 1, rows
    return rows[0][0] if rows else None


def worker_row(sql, pid: int) -> tuple | None:
    rows = sql("SELECT id, host, pid, tasks, heartbeat_interval, last_heartbeat "
               "FROM app_jobs.workers WHERE pid = %s", (pid,))
    return rows[0] if rows else None


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


# -- registration and heartbeats ------------------------------------------------------------

def test_worker_registers_heartbeats_and_unregisters(conninfo, sql, tmp_path, killer):
    """registration: the running worker's app_jobs.workers row (host, pid, tasks,
    heartbeat_interval) has an advancing last_heartbeat; SIGTERM removes it."""
    tasks = write_tasks(tmp_path, """
        @pgjobs.task
        def beta(payload, job):
            pass

        @pgjobs.task("alpha")
        async def first(payload, job):
            pass
    """)
    proc = start_worker(conninfo, tasks, *LIVENESS)
    killer.append(proc)
    row = wait_for(lambda: worker_row(sql, proc.pid), 15, "the worker to register")
    worker_id, host, pid, task_list, interval, beat = row
    assert worker_id.startswith(f"{socket.gethostname()}-{proc.pid}-")
    assert host == socket.gethostname()
    assert pid == proc.pid
    assert task_list == ["alpha", "beta"]
    assert interval == timedelta(seconds=HB)
    assert sql("SELECT count(*) FROM app_jobs.workers")[0][0] == 1

    def advanced():
        now = worker_row(sql, proc.pid)
        return now is not None and now[5] > beat

    wait_for(advanced, 10, "last_heartbeat to advance")
    code, err = stop(proc)
    assert code == 0, err
    assert sql("SELECT count(*) FROM app_jobs.workers") == [(0,)], "row left after SIGTERM"


# -- results ----------------------------------------------------------------------------------

RESULTS = {
    "dict": ("{'a': 1, 'b': [1, 2], 'c': {'d': None}}", {"a": 1, "b": [1, 2], "c": {"d": None}}),
    "list": ("[1, 'two', None, 3.5]", [1, "two", None, 3.5]),
    "int": ("42", 42),
    "float": ("2.5", 2.5),
    "string": ("'hello'", "hello"),
    "none": ("None", None),
    "set": ("{3}", "{3}"),  # not JSON: stored as its repr, a JSON string
    "nan": ("float('nan')", "nan"),  # json.dumps would write NaN, which is not JSON
    "nul": ("'a\\x00b'", "'a\\x00b'"),  # jsonb cannot hold \\u0000: stored as its repr
    "surrogate": ("'f\\udc80'", "'f\\udc80'"),  # a lone surrogate (os.fsdecode) neither
}


def test_return_values_land_in_history_result(conninfo, sql, tmp_path):
    """results: dict, list, number, string and None returns are stored as JSON in
    job_history.result; a set (or NaN, a NUL or a lone surrogate) as its repr text;
    job_status says completed."""
    cases = "\n".join(f"{' ' * 16}{kind!r}: {expr}," for kind, (expr, _) in RESULTS.items())
    tasks = write_tasks(tmp_path, f"""
        @pgjobs.task
        def give(payload, job):
            return {{
{cases}
            }}[payload["kind"]]

        @pgjobs.task
        async def give_async(payload, job):
            return give(payload, job)
    """)
    ids = {(kind, task): add_job(sql, task, {"kind": kind})
           for kind in RESULTS for task in ("give", "give_async")}

    res = run_burst(conninfo, tasks)
    assert res.returncode == 0, res.stderr
    assert f"{len(ids)} completed, 0 failed" in res.stderr
    assert sql("SELECT count(*) FROM app_jobs.jobs") == [(0,)]
    for (kind, task), job_id in ids.items():
        rows = history(sql, job_id)
        assert [r["status"] for r in rows] == ["completed"], (kind, task, rows)
        assert rows[0]["result"] == RESULTS[kind][1], (kind, task)
        assert status(sql, job_id) == "completed"
    set_id = ids["set", "give"]
    assert sql("SELECT jsonb_typeof(result), result #>> '{}' FROM app_jobs.job_history "
               "WHERE job_id = %s", (set_id,)) == [("string", "{3}")]
    assert sql("SELECT result FROM app_jobs.job_status WHERE id = %s",
               (ids["dict", "give_async"],))[0][0] == RESULTS["dict"][1]


# -- errors -----------------------------------------------------------------------------------

def test_raising_handler_error_data_and_status(conninfo, sql, tmp_path):
    """errors: after the last attempt the history's error_data has the exception type and
    traceback and job_status says failed; with attempts left it says retrying; a NUL in
    the message (or a lone surrogate) is escaped."""
    tasks = write_tasks(tmp_path, """
        def deep(n):
            raise ValueError(f"bad thing {n}")

        @pgjobs.task
        def boom(payload, job):
            deep(payload["n"])

        @pgjobs.task
        async def boom_async(payload, job):
            deep(payload["n"])

        @pgjobs.task
        def boom_nul(payload, job):
            raise RuntimeError("nul \\x00 and \\udc80 inside")
    """)
    nul = add_job(sql, "boom_nul", max_attempts="1")
    last = {t: add_job(sql, t, {"n": 1}, max_attempts="1") for t in ("boom", "boom_async")}
    more = {t: add_job(sql, t, {"n": 2}, max_attempts="3") for t in ("boom", "boom_async")}

    res = run_burst(conninfo, tasks)
    assert res.returncode == 0, res.stderr
    for task, job_id in last.items():
        rows = history(sql, job_id)
        assert [r["status"] for r in rows] == ["failed"], (task, rows)
        data = rows[0]["error_data"]
        assert data["type"] == "ValueError"
        assert "Traceback (most recent call last)" in data["traceback"]
        assert "in deep" in data["traceback"]
        assert "ValueError: bad thing 1" in data["traceback"]
        assert rows[0]["last_error"].startswith("ValueError: bad thing 1")
        assert status(sql, job_id) == "failed"
    for task, job_id in more.items():
        assert history(sql, job_id) == [], task
        assert status(sql, job_id) == "retrying"
        attempts, last_error, locked = sql(
            "SELECT attempts, last_error, locked_by IS NOT NULL FROM app_jobs.jobs "
            "WHERE id = %s", (job_id,))[0]
        assert (attempts, locked) == (1, False)
        assert last_error.startswith("ValueError: bad thing 2")
    # PostgreSQL text cannot hold NUL or a lone surrogate: escaped, not failing the batch.
    (row,) = history(sql, nul)
    assert row["status"] == "failed"
    assert row["error_data"]["type"] == "RuntimeError"
    assert row["last_error"].startswith("RuntimeError: nul \\x00 and \\udc80 inside")
    assert "nul \\x00 and \\udc80 inside" in row["error_data"]["traceback"]


# -- timeouts ---------------------------------------------------------------------------------

def test_job_timeout_fails_attempt_and_retries_later(conninfo, sql, tmp_path, killer):
    """timeouts: add_job(timeout := 1 s) on an async handler sleeping 30 s: the attempt fails
    with 'timed out after 1 s', is retried after the backoff, then fails for good."""
    starts = tmp_path / "starts"
    tasks = write_tasks(tmp_path, f"""
        @pgjobs.task
        async def sleepy(payload, job):
            with open({str(starts)!r}, "a") as f:
                f.write(f"{{job.attempts}} {{time.time()}}\\n")
            await asyncio.sleep(30)
    """)
    job_id = add_job(sql, "sleepy", max_attempts="2", timeout="interval '1 second'")
    proc = start_worker(conninfo, tasks, *LIVENESS)
    killer.append(proc)

    wait_for(lambda: sql(
        "SELECT 1 FROM app_jobs.jobs WHERE id = %s AND attempts = 1 AND locked_by IS NULL "
        "AND last_error = 'timed out after 1 s'", (job_id,)), 15, "the first attempt to time out")
    wait_for(lambda: history(sql, job_id), 20, "the retry to time out too")
    code, err = stop(proc)
    assert code == 0, err

    attempts = [ln.split() for ln in lines(starts)]
    assert [a[0] for a in attempts] == ["1", "2"]
    # timeout (1 s) + backoff (e s): the retry waits, it is not immediate
    assert float(attempts[1][1]) - float(attempts[0][1]) > 3
    (row,) = history(sql, job_id)
    assert (row["status"], row["attempts"]) == ("failed", 2)
    assert row["last_error"] == "timed out after 1 s"
    assert row["error_data"] == {"type": "Timeout", "timeout_seconds": 1}
    assert status(sql, job_id) == "failed"
    assert "timed out after 1 s" in err


def test_sync_handler_ignoring_timeout_frees_its_slot(conninfo, sql, tmp_path, killer):
    """timeouts: a sync handler that ignores the stop flag and sleeps 30 s does not hold its
    slot: with --concurrency 1 another job completes while it still sleeps."""
    started, woke, quick = tmp_path / "started", tmp_path / "woke", tmp_path / "quick"
    tasks = write_tasks(tmp_path, f"""
        @pgjobs.task
        def stubborn(payload, job):
            open({str(started)!r}, "w").close()
            time.sleep(30)  # never looks at job.cancelled
            open({str(woke)!r}, "w").close()

        @pgjobs.task
        def quick(payload, job):
            open({str(quick)!r}, "w").close()
            return "done"
    """)
    stubborn_id = add_job(sql, "stubborn", max_attempts="1", priority="-1",
                          timeout="interval '1 second'")
    quick_id = add_job(sql, "quick")
    proc = start_worker(conninfo, tasks, *LIVENESS, "--concurrency", "1",
                        "--cancel-grace", "0.5")
    killer.append(proc)
    wait_for(started.exists, 15, "the stubborn job to start")
    wait_for(quick.exists, 20, "the other job to run on the freed slot")
    wait_for(lambda: history(sql, quick_id), 10, "the other job to complete")
    assert not woke.exists(), "the stubborn handler should still be sleeping"
    assert [r["status"] for r in history(sql, quick_id)] == ["completed"]
    (row,) = history(sql, stubborn_id)
    assert (row["status"], row["last_error"]) == ("failed", "timed out after 1 s")

    code, err = stop(proc)
    assert code == 0, err
    assert not woke.exists()


def test_task_default_timeout_and_worker_default_timeout(conninfo, sql, tmp_path):
    """timeouts: @pgjobs.task(timeout=1) is the task's default, a job's own timeout wins over
    it, and --default-timeout covers tasks without one."""
    tasks = write_tasks(tmp_path, """
        @pgjobs.task(timeout=1)
        async def limited(payload, job):
            await asyncio.sleep(30)

        @pgjobs.task
        async def unlimited(payload, job):
            await asyncio.sleep(30)
    """)
    by_task = add_job(sql, "limited", max_attempts="1")
    by_job = add_job(sql, "limited", max_attempts="1", timeout="interval '0.5 seconds'")
    by_worker = add_job(sql, "unlimited", max_attempts="1")

    res = run_burst(conninfo, tasks, "--default-timeout", "1.5", "--concurrency", "4",
                    timeout=30)
    assert res.returncode == 0, res.stderr
    for job_id, seconds in ((by_task, "1"), (by_job, "0.5"), (by_worker, "1.5")):
        (row,) = history(sql, job_id)
        assert (row["status"], row["last_error"]) == ("failed", f"timed out after {seconds} s")
        assert row["error_data"] == {"type": "Timeout", "timeout_seconds": float(seconds)}


# -- cancellation -----------------------------------------------------------------------------

def test_cancel_running_and_waiting_jobs(conninfo, sql, tmp_path, killer):
    """cancellation: cancel_job on a running async job raises CancelledError in it quickly;
    a sync handler polling job.cancelled stops; both end cancelled and never retried;
    a waiting job cancelled before any worker saw it never runs."""
    marks = tmp_path / "marks"
    tasks = write_tasks(tmp_path, f"""
        def mark(text):
            with open({str(marks)!r}, "a") as f:
                f.write(text + "\\n")

        @pgjobs.task
        async def acancel(payload, job):
            mark(f"start {{job.id}}")
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                mark(f"cancelled {{job.id}}")
                raise
            mark(f"finished {{job.id}}")

        @pgjobs.task
        def scancel(payload, job):
            mark(f"start {{job.id}}")
            deadline = time.monotonic() + 30
            while not job.cancelled and time.monotonic() < deadline:
                time.sleep(0.02)
            mark(f"stopped {{job.id}} {{job.cancelled}}")
            return "stopped early"
    """)
    waiting = add_job(sql, "acancel")
    assert sql("SELECT app_jobs.cancel_job(%s)", (waiting,)) == [("cancelled",)]
    assert sql("SELECT count(*) FROM app_jobs.jobs WHERE id = %s", (waiting,)) == [(0,)]
    async_id = add_job(sql, "acancel")
    sync_id = add_job(sql, "scancel")

    proc = start_worker(conninfo, tasks, *LIVENESS)
    killer.append(proc)
    wait_for(lambda: {f"start {async_id}", f"start {sync_id}"} <= set(lines(marks)), 15,
             "both jobs to start")

    assert sql("SELECT app_jobs.cancel_job(%s)", (async_id,)) == [("cancelling",)]
    assert status(sql, async_id) == "running"
    # Within a heartbeat interval + 1 s (the jobs:cancel notification makes it sooner);
    # doubled for a loaded machine, and still far below the handler's 30 s sleep.
    wait_for(lambda: f"cancelled {async_id}" in lines(marks), 2 * (HB + 1),
             "the async handler to get CancelledError")

    assert sql("SELECT app_jobs.cancel_job(%s)", (sync_id,)) == [("cancelling",)]
    wait_for(lambda: f"stopped {sync_id} True" in lines(marks), 2 * (HB + 1),
             "the sync handler to see job.cancelled")

    for job_id in (async_id, sync_id):
        wait_for(lambda j=job_id: history(sql, j), 10, f"job {job_id} to be recorded")
    time.sleep(3 * HB)  # a few more heartbeats and polls: nothing may run again
    code, err = stop(proc)
    assert code == 0, err

    for job_id in (waiting, async_id, sync_id):
        rows = history(sql, job_id)
        assert [r["status"] for r in rows] == ["cancelled"], (job_id, rows)
        assert status(sql, job_id) == "cancelled"
    assert history(sql, waiting)[0]["worker_id"] is None
    assert history(sql, async_id)[0]["attempts"] == 1
    assert sql("SELECT count(*) FROM app_jobs.jobs") == [(0,)], "a cancelled job stayed"
    starts = [ln for ln in lines(marks) if ln.startswith("start")]
    assert sorted(starts) == sorted([f"start {async_id}", f"start {sync_id}"])
    assert f"finished {async_id}" not in lines(marks)
    assert "2 cancelled" in err


# -- progress ---------------------------------------------------------------------------------

def test_progress_stored_and_notified(conninfo, sql, connect, tmp_path, killer):
    """progress: job.set_progress(50, "half") shows in jobs.progress/stage and job_status
    while running and is announced on jobs:progress; progress 101 raises ValueError (as
    does a bad stage, which would otherwise fail the worker's progress statement)."""
    gate = tmp_path / "gate"
    tasks = write_tasks(tmp_path, f"""
        def try_bad(job):
            # Bad progress or stage raises in the handler; it never reaches the worker.
            errors = []
            for args in ((101, None), (True, "x"), (10, 5), (10, "nul\\x00"),
                         (10, "lone\\udc80")):
                try:
                    job.set_progress(*args)
                except (TypeError, ValueError) as exc:
                    errors.append(f"{{type(exc).__name__}}: {{exc}}")
            return errors

        @pgjobs.task
        def prog(payload, job):
            bad = try_bad(job)
            job.set_progress(50, "half")
            deadline = time.monotonic() + 30
            while not os.path.exists({str(gate)!r}) and time.monotonic() < deadline:
                time.sleep(0.02)
            return {{"bad": bad}}

        @pgjobs.task
        async def prog_async(payload, job):
            bad = try_bad(job)
            job.set_progress(25, "quarter")
            deadline = time.monotonic() + 30
            while not os.path.exists({str(gate)!r}) and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            return {{"bad": bad}}
    """)
    listener = connect()
    listener.execute('LISTEN "jobs:progress"')
    sync_id = add_job(sql, "prog")
    async_id = add_job(sql, "prog_async")
    proc = start_worker(conninfo, tasks, *LIVENESS)
    killer.append(proc)

    expected = {sync_id: (50, "half"), async_id: (25, "quarter")}
    for job_id, (progress, stage) in expected.items():
        wait_for(lambda j=job_id, p=progress, s=stage: sql(
            "SELECT 1 FROM app_jobs.jobs WHERE id = %s AND progress = %s AND stage = %s "
            "AND locked_by IS NOT NULL", (j, p, s)), 15, f"job {job_id}'s progress")
        assert sql("SELECT status, progress, stage FROM app_jobs.job_status WHERE id = %s",
                   (job_id,)) == [("running", progress, stage)]

    notes = {}
    for note in listener.notifies(timeout=10, stop_after=2):
        assert note.channel == "jobs:progress"
        body = json.loads(note.payload)
        notes[body["id"]] = body
    assert notes == {j: {"id": j, "progress": p, "stage": s}
                     for j, (p, s) in expected.items()}

    gate.touch()
    for job_id in expected:
        wait_for(lambda j=job_id: history(sql, j), 15, f"job {job_id} to complete")
        (row,) = history(sql, job_id)
        assert row["status"] == "completed"
        assert row["result"] == {"bad": [
            "ValueError: progress must be an int from 0 to 100, got 101",
            "ValueError: progress must be an int from 0 to 100, got True",
            "TypeError: stage must be a str or None, got int",
            "ValueError: stage cannot contain NUL characters or lone surrogates",
            "ValueError: stage cannot contain NUL characters or lone surrogates",
        ]}
    code, err = stop(proc)
    assert code == 0, err


# -- reaped while alive -----------------------------------------------------------------------

def test_reaped_worker_is_fenced_reregisters_and_keeps_working(conninfo, sql, connect,
                                                                tmp_path, killer):
    """reaped-while-alive: with its workers row deleted and its job rescued (locked_by
    changed), the worker logs 'fenced', drops that outcome, registers again and goes on
    running jobs."""
    marks = tmp_path / "marks"
    tasks = write_tasks(tmp_path, f"""
        def mark(text):
            with open({str(marks)!r}, "a") as f:
                f.write(text + "\\n")

        @pgjobs.task
        async def long(payload, job):
            mark(f"start {{job.id}}")
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                mark(f"stopped {{job.id}}")
                raise

        @pgjobs.task
        def quick(payload, job):
            mark(f"quick {{job.id}}")
            return "still working"
    """)
    long_id = add_job(sql, "long")
    proc = start_worker(conninfo, tasks, *LIVENESS)
    killer.append(proc)
    wait_for(lambda: f"start {long_id}" in lines(marks), 15, "the long job to start")
    worker_id = wait_for(lambda: worker_row(sql, proc.pid), 5, "the registration")[0]
    assert sql("SELECT locked_by FROM app_jobs.jobs WHERE id = %s", (long_id,)) == [
        (worker_id,)]

    # What a rescue by another worker looks like, in one transaction.
    rescuer = connect(autocommit=False)
    with rescuer.transaction():
        rescuer.execute("UPDATE app_jobs.jobs SET locked_by = 'rescuer-1', locked_at = now() "
                        "WHERE id = %s", (long_id,))
        rescuer.execute("DELETE FROM app_jobs.workers WHERE id = %s", (worker_id,))

    wait_for(lambda: f"stopped {long_id}" in lines(marks), 15,
             "the fenced handler to be cancelled")
    wait_for(lambda: sql("SELECT 1 FROM app_jobs.workers WHERE id = %s", (worker_id,)), 15,
             "the worker to register again")
    quick_id = add_job(sql, "quick")
    wait_for(lambda: history(sql, quick_id), 15, "a new job to complete")
    assert history(sql, quick_id)[0]["result"] == "still working"
    # The rescuer's claim is untouched: the fenced outcome was dropped.
    assert sql("SELECT locked_by, attempts FROM app_jobs.jobs WHERE id = %s", (long_id,)) == [
        ("rescuer-1", 1)]
    assert history(sql, long_id) == []
    assert proc.poll() is None, "the worker died"

    code, err = stop(proc)
    assert code == 0, err
    assert "fenced" in err
    assert "presumed dead" in err
    assert "1 fenced" in err


# -- command line -----------------------------------------------------------------------------

def test_dead_for_below_three_heartbeats_is_rejected(conninfo, tmp_path):
    """CLI: --dead-for under 3 x --heartbeat-interval exits 2 with a clear message."""
    tasks = write_tasks(tmp_path, """
        @pgjobs.task
        def anything(payload, job):
            pass
    """)
    res = subprocess.run([WORKER, "--database-url", conninfo, "--tasks", str(tasks),
                          "--heartbeat-interval", "2", "--dead-for", "5"],
                         capture_output=True, text=True, timeout=20)
    assert res.returncode == 2, res.stderr
    err = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(err) == 1, res.stderr
    assert "--dead-for (5 s) must be at least 3 x --heartbeat-interval (2 s)" in err[0]
