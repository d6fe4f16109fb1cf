"""A NOTIFY queue filling up (a session that LISTENs, then sits idle in a transaction)
never makes an enqueue fail: once the queue's usage reaches notify_max_queue_usage,
pgjobs skips its own notifications (add_job's jobs:insert, finish_jobs' jobs:stopped) and
counts them in metrics(); below 0.1 % of the queue nothing is skipped whatever the
setting; once the listener catches up, notifications flow again.
"""

from __future__ import annotations

import psycopg
import pytest

FILL_CHANNEL = "pgjobs_test_fill"


def usage(conn: psycopg.Connection) -> float:
    return conn.execute("SELECT pg_notification_queue_usage()").fetchone()[0]


def skipped(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT app_jobs._notifications_skipped_count()").fetchone()[0]


def fill(conn: psycopg.Connection, megabytes: int) -> None:
    """Queue about `megabytes` MB of notifications (distinct payloads: no deduplication)."""
    pad = "x" * 7900
    for chunk in range(megabytes):
        conn.execute(
            "SELECT count(pg_notify(%s, i::text || %s)) FROM generate_series(1, 128) AS i",
            (FILL_CHANNEL, f"-{chunk}-{pad}"),
        )


@pytest.fixture
def lagging_listener(connect):
    """A session that LISTENs and then stays in an open transaction, reading nothing."""
    conn = connect(autocommit=True)
    conn.execute(f'LISTEN "{FILL_CHANNEL}"')
    conn.execute("BEGIN")
    conn.execute("SELECT 1")
    yield conn
    conn.execute("ROLLBACK")


def test_enqueue_skips_and_counts_notifications_once_the_queue_fills(db, connect, lagging_listener):
    admin = connect()
    admin.execute("SELECT app_jobs.set_setting('notify_max_queue_usage', '0.001')")
    listener = connect()
    listener.execute('LISTEN "jobs:insert"')
    before = skipped(admin)

    # An empty queue: a notification is sent whatever the setting says.
    admin.execute("SELECT app_jobs.set_setting('notify_max_queue_usage', '0')")
    admin.execute("SELECT app_jobs.add_job(identifier := 'early')")
    assert [n.channel for n in listener.notifies(timeout=2, stop_after=1)] == ["jobs:insert"]
    assert skipped(admin) == before
    admin.execute("SELECT app_jobs.set_setting('notify_max_queue_usage', '0.001')")

    fill(admin, 10)  # about 10 MB: 0.12 % of the 8 GB queue
    assert usage(admin) >= 0.001

    job = admin.execute("SELECT id FROM app_jobs.add_job(identifier := 'late')").fetchone()[0]
    assert job is not None, "the enqueue succeeded"
    assert skipped(admin) == before + 1, "its jobs:insert notification was skipped and counted"
    jobs_insert = [n for n in listener.notifies(timeout=0.5) if n.channel == "jobs:insert"]
    assert jobs_insert == [], "no jobs:insert was sent"
    metrics = admin.execute("SELECT app_jobs.metrics()").fetchone()[0]
    assert f"\npgjobs_notifications_skipped_total {before + 1}\n" in metrics

    # A worker's completion is skipped the same way (and still recorded).
    claimed = admin.execute(
        "SELECT id, attempts FROM app_jobs.get_jobs('w', ARRAY['late'])"
    ).fetchone()
    status = admin.execute(
        "SELECT status FROM app_jobs.finish_jobs('w', jsonb_build_array("
        "jsonb_build_object('id', %s::bigint, 'attempt', %s::integer)))", claimed,
    ).fetchone()[0]
    assert status == "completed"
    assert skipped(admin) == before + 2

    # The lagging listener catches up: the queue empties and notifications flow again.
    lagging_listener.execute("ROLLBACK")
    lagging_listener.execute("BEGIN")
    list(lagging_listener.notifies(timeout=0.2))
    admin.execute("SELECT app_jobs.add_job(identifier := 'after')")
    assert skipped(admin) == before + 2
