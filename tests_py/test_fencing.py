"""Fencing by attempt: a claim whose `attempts` changed under a running handler is no longer
the worker's, whichever way the worker learns it (finish_jobs answering 'fenced', or its
heartbeat seeing another attempt), and an outcome sent without its attempt is refused.

Each worker test starts a real pgjobs-worker (JSON logs on stderr, read as they come),
lets a handler start, bumps the job's attempts as the superuser, and then checks that the
handler's outcome changed nothing: the job's row is exactly as the bump left it, there is
no history row, and the worker logged a job_fenced event for that job.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import psycopg
import pytest
from psycopg.types.json import Jsonb
from workerproc import start_worker, stop, wait_for, write_tasks

# Heartbeats so rare that none happens while the handler runs: only finish_jobs can fence.
NO_HEARTBEAT = ("--heartbeat-interval", "60", "--dead-for", "180", "--poll-interval", "0.2")
# Heartbeats every 0.3 s: the worker sees the new attempt while the handler still runs.
FAST_HEARTBEAT = ("--heartbeat-interval", "0.3", "--dead-for", "2", "--poll-interval", "0.2")


class Log:
    """The worker's stderr, one parsed JSON line at a time, collected by a thread."""

    def __init__(self, stream) -> None:
        self.entries: list[dict] = []
        self.raw: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            self.raw.append(line)
            try:
                self.entries.append(json.loads(line))
            except ValueError:
                pass

    def events(self, event: str, job_id: int) -> list[dict]:
        return [e for e in list(self.entries)
                if e.get("event") == event and e.get("job_id") == job_id]

    def text(self) -> str:
        return "".join(self.raw)

    def join(self, timeout: float = 10) -> None:
        """Wait until the stream ended (the worker exited) and every line was read."""
        self._thread.join(timeout)


@pytest.fixture
def worker(db, tmp_path):
    """Start pgjobs-worker with the given task module and options; stopped at teardown."""
    started: list = []

    def _start(tasks: Path, *options: str):
        proc = start_worker(db.info.dsn, tasks, "--log-format", "json", *options)
        # stop() reads stderr with communicate(); the Log thread owns it instead.
        log = Log(proc.stderr)
        proc.stderr = None
        started.append(proc)
        return proc, log

    yield _start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def job_row(sql, job_id: int) -> dict | None:
    rows = sql("SELECT to_jsonb(j) FROM app_jobs.jobs AS j WHERE j.id = %s", (job_id,))
    return rows[0][0] if rows else None


def history(sql, job_id: int) -> list:
    return sql("SELECT status, attempts FROM app_jobs.job_history WHERE job_id = %s", (job_id,))


