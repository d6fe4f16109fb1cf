"""pgjobs.testing: run_jobs runs jobs inline, ignore_enqueues makes enqueues disappear.

run_jobs(conn, handlers=None): runs every due job, one at a time, in this process, with
the handlers registered by @pgjobs.task or the ones given (sync and async); outcomes go
through the worker's SQL: history with the handler's result, failures retried later with
last_error (and not rerun by the same call), jobs of tasks without a handler and future
jobs left alone, jobs enqueued by a handler run in the same call; works on autocommit and
transactional connections (it commits after each job).

ignore_enqueues(conn, *tasks): within the block add_job on that connection drops jobs of
all tasks (none named) or of the named ones and returns None; other connections are not
affected; the previous setting comes back afterwards (nested blocks, an exception in the
block, a value set beforehand); the block is a transaction (a savepoint in an open one)
and its setting is transaction-local, nothing stays on the session; a bundle created with
ignored tasks counts only its real jobs and still stops (with its follow-up) when they are
done.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pgjobs
import psycopg
import pytest
from pgjobs import testing

CALLS: list[tuple[str, object]] = []


@pgjobs.task("th_registered_sync")
def registered_sync(payload, job):
    CALLS.append(("sync", payload))
    return {"double": payload["n"] * 2}


@pgjobs.task("th_registered_async")
async def registered_async(payload, job):
    await asyncio.sleep(0)
    CALLS.append(("async", payload))
    return [payload["n"], job.attempts]


@pytest.fixture(autouse=True)
def clear_calls():
    CALLS.clear()


def history(conn, job_id):
    return conn.execute("SELECT status, result, attempts FROM app_jobs.job_history "
                        "WHERE job_id = %s", (job_id,)).fetchall()


def live(conn, job_id):
    return conn.execute("SELECT attempts, last_error, run_at > now(), locked_by "
                        "FROM app_jobs.jobs WHERE id = %s", (job_id,)).fetchone()


# -- run_jobs ----------------------------------------------------------------------------------

def test_run_jobs_with_registered_handlers_sync_and_async(connect):
    conn = connect()
    a = pgjobs.add_job(conn, "th_registered_sync", {"n": 21})
    b = pgjobs.add_job(conn, "th_registered_async", {"n": 7})
    future = pgjobs.add_job(conn, "th_registered_sync", {"n": 1},
                            run_at=datetime.now(timezone.utc) + timedelta(hours=1))
    stranger = pgjobs.add_job(conn, "th_no_handler_anywhere", {"n": 0})

    report = testing.run_jobs(conn)

    assert (report.completed, report.failed) == (2, 0)
    assert sorted(CALLS, key=str) == [("async", {"n": 7}), ("sync", {"n": 21})]
    assert history(conn, a) == [("completed", {"double": 42}, 1)]
    assert history(conn, b) == [("completed", [7, 1], 1)]
    assert live(conn, future) == (0, None, True, None), "a future job was run"
    assert live(conn, stranger) == (0, None, False, None), "a job without handler was touched"
    assert conn.execute("SELECT worker_id FROM app_jobs.job_history WHERE job_id = %s",
                        (a,)).fetchone() == (testing.WORKER_ID,)


def test_run_jobs_called_from_async_code_runs_async_handlers(connect):
    """As from an async test: an event loop runs in this thread while run_jobs works."""
    conn = connect()
    job_id = pgjobs.add_job(conn, "th_registered_async", {"n": 3})

    async def main():
        return testing.run_jobs(conn, {"th_registered_async": registered_async})

    report = asyncio.run(main())
    assert (report.completed, report.failed) == (1, 0)
    assert history(conn, job_id) == [("completed", [3, 1], 1)]


def test_run_jobs_with_given_handlers_records_failures_and_retries(connect):
    conn = connect()
    seen: list[str] = []

    def ok(payload, job):
        seen.append(f"ok {payload['i']}")
        return {"set": {1, 2}} if payload["i"] == 0 else None  # not JSON: stored as repr

    async def broken(payload, job):
        seen.append(f"broken attempt {job.attempts}")
        raise ValueError("nope")

    ids = [pgjobs.add_job(conn, "th_ok", {"i": i}) for i in range(3)]
    bad = pgjobs.add_job(conn, "th_broken", max_attempts=2)
    registered_job = pgjobs.add_job(conn, "th_registered_sync", {"n": 1})

    report = testing.run_jobs(conn, {"th_ok": ok, "th_broken": broken})
    assert (report.completed, report.failed) == (3, 1)
    assert sorted(seen) == ["broken attempt 1", "ok 0", "ok 1", "ok 2"], \
        "the failed job must wait for its backoff, not run again in the same call"
    assert history(conn, ids[0]) == [("completed", "{'set': {1, 2}}", 1)]
    assert history(conn, ids[1]) == [("completed", None, 1)]
    attempts, last_error, later, locked_by = live(conn, bad)
    assert (attempts, later, locked_by) == (1, True, None)
    assert last_error == "ValueError: nope"
    # Only the given handlers run: the registered task's job is still waiting.
    assert live(conn, registered_job)[0] == 0
    assert CALLS == []

    # Its backoff over, the failed job runs again and fails for good.
    conn.execute("UPDATE app_jobs.jobs SET run_at = now() WHERE id = %s", (bad,))
    report = testing.run_jobs(conn, {"th_broken": broken})
    assert (report.completed, report.failed) == (0, 1)
    assert conn.execute("SELECT status, attempts, error_data->>'type' FROM app_jobs.job_history "
                        "WHERE job_id = %s", (bad,)).fetchall() == [("failed", 2, "ValueError")]
    assert testing.run_jobs(conn, {"th_broken": broken}).failed == 0


def test_run_jobs_on_transactional_connection_commits_each_job(db, connect):
    other = connect()
    first = pgjobs.add_job(db, "th_parent", {"depth": 0})
    db.commit()

    def parent(payload, job):
        # Enqueued (and committed) elsewhere while the claim is open: run in the same call.
        if payload["depth"] < 3:
            pgjobs.add_job(other, "th_parent", {"depth": payload["depth"] + 1})
        return payload["depth"]

    report = testing.run_jobs(db, {"th_parent": parent})
    assert (report.completed, report.failed) == (4, 0)
    assert db.info.transaction_status.name == "IDLE", "run_jobs left a transaction open"
    # Visible from another session: committed.
    assert other.execute("SELECT count(*), array_agg(result ORDER BY job_id) "
                         "FROM app_jobs.job_history").fetchone() == (4, [0, 1, 2, 3])
    assert history(other, first) == [("completed", 0, 1)]


def test_run_jobs_respects_dependencies_and_max_jobs(connect):
    conn = connect()
    order: list[str] = []

    def step(payload, job):
        order.append(payload["name"])

    a = pgjobs.add_job(conn, "th_step", {"name": "a"})
    b = pgjobs.add_job(conn, "th_step", {"name": "b"}, depends_on=[a])
    pgjobs.add_job(conn, "th_step", {"name": "c"}, depends_on=[b])
    report = testing.run_jobs(conn, {"th_step": step}, max_jobs=2)
    assert report.completed == 2 and order == ["a", "b"]
    testing.run_jobs(conn, {"th_step": step})
    assert order == ["a", "b", "c"]


# -- ignore_enqueues ---------------------------------------------------------------------------

def count(conn, task=None):
    return conn.execute("SELECT count(*) FROM app_jobs.jobs WHERE %s::text IS NULL "
                        "OR task_identifier = %s", (task, task)).fetchone()[0]


def setting(conn):
    return conn.execute("SELECT current_setting('pgjobs.ignore_enqueues', true)").fetchone()[0]


def test_ignore_enqueues_all_or_named_on_this_connection_only(connect):
    conn, other = connect(), connect()
    with testing.ignore_enqueues(conn):
        assert pgjobs.add_job(conn, "th_a") is None
        assert pgjobs.add_job(conn, "th_b", job_key="k") is None
        assert conn.execute("SELECT id FROM app_jobs.add_job(identifier := 'th_c')"
                            ).fetchone() == (None,)
        assert pgjobs.add_job(other, "th_a") is not None  # another session: not ignored
    assert count(conn) == 1
    assert pgjobs.add_job(conn, "th_a") is not None

    with testing.ignore_enqueues(conn, "th_a", "th_b"):
        assert pgjobs.add_job(conn, "th_a") is None
        assert pgjobs.add_job(conn, "th_b") is None
        assert pgjobs.add_job(conn, "th_c") is not None
        assert pgjobs.add_job(conn, "th_a_longer") is not None  # names match exactly
        assert pgjobs.add_job(other, "th_b") is not None
    assert (count(conn, "th_a"), count(conn, "th_b"), count(conn, "th_c")) == (2, 1, 1)


def test_ignore_enqueues_restores_the_previous_setting(connect, db):
    conn = connect()
    assert setting(conn) in (None, "")
    with testing.ignore_enqueues(conn, "th_a"):
        with testing.ignore_enqueues(conn):
            assert setting(conn) == "all"
            assert pgjobs.add_job(conn, "th_c") is None
        assert setting(conn) == "th_a"
        assert pgjobs.add_job(conn, "th_a") is None
        assert pgjobs.add_job(conn, "th_c") is not None
    assert setting(conn) == ""
    assert pgjobs.add_job(conn, "th_a") is not None

    # A setting made before (here with SQL) comes back, also when the block raises.
    conn.execute("SELECT set_config('pgjobs.ignore_enqueues', 'th_x', false)")
    with pytest.raises(RuntimeError, match="inside"):
        with testing.ignore_enqueues(conn, "th_y"):
            assert pgjobs.add_job(conn, "th_x") is not None
            raise RuntimeError("raised inside the block")
    assert setting(conn) == "th_x"
    assert pgjobs.add_job(conn, "th_x") is None

    # On a transactional connection the block is a savepoint of the open transaction:
    # its enqueues stay in that transaction, the setting ends with the block, and
    # commit() inside the block is refused (the setting cannot outlive it).
    pgjobs.add_job(db, "th_u")
    with testing.ignore_enqueues(db, "th_t"):
        assert pgjobs.add_job(db, "th_t") is None
        assert pgjobs.add_job(db, "th_u") is not None
        with pytest.raises(psycopg.ProgrammingError):
            db.commit()
    assert setting(db) == ""
    assert pgjobs.add_job(db, "th_t") is not None
    db.commit()
    assert count(db, "th_u") == 2

    # A database error in the block comes out as itself; the rollback of the block's
    # savepoint undoes the setting and what the block did, the outer transaction lives.
    with pytest.raises(psycopg.errors.DivisionByZero):
        with testing.ignore_enqueues(db, "th_t"):
            pgjobs.add_job(db, "th_v")
            db.execute("SELECT 1 / 0")
    assert setting(db) == ""
    assert count(db, "th_v") == 0
    assert pgjobs.add_job(db, "th_t") is not None
    db.commit()


def test_ignore_enqueues_is_transaction_local(connect):
    # Nothing of the block is left on the session: a pooler may hand the server
    # connection to another client right after it (autocommit connection: the block is
    # its own transaction, committed at its end).
    conn = connect()
    with testing.ignore_enqueues(conn, "th_t"):
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        assert pgjobs.add_job(conn, "th_t") is None
        pgjobs.add_job(conn, "th_w")
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert setting(conn) == ""
    assert count(conn, "th_w") == 1


def test_bundle_with_ignored_tasks_counts_only_real_jobs(connect):
    conn = connect()
    with testing.ignore_enqueues(conn, "th_skip"):
        bundle_id = pgjobs.add_bundle(conn, "partly", [
            {"identifier": "th_real", "payload": {"i": 1}},
            {"identifier": "th_skip"},
            {"identifier": "th_real", "payload": {"i": 2}},
            {"identifier": "th_skip"},
        ], followup={"identifier": "th_after"})
    assert conn.execute("SELECT job_count FROM app_jobs.job_bundles WHERE id = %s",
                        (bundle_id,)).fetchone() == (2,)
    assert conn.execute("SELECT task_identifier, count(*) FROM app_jobs.jobs "
                        "WHERE bundle_id = %s GROUP BY 1", (bundle_id,)).fetchall() == [
        ("th_real", 2)]

    followups: list[dict] = []
    report = testing.run_jobs(conn, {
        "th_real": lambda payload, job: payload["i"],
        "th_after": lambda payload, job: followups.append(payload),
    })
    assert (report.completed, report.failed) == (3, 0)
    assert conn.execute("SELECT outcome, completed_count FROM app_jobs.job_bundles "
                        "WHERE id = %s", (bundle_id,)).fetchone() == ("completed", 2)
    assert [(f["outcome"], f["completed"]) for f in followups] == [("completed", 2)]
