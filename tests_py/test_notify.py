"""NOTIFY from the database, received by a listening session: "jobs:insert" on commit of
added jobs (by the _900_notify_worker trigger, so plain INSERTs too), once per statement,
never for a rolled-back add_job; "jobs:progress" from set_progress (the holder's report
only, not a fenced one); "jobs:stopped" events from every path that stops a job, which
carry ids and names only (never payload, error text, key or tenant).

A separate session LISTENs; the writer is the test's own transactional connection.
"""

from __future__ import annotations

import json

import psycopg
import pytest
from psycopg.types.json import Jsonb

CHANNEL = "jobs:insert"


@pytest.fixture
def listener(connect) -> psycopg.Connection:
    conn = connect()
    conn.execute(f'LISTEN "{CHANNEL}"')
    return conn


def received(conn: psycopg.Connection, wait: float, expect: int | None = None) -> list:
    """Notifications on `conn`: up to `expect` of them within `wait` seconds, then any that
    follow within a short grace period (so extra ones are caught too)."""
    got = list(conn.notifies(timeout=wait, stop_after=expect)) if expect else []
    got += list(conn.notifies(timeout=0.3 if expect else wait))
    return got


def test_committed_add_job_notifies_once(db, listener):
    db.execute("SELECT app_jobs.add_job(identifier := 'notify_me')")
    assert received(listener, 0.3) == [], "notified before the transaction committed"
    db.commit()
    got = received(listener, 5, expect=1)
    assert [n.channel for n in got] == [CHANNEL]
    assert got[0].pid == db.info.backend_pid


def test_multi_row_insert_notifies_once(db, listener):
    db.execute(
        "INSERT INTO app_jobs.jobs (task_identifier, payload)"
        " SELECT 'bulk', json_build_object('n', g) FROM generate_series(1, 100) AS g"
    )
    db.commit()
    assert db.execute("SELECT count(*) FROM app_jobs.jobs").fetchone()[0] == 100
    got = received(listener, 5, expect=1)
    assert [n.channel for n in got] == [CHANNEL]


def test_notify_trigger_runs_once_per_statement(db):
    # PostgreSQL folds identical notifications of one transaction into one, so count the
    # trigger function's calls instead: one per INSERT statement, whatever its row count.
    db.execute("SET LOCAL track_functions = 'pl'")
    db.execute(
        "INSERT INTO app_jobs.jobs (task_identifier)"
        " SELECT 'bulk' FROM generate_series(1, 100)"
    )
    db.execute("SELECT app_jobs.add_job(identifier := 'one_more')")
    calls = db.execute(
        "SELECT calls FROM pg_stat_xact_user_functions"
        " WHERE schemaname = 'app_jobs' AND funcname = '_tg_notify_worker'"
    ).fetchone()
    assert calls == (2,)
    db.rollback()


def test_rolled_back_add_job_notifies_nothing(db, listener):
    db.execute("SELECT app_jobs.add_job(identifier := 'never_mind')")
    db.execute(
        "INSERT INTO app_jobs.jobs (task_identifier) SELECT 'bulk' FROM generate_series(1, 10)"
    )
    db.rollback()
    assert received(listener, 0.5) == []
    # The listener works: the next committed job is announced.
    db.execute("SELECT app_jobs.add_job(identifier := 'kept')")
    db.commit()
    assert [n.channel for n in received(listener, 5, expect=1)] == [CHANNEL]


def test_separate_transactions_notify_separately(db, listener):
    for _ in range(3):
        db.execute("SELECT app_jobs.add_job(identifier := 'each')")
        db.commit()
    got = received(listener, 5, expect=3)
    assert [n.channel for n in got] == [CHANNEL] * 3


def test_replacing_a_waiting_keyed_job_notifies(db, listener):
    db.execute("SELECT app_jobs.add_job(identifier := 'keyed', job_key := 'k')")
    db.commit()
    assert len(received(listener, 5, expect=1)) == 1
    # The upsert path updates the waiting job in place (it may now be due): still announced.
    db.execute(
        "SELECT app_jobs.add_job(identifier := 'keyed', job_key := 'k', payload := '{\"v\": 2}')"
    )
    db.commit()
    assert db.execute("SELECT count(*) FROM app_jobs.jobs").fetchone()[0] == 1
    assert [n.channel for n in received(listener, 5, expect=1)] == [CHANNEL]


def listening(connect, channel: str) -> psycopg.Connection:
    conn = connect()
    conn.execute(f'LISTEN "{channel}"')
    return conn


# -- jobs:progress ------------------------------------------------------------------------------

def test_set_progress_notifies_jobs_progress_for_the_holder_only(db, connect):
    job_id, other_id = [r[0] for r in db.execute(
        "SELECT (app_jobs.add_job(identifier := 'prog')).id FROM generate_series(1, 2)"
    ).fetchall()]
    claimed = db.execute("SELECT id FROM app_jobs.get_jobs('w_prog', NULL, '4 hours', 1)"
                         ).fetchall()
    assert claimed == [(job_id,)]
    db.commit()
    progress = listening(connect, "jobs:progress")

    assert db.execute("SELECT app_jobs.set_progress('w_prog', %s, 40, 'downloading', 1)",
                      (job_id,)).fetchone() == (True,)
    assert received(progress, 0.3) == [], "notified before the transaction committed"
    db.commit()
    got = received(progress, 5, expect=1)
    assert [n.channel for n in got] == ["jobs:progress"]
    assert json.loads(got[0].payload) == {"id": job_id, "progress": 40, "stage": "downloading"}

    # Fenced or refused reports send nothing (nor does a rolled-back one).
    for worker, target, attempt in (("w_other", job_id, None), ("w_prog", job_id, 2),
                                    ("w_prog", other_id, None), ("w_prog", -1, None)):
        assert db.execute("SELECT app_jobs.set_progress(%s, %s, 70, 'x', %s)",
                          (worker, target, attempt)).fetchone() == (False,)
        db.commit()
    db.execute("SELECT app_jobs.set_progress('w_prog', %s, 80, 'rolled back')", (job_id,))
    db.rollback()
    assert received(progress, 0.5) == []

    assert db.execute("SELECT app_jobs.set_progress('w_prog', %s, 100, NULL)",
                      (job_id,)).fetchone() == (True,)
    db.commit()
    got = received(progress, 5, expect=1)
    assert [json.loads(n.payload) for n in got] == [
        {"id": job_id, "progress": 100, "stage": None}]


