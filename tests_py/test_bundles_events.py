"""Bundles, job events and dependencies end to end, with real pgjobs-worker processes.

- A bundle of 100 jobs run by 4 worker processes stops exactly once: one follow-up job
  (its handler writes one line), the bundle row says completed with counts 100, and one
  jobs:bundle_stopped event is sent. A bundle with a permanently failing job ends failed.
- pgjobs.listen() receives jobs:stopped for completions, retryable failures (will_retry
  true), final failures (will_retry false), cancellations, and jobs:bundle_stopped; no
  event carries a job's payload.
- pgjobs.wait_for_job() returns the handler's result, raises JobFailed for a failed or a
  cancelled job, TimeoutError for a job nobody runs, LookupError for no such job.
- Dependencies: chains A -> B -> C run in order across workers; a failing A cancels B and
  C, whose handlers never run.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from pathlib import Path

import pgjobs
import pytest
from workerproc import LOG_PRELUDE, wait_for, worker_args
from workerproc import write_tasks as write_module

JOB_EVENT_KEYS = {"id", "task", "outcome", "will_retry", "bundle_id", "origin"}
BUNDLE_EVENT_KEYS = {"id", "bundle_type", "origin", "outcome", "followup_job_id"}


def write_tasks(tmp_path: Path, body: str) -> Path:
    return write_module(tmp_path, body, "bundle_tasks", LOG_PRELUDE)


def run_burst(conninfo: str, tasks: Path, *extra: str) -> None:
    res = subprocess.run(worker_args(conninfo, tasks, "--burst", *extra),
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stderr




@pytest.fixture
def workers(db, sql):
    """start(tasks, n, *extra): n worker processes, registered; stopped cleanly at the end
    of the test (exit code 0 checked), killed if that fails."""
    procs: list[subprocess.Popen] = []

    def start(tasks: Path, n: int, *extra: str) -> None:
        before = sql("SELECT count(*) FROM app_jobs.workers")[0][0]
        for _ in range(n):
            procs.append(subprocess.Popen(
                worker_args(db.info.dsn, tasks, "--poll-interval", "0.1", *extra),
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
        wait_for(lambda: sql("SELECT count(*) FROM app_jobs.workers")[0][0] == before + n,
                 30, f"{n} workers to register")

    yield start
    errors = []
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
        try:
            _, err = p.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            _, err = p.communicate()
        if p.returncode != 0:
            errors.append(err)
    assert not errors, errors


def drain(events) -> list[pgjobs.Event]:
    """Everything the listen() iterator delivers until it is quiet for its timeout."""
    return list(events)


# -- bundles ---------------------------------------------------------------------------------

def test_bundle_of_100_jobs_fires_followup_exactly_once(db, connect, sql, tmp_path, workers):
    followups = tmp_path / "followups"
    tasks = write_tasks(tmp_path, f"""
        @pgjobs.task
        def part(payload, job):
            time.sleep(random.random() * 0.02)

        @pgjobs.task
        def after(payload, job):
            log({str(followups)!r}, job.id, json.dumps(payload, separators=(",", ":")))
    """)
    listener = connect()
    events = pgjobs.listen(listener, timeout=1.0)
    workers(tasks, 4, "--concurrency", "4")

    bundle_id = pgjobs.add_bundle(
        db, "import", [{"identifier": "part", "payload": {"n": n, "secret": "s3cr3t"}}
                       for n in range(100)],
        origin="test-bundle", followup={"identifier": "after", "payload": {"note": "done"}})
    db.commit()
    wait_for(followups.exists, 60, "the follow-up job to run")
    wait_for(lambda: sql("SELECT count(*) FROM app_jobs.jobs")[0][0] == 0, 30,
             "every job to be done")
    time.sleep(0.5)  # time for a second follow-up, were there one

    lines = followups.read_text().splitlines()
    assert len(lines) == 1, f"the follow-up ran {len(lines)} times: {lines}"
    followup_id, payload = lines[0].split(" ", 1)
    assert json.loads(payload) == {
        "bundle_id": bundle_id, "bundle_type": "import", "outcome": "completed",
        "completed": 100, "failed": 0, "cancelled": 0, "payload": {"note": "done"}}
    row = sql("SELECT outcome, job_count, completed_count, failed_count, cancelled_count, "
              "followup_job_id, stopped_at IS NOT NULL FROM app_jobs.job_bundles WHERE id = %s",
              (bundle_id,))
    assert row == [("completed", 100, 100, 0, 0, int(followup_id), True)]
    assert sql("SELECT count(*), count(DISTINCT job_id) FROM app_jobs.job_history "
               "WHERE bundle_id = %s AND status = 'completed'", (bundle_id,)) == [(100, 100)]
    assert sql("SELECT status, origin FROM app_jobs.job_history WHERE job_id = %s",
               (int(followup_id),)) == [("completed", "test-bundle")]

    got = drain(events)
    bundle_events = [e for e in got if e.channel == "jobs:bundle_stopped"]
    assert [e.data for e in bundle_events] == [{
        "id": bundle_id, "bundle_type": "import", "origin": "test-bundle",
        "outcome": "completed", "followup_job_id": int(followup_id)}]
    stopped = [e.data for e in got if e.channel == "jobs:stopped"]
    assert all(set(d) == JOB_EVENT_KEYS for d in stopped)
    parts = [d for d in stopped if d["bundle_id"] == bundle_id]
    assert len(parts) == 100 and len({d["id"] for d in parts}) == 100
    assert all(d["outcome"] == "completed" and d["will_retry"] is False
               and d["task"] == "part" and d["origin"] == "test-bundle" for d in parts)
    assert [d["id"] for d in stopped if d["task"] == "after"] == [int(followup_id)]
    assert "s3cr3t" not in json.dumps([e.data for e in got])


def test_bundle_with_a_permanently_failing_job_ends_failed(db, connect, sql, tmp_path):
    tasks = write_tasks(tmp_path, """
        @pgjobs.task
        def maybe(payload, job):
            if payload.get("fail"):
                raise RuntimeError("this part always fails")

        @pgjobs.task
        def after(payload, job):
            return payload
    """)
    listener = connect()
    events = pgjobs.listen(listener, timeout=1.0)
    bundle_id = pgjobs.add_bundle(
        db, "mixed",
        [{"identifier": "maybe", "payload": {"n": n}} for n in range(4)]
        + [{"identifier": "maybe", "payload": {"fail": True}, "max_attempts": 1}],
        followup={"identifier": "after"})
    db.commit()
    run_burst(db.info.dsn, tasks, "--concurrency", "2")  # the parts
    run_burst(db.info.dsn, tasks)  # the follow-up

    outcome, counts, followup_id = sql(
        "SELECT outcome, ARRAY[completed_count, failed_count, cancelled_count], "
        "followup_job_id FROM app_jobs.job_bundles WHERE id = %s", (bundle_id,))[0]
    assert (outcome, counts) == ("failed", [4, 1, 0])
    status, result = sql("SELECT status, result FROM app_jobs.job_history WHERE job_id = %s",
                         (followup_id,))[0]
    assert status == "completed"
    assert (result["outcome"], result["completed"], result["failed"]) == ("failed", 4, 1)
    # The failed part stays in the table (failed for good); the others are gone.
    assert sql("SELECT bundle_id, attempts, max_attempts FROM app_jobs.jobs") == [
        (bundle_id, 1, 1)]

    got = drain(events)
    assert [e.data["outcome"] for e in got if e.channel == "jobs:bundle_stopped"] == ["failed"]
    failed = [e.data for e in got if e.channel == "jobs:stopped" and e.data["outcome"] == "failed"]
    assert len(failed) == 1 and failed[0]["will_retry"] is False
    assert failed[0]["bundle_id"] == bundle_id


def test_bundle_followup_fires_once_when_last_job_is_cancelled(db, sql):
    """A waiting job cancelled by cancel_job counts as stopped: the bundle ends failed."""
    bundle_id = pgjobs.add_bundle(db, "c", [{"identifier": "a"}, {"identifier": "b"}],
                                  followup={"identifier": "after"})
    db.commit()
    ids = [r[0] for r in sql("SELECT id FROM app_jobs.jobs WHERE bundle_id = %s ORDER BY id",
                             (bundle_id,))]
    report = pgjobs.testing.run_jobs(db, {"a": lambda payload, job: None})
    assert (report.completed, report.failed) == (1, 0)
    assert sql("SELECT app_jobs.cancel_job(%s)", (ids[1],)) == [("cancelled",)]
    assert sql("SELECT outcome, completed_count, cancelled_count FROM app_jobs.job_bundles "
               "WHERE id = %s", (bundle_id,)) == [("failed", 1, 1)]
    assert sql("SELECT count(*) FROM app_jobs.jobs WHERE task_identifier = 'after'") == [(1,)]


# -- events ------------------------------------------------------------------------------------

def test_listen_receives_stop_events_with_retries_and_no_payloads(db, connect, sql, tmp_path):
    tasks = write_tasks(tmp_path, """
        @pgjobs.task
        def good(payload, job):
            return {"ok": True}

        @pgjobs.task
        def flaky(payload, job):
            raise ValueError(f"attempt {job.attempts} failed")
    """)
    listener = connect()
    events = pgjobs.listen(listener, timeout=1.0)  # listening from here on
    secret = {"password": "hunter2-do-not-leak"}
    good = pgjobs.add_job(db, "good", secret, origin="from-test")
    flaky = pgjobs.add_job(db, "flaky", secret, max_attempts=2)
    idle = pgjobs.add_job(db, "nobody_runs_this", secret)
    db.commit()

    run_burst(db.info.dsn, tasks)  # good completes, flaky fails once (will retry)
    sql("UPDATE app_jobs.jobs SET run_at = now() WHERE id = %s", (flaky,))
    run_burst(db.info.dsn, tasks)  # flaky fails for good
    assert sql("SELECT app_jobs.cancel_job(%s)", (idle,)) == [("cancelled",)]

    got = drain(events)
    assert all(e.channel == "jobs:stopped" for e in got), got
    data = [e.data for e in got]
    assert all(set(d) == JOB_EVENT_KEYS for d in data), data
    assert "hunter2" not in json.dumps(data)
    assert data == [
        {"id": good, "task": "good", "outcome": "completed", "will_retry": False,
         "bundle_id": None, "origin": "from-test"},
        {"id": flaky, "task": "flaky", "outcome": "failed", "will_retry": True,
         "bundle_id": None, "origin": None},
        {"id": flaky, "task": "flaky", "outcome": "failed", "will_retry": False,
         "bundle_id": None, "origin": None},
        {"id": idle, "task": "nobody_runs_this", "outcome": "cancelled", "will_retry": False,
         "bundle_id": None, "origin": None},
    ]
    # Quiet for its timeout: the iterator ends.
    assert list(pgjobs.listen(listener, timeout=0.2)) == []


def test_wait_for_job_results_failures_and_timeouts(db, connect, sql, tmp_path, workers):
    tasks = write_tasks(tmp_path, """
        @pgjobs.task
        def answer(payload, job):
            time.sleep(0.3)
            return {"answer": payload["x"] * 2}

        @pgjobs.task
        async def async_answer(payload, job):
            return [payload["x"], "async"]

        @pgjobs.task
        def doomed(payload, job):
            raise RuntimeError("doomed from the start")
    """)
    workers(tasks, 2, "--concurrency", "2")
    ok = pgjobs.add_job(db, "answer", {"x": 21})
    ok_async = pgjobs.add_job(db, "async_answer", {"x": 5})
    doomed = pgjobs.add_job(db, "doomed", max_attempts=1)
    orphan = pgjobs.add_job(db, "nobody_runs_this")
    to_cancel = pgjobs.add_job(db, "nobody_runs_this")
    db.commit()

    # Several waiters at once, each on its own session.
    results: dict[str, object] = {}

    def waiter(name: str, job_id: int, timeout: float) -> None:
        conn = connect()
        try:
            results[name] = pgjobs.wait_for_job(conn, job_id, timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - recorded for the asserts below
            results[name] = exc

    threads = [threading.Thread(target=waiter, args=a) for a in [
        ("ok", ok, 20), ("ok_async", ok_async, 20), ("doomed", doomed, 20),
        ("orphan", orphan, 1.5), ("cancelled", to_cancel, 20)]]
    for t in threads:
        t.start()
    time.sleep(0.5)
    assert sql("SELECT app_jobs.cancel_job(%s)", (to_cancel,)) == [("cancelled",)]
    for t in threads:
        t.join(30)
    assert results["ok"] == {"answer": 42}
    assert results["ok_async"] == [5, "async"]
    assert isinstance(results["doomed"], pgjobs.JobFailed), results["doomed"]
    assert results["doomed"].status == "failed"
    assert results["doomed"].job_id == doomed
    assert "doomed from the start" in results["doomed"].error
    assert isinstance(results["cancelled"], pgjobs.JobFailed), results["cancelled"]
    assert results["cancelled"].status == "cancelled"
    assert isinstance(results["orphan"], TimeoutError), results["orphan"]

    # Afterwards, from history: the same answers at once.
    conn = connect()
    assert pgjobs.wait_for_job(conn, ok, timeout=1) == {"answer": 42}
    with pytest.raises(pgjobs.JobFailed):
        pgjobs.wait_for_job(conn, doomed, timeout=1)
    with pytest.raises(LookupError):
        pgjobs.wait_for_job(conn, 987654321, timeout=1)


# -- dependencies ------------------------------------------------------------------------------

def test_dependency_chains_run_in_order_and_failures_cancel_dependents(
        db, sql, tmp_path, workers):
    log = tmp_path / "steps.log"
    tasks = write_tasks(tmp_path, f"""
        LOG = {str(log)!r}

        @pgjobs.task
        def step(payload, job):
            log(LOG, "start", payload["chain"], payload["step"], time.time())
            time.sleep(0.1)
            if payload.get("fail"):
                raise RuntimeError("step failed")
            log(LOG, "end", payload["chain"], payload["step"], time.time())
    """)
    workers(tasks, 3, "--concurrency", "3")

    chains: dict[int, dict[str, int]] = {}
    for chain in range(6):
        fail = chain == 5  # the last chain's A fails for good
        a = pgjobs.add_job(db, "step", {"chain": chain, "step": "A", "fail": fail},
                           max_attempts=1)
        b = pgjobs.add_job(db, "step", {"chain": chain, "step": "B"}, depends_on=[a])
        c = pgjobs.add_job(db, "step", {"chain": chain, "step": "C"}, depends_on=[b])
        chains[chain] = {"A": a, "B": b, "C": c}
    db.commit()
    assert sql("SELECT count(*) FILTER (WHERE blocked_by = 1), count(*) FILTER "
               "(WHERE blocked_by = 0) FROM app_jobs.jobs") == [(12, 6)]

    wait_for(lambda: sql("SELECT count(*) FROM app_jobs.jobs WHERE attempts < max_attempts")
             [0][0] == 0, 30, "every chain to finish")

    runs: dict[tuple[int, str], dict[str, float]] = {}
    for line in log.read_text().splitlines():
        kind, chain, step, at = line.split()
        runs.setdefault((int(chain), step), {})[kind] = float(at)
    for chain in range(5):
        a, b, c = (runs[(chain, s)] for s in "ABC")
        assert a["end"] <= b["start"] and b["end"] <= c["start"], (chain, a, b, c)
    assert set(runs) - {(c, s) for c in range(5) for s in "ABC"} == {(5, "A")}, (
        "a dependent of the failed job ran")

    history = dict(sql("SELECT job_id, status FROM app_jobs.job_history"))
    for chain in range(5):
        assert [history[chains[chain][s]] for s in "ABC"] == ["completed"] * 3
    failed = chains[5]
    assert [history[failed[s]] for s in "ABC"] == ["failed", "cancelled", "cancelled"]
    reasons = dict(sql("SELECT job_id, error_data FROM app_jobs.job_history "
                       "WHERE status = 'cancelled'"))
    assert reasons[failed["B"]] == {"reason": "dependency", "dependency_id": failed["A"],
                                    "dependency_status": "failed"}
    assert reasons[failed["C"]] == {"reason": "dependency", "dependency_id": failed["B"],
                                    "dependency_status": "cancelled"}
    # Only the failed A is left, failed for good.
    assert sql("SELECT id FROM app_jobs.jobs") == [(failed["A"],)]
