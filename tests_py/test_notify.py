"""NOTIFY on channel "jobs:insert": sent on commit of added jobs, once per statement, never
for a rolled-back add_job.

A separate session LISTENs; the writer is the test's own transactional connection.
"""

from __future__ import annotations

import psycopg
import pytest

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
        " WHERE schemaname = 'app_jobs' AND funcname = 'tg_notify_worker'"
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