def marks(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def settle_first_heartbeat(sql, pid: int) -> None:
    """Wait until the worker registered and, if it beats at once on start, until that
    first heartbeat is done: with NO_HEARTBEAT the next one is a minute away, so the
    attempt bumped after this can only be noticed by finish_jobs."""
    wait_for(lambda: sql("SELECT 1 FROM app_jobs.workers WHERE pid = %s", (pid,)), 20,
             "the worker to register")
    try:
        wait_for(lambda: sql("SELECT 1 FROM app_jobs.workers"
                             " WHERE pid = %s AND last_heartbeat > started_at", (pid,)),
                 5, "a first heartbeat")
    except AssertionError:
        pass  # a worker that does not beat on start: the first beat is a minute away


# The handler waits for the test's go-ahead (a file), then ends the way the case says.
HANDLER_ENDINGS = {
    "completes (sync)": ("def", "return {'done': True}"),
    "raises (sync)": ("def", "raise RuntimeError('boom')"),
    "completes (async)": ("async def", "return {'done': True}"),
    "raises (async)": ("async def", "raise RuntimeError('boom')"),
}


@pytest.mark.parametrize("ending", HANDLER_ENDINGS.values(), ids=HANDLER_ENDINGS.keys())
def test_outcome_of_a_changed_attempt_is_fenced_by_finish_jobs(sql, worker, tmp_path, ending):
    kind, last_line = ending
    marks_file, go = tmp_path / "marks", tmp_path / "go"
    wait = ("while not os.path.exists(GO): await asyncio.sleep(0.02)" if kind == "async def"
            else "while not os.path.exists(GO): time.sleep(0.02)")
    tasks = write_tasks(tmp_path, f"""
        MARKS, GO = {str(marks_file)!r}, {str(go)!r}

        def mark(text):
            with open(MARKS, "a") as f:
                f.write(text + "\\n")

        @pgjobs.task
        {kind} fenced_job(payload, job):
            mark(f"start {{job.id}} {{job.attempts}}")
            {wait}
            mark(f"end {{job.id}}")
            {last_line}
    """)
    proc, log = worker(tasks, *NO_HEARTBEAT)
    settle_first_heartbeat(sql, proc.pid)
    job_id = sql("SELECT id FROM app_jobs.add_job(identifier := 'fenced_job')")[0][0]
    wait_for(lambda: f"start {job_id} 1" in marks(marks_file), 20, "the handler to start")

    # Another claim now owns the job: its attempts moved on under the running handler.
    sql("UPDATE app_jobs.jobs SET attempts = attempts + 1 WHERE id = %s", (job_id,))
    bumped = job_row(sql, job_id)
    assert bumped["attempts"] == 2 and bumped["locked_by"] is not None

    go.touch()
    wait_for(lambda: f"end {job_id}" in marks(marks_file), 20, "the handler to end")
    wait_for(lambda: log.events("job_fenced", job_id) or job_row(sql, job_id) != bumped
             or history(sql, job_id), 20, "the outcome to be delivered")

    assert job_row(sql, job_id) == bumped, "the stale outcome changed the job"
    assert history(sql, job_id) == [], "the stale outcome was recorded"
    fenced = log.events("job_fenced", job_id)
    assert fenced, log.text()
    assert proc.poll() is None, log.text()
    code, _ = stop(proc)
    log.join()
    assert code == 0, log.text()
    assert "0 completed, 0 failed, 0 cancelled, 1 fenced" in log.text(), log.text()


def test_heartbeat_stops_a_handler_whose_attempt_changed(sql, worker, tmp_path):
    """The heartbeat reports attempt 2 for a job the worker runs as attempt 1: the handler
    is stopped and its outcome dropped, long before it would have ended by itself."""
    marks_file = tmp_path / "marks"
    tasks = write_tasks(tmp_path, f"""
        def mark(text):
            with open({str(marks_file)!r}, "a") as f:
                f.write(text + "\\n")

        @pgjobs.task
        async def long_job(payload, job):
            mark(f"start {{job.id}}")
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                mark(f"stopped {{job.id}}")
                raise
            mark(f"end {{job.id}}")
    """)
    job_id = sql("SELECT id FROM app_jobs.add_job(identifier := 'long_job')")[0][0]
    proc, log = worker(tasks, *FAST_HEARTBEAT)
    wait_for(lambda: f"start {job_id}" in marks(marks_file), 20, "the handler to start")

    sql("UPDATE app_jobs.jobs SET attempts = attempts + 1 WHERE id = %s", (job_id,))
    bumped = job_row(sql, job_id)

    wait_for(lambda: f"stopped {job_id}" in marks(marks_file), 15,
             "the heartbeat to stop the fenced handler")
    wait_for(lambda: log.events("job_fenced", job_id), 10, "the job_fenced log line")
    assert f"end {job_id}" not in marks(marks_file)
    assert job_row(sql, job_id) == bumped, "the fenced handler's outcome changed the job"
    assert history(sql, job_id) == []
    assert proc.poll() is None, log.text()
    code, _ = stop(proc)
    assert code == 0, log.text()


# -- finish_jobs refuses an outcome without its attempt ----------------------------------------

WITHOUT_ATTEMPT = {
    "attempt missing": {"outcome": "completed", "result": 1},
    "attempt null": {"attempt": None, "outcome": "completed"},
    "attempt missing, failed": {"outcome": "failed", "error": "boom"},
    "attempt missing, cancelled": {"outcome": "cancelled"},
    "attempt missing, next to a good outcome": {"outcome": "completed", "with_good": True},
}


@pytest.mark.parametrize("outcome", WITHOUT_ATTEMPT.values(), ids=WITHOUT_ATTEMPT.keys())
def test_finish_jobs_refuses_an_outcome_without_attempt(db, outcome):
    """PJ016, and the whole batch changes nothing (the good outcome next to it included)."""
    ids = [r[0] for r in db.execute(
        "SELECT (app_jobs.add_job(identifier := 'no_attempt')).id FROM generate_series(1, 2)"
    ).fetchall()]
    assert sorted(r[0] for r in db.execute(
        "SELECT id FROM app_jobs.get_jobs('w_fence', ARRAY['no_attempt'], '4 hours', 2)"
    ).fetchall()) == sorted(ids)
    db.commit()
    before = db.execute("SELECT to_jsonb(j) FROM app_jobs.jobs AS j ORDER BY id").fetchall()
    db.commit()

    item = {k: v for k, v in outcome.items() if k != "with_good"}
    batch = [{"id": ids[0], **item}]
    if outcome.get("with_good"):
        batch.append({"id": ids[1], "attempt": 1, "outcome": "completed"})
    with pytest.raises(psycopg.Error) as err:
        db.execute("SELECT * FROM app_jobs.finish_jobs('w_fence', %s)", (Jsonb(batch),))
    assert err.value.sqlstate == "PJ016", err.value
    db.rollback()

    assert db.execute("SELECT to_jsonb(j) FROM app_jobs.jobs AS j ORDER BY id").fetchall() == before
    assert db.execute("SELECT count(*) FROM app_jobs.job_history").fetchone() == (0,)
    # With its attempt the same outcome is taken; a stale attempt is fenced.
    rows = db.execute(
        "SELECT job_id, attempt, status FROM app_jobs.finish_jobs('w_fence', %s)",
        (Jsonb([{"id": ids[0], "attempt": 2, "outcome": "completed"},
                {"id": ids[1], "attempt": 1, "outcome": "completed"}]),),
    ).fetchall()
    assert sorted(rows) == [(ids[0], 2, "fenced"), (ids[1], 1, "completed")]
    db.commit()