# -- jobs:stopped: ids and names only ---------------------------------------------------------

SECRETS = ("SECRET-PAYLOAD", "SECRET-KEY", "SECRET-ERROR", "SECRET-RESULT",
           "5ec2e700-0000-0000-0000-00000000c0de")
EVENT_KEYS = {"id", "task", "outcome", "will_retry", "bundle_id", "origin"}


def test_stopped_events_carry_ids_and_names_only(db, connect):
    """Every way a job stops (complete_job, fail_job with and without retries, cancel_job
    of a waiting job, a cancel-requested job failed by its worker, finish_jobs' batched
    completion and its failure path, a dependent cancelled with its dependency): one
    jobs:stopped event each, with exactly the documented fields and none of the job's
    payload, error, result, key or tenant."""
    tenant = SECRETS[-1]

    def add(task: str, key: str | None = None, **extra: str) -> int:
        more = "".join(f", {name} := {expr}" for name, expr in extra.items())
        return db.execute(
            "SELECT id FROM app_jobs.add_job(db_id := %s, identifier := %s,"
            " payload := %s::json, job_key := %s, origin := 'ev-origin'" + more + ")",
            (tenant, task, Jsonb({"secret": "SECRET-PAYLOAD"}), key)).fetchone()[0]

    jobs = {
        "complete_job": add("ev_done", "SECRET-KEY-1"),
        "fail_job, will retry": add("ev_retry", "SECRET-KEY-2", max_attempts="2"),
        "fail_job, for good": add("ev_fail", max_attempts="1"),
        "finish_jobs completed": add("ev_batch", "SECRET-KEY-3"),
        "finish_jobs failed, will retry": add("ev_batch_fail", max_attempts="3"),
        "cancel requested, then failed": add("ev_running"),
        "cancel_job of a waiting job": add("ev_waiting", "SECRET-KEY-4",
                                           run_at="now() + interval '1 hour'"),
    }
    jobs["dependent of a failed job"] = add(
        "ev_dependent", depends_on=f"ARRAY[{jobs['fail_job, for good']}]::bigint[]")
    claimed = {r[0]: r[1] for r in db.execute(
        "SELECT id, attempts FROM app_jobs.get_jobs('w_ev', NULL, '4 hours', 20)").fetchall()}
    assert len(claimed) == 6
    db.commit()
    stopped = listening(connect, "jobs:stopped")

    def call(query: str, *params: object) -> None:
        db.execute(query, params)
        db.commit()

    call("SELECT app_jobs.complete_job('w_ev', %s)", jobs["complete_job"])
    call("SELECT app_jobs.fail_job('w_ev', %s, 'SECRET-ERROR 1')", jobs["fail_job, will retry"])
    call("SELECT app_jobs.fail_job('w_ev', %s, 'SECRET-ERROR 2')", jobs["fail_job, for good"])
    call("SELECT * FROM app_jobs.finish_jobs('w_ev', %s)", Jsonb([
        {"id": jobs["finish_jobs completed"], "attempt": 1, "outcome": "completed",
         "result": {"secret": "SECRET-RESULT"}},
        {"id": jobs["finish_jobs failed, will retry"], "attempt": 1, "outcome": "failed",
         "error": "SECRET-ERROR 3", "error_data": {"secret": "SECRET-ERROR"}},
    ]))
    assert db.execute("SELECT app_jobs.cancel_job(%s)",
                      (jobs["cancel requested, then failed"],)).fetchone() == ("cancelling",)
    call("SELECT app_jobs.fail_job('w_ev', %s, 'SECRET-ERROR 4')",
         jobs["cancel requested, then failed"])
    assert db.execute("SELECT app_jobs.cancel_job(%s)",
                      (jobs["cancel_job of a waiting job"],)).fetchone() == ("cancelled",)
    db.commit()

    notes = received(stopped, 5, expect=8)
    for note in notes:
        assert not any(secret in note.payload for secret in SECRETS), note.payload
    events = [e for n in notes for e in (lambda d: d if isinstance(d, list) else [d])(
        json.loads(n.payload))]
    assert all(set(e) == EVENT_KEYS for e in events), events
    assert all(e["origin"] == "ev-origin" and e["bundle_id"] is None for e in events)
    by_job = {e["id"]: (e["task"], e["outcome"], e["will_retry"]) for e in events}
    assert len(by_job) == len(events) == len(jobs), events
    assert by_job == {
        jobs["complete_job"]: ("ev_done", "completed", False),
        jobs["fail_job, will retry"]: ("ev_retry", "failed", True),
        jobs["fail_job, for good"]: ("ev_fail", "failed", False),
        jobs["dependent of a failed job"]: ("ev_dependent", "cancelled", False),
        jobs["finish_jobs completed"]: ("ev_batch", "completed", False),
        jobs["finish_jobs failed, will retry"]: ("ev_batch_fail", "failed", True),
        jobs["cancel requested, then failed"]: ("ev_running", "cancelled", False),
        jobs["cancel_job of a waiting job"]: ("ev_waiting", "cancelled", False),
    }
