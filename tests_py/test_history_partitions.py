"""job_history partitions: retention of 10^6 rows drops whole days fast and leaves no dead tuples.

10^6 history rows finished over 10 past days, plus today's, sit in day partitions made by
_ensure_history_partitions (rows first landed in the default partition and were moved);
purge_job_history with history_retention 3 days removes exactly the older rows in under a
second, drops their partitions, and the partitions left have no dead tuples
(pgstattuple); an insert for a day no partition covers lands in the
default partition, and job_status and queue_stats still read history. Making partitions
(moving a day's rows out of the default partition, then making the days ahead) while
other sessions read job_history never deadlocks (real concurrent sessions).
"""

from __future__ import annotations

import threading
import time

import psycopg

N_OLD = 1_000_000


def test_retention_of_a_million_rows_drops_partitions(db, sql):
    sql("SELECT app_jobs.set_setting('history_retention', '3 days')")
    # Whole UTC days from 10 to 4 days ago (all older than the cutoff), and today's.
    sql("""INSERT INTO app_jobs.job_history (job_id, task_identifier, payload, priority,
               status, attempts, max_attempts, created_at, finished_at)
           SELECT g, 't', '{}', 0, 'completed', 1, 25, d,
                  d + (g %% 86400) * interval '1 second'
           FROM generate_series(1, %s) AS g,
                LATERAL (SELECT date_trunc('day', now() AT TIME ZONE 'UTC')
                         AT TIME ZONE 'UTC' - (4 + g %% 7) * interval '1 day' AS d) AS x""",
        (N_OLD,))
    sql("""INSERT INTO app_jobs.job_history (job_id, task_identifier, payload, priority,
               status, attempts, max_attempts, created_at)
           SELECT g, 'recent', '{}', 0, 'completed', 1, 25, now()
           FROM generate_series(1, 10) AS g""")
    # The rows went to the default partition; housekeeping makes their days' partitions.
    assert sql("SELECT count(*) FROM app_jobs.job_history_default")[0][0] == N_OLD + 10
    sql("SELECT app_jobs._ensure_history_partitions()")
    # (Days older than retention are not given partitions: those rows stay in default.)
    kept_default = sql("SELECT count(*) FROM app_jobs.job_history_default")[0][0]
    assert kept_default == N_OLD, "today's rows moved to today's partition"

    # Give the old days partitions too (as a week of hourly housekeeping would have).
    sql("SELECT app_jobs.set_setting('history_retention', '30 days')")
    sql("SELECT app_jobs._ensure_history_partitions()")
    assert sql("SELECT count(*) FROM app_jobs.job_history_default")[0][0] == 0
    sql("SELECT app_jobs.set_setting('history_retention', '3 days')")
    sql("VACUUM ANALYZE app_jobs.job_history")

    started = time.monotonic()
    purged = sql("SELECT app_jobs.purge_job_history()")[0][0]
    took = time.monotonic() - started
    print(f"purge_job_history of {purged} rows took {took:.3f} s")
    assert purged == N_OLD
    assert took < 1.0, f"retention of {N_OLD} rows took {took:.2f} s"
    assert sql("SELECT count(*), min(task_identifier) FROM app_jobs.job_history") == [
        (10, "recent")]

    # Dead tuples counted exactly (pgstattuple reads every page; the statistics views
    # lag behind by up to a second per backend).
    sql("CREATE EXTENSION IF NOT EXISTS pgstattuple")
    left = sql("""SELECT c.relname, (pgstattuple(c.oid)).dead_tuple_count
                  FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid
                  WHERE i.inhparent = 'app_jobs.job_history'::regclass AND c.relkind = 'r'
                  ORDER BY 1""")
    assert left and all(dead == 0 for _, dead in left), left
    assert len(left) == 1 + 4, f"default, today and 3 days ahead: {left}"
    # Readers: job_status (by job id) and queue_stats (by finish time) see the rows.
    assert sql("SELECT status FROM app_jobs.job_status WHERE id = 3")[0][0] == "completed"
    assert sql("SELECT completed_last_5m FROM app_jobs.queue_stats "
               "WHERE task_identifier = 'recent'")[0][0] == 10
    # An insert far outside the made days lands in the default partition.
    sql("""INSERT INTO app_jobs.job_history (job_id, task_identifier, payload, priority,
               status, attempts, max_attempts, created_at, finished_at)
           VALUES (1, 'future', '{}', 0, 'completed', 1, 25, now(), now() + interval '1 year')""")
    assert sql("SELECT count(*) FROM app_jobs.job_history_default")[0][0] == 1


def test_making_partitions_while_others_read_never_deadlocks(db, conninfo):
    # Each round: today's and the next days' partitions dropped (parent first), rows for
    # today inserted (they land in the default partition), then _ensure_history_partitions
    # moves them into a new today partition and makes the days ahead, while three
    # sessions read job_history over and over (the parent, then each partition).
    stop = threading.Event()
    errors: list[BaseException] = []

    def read() -> None:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            while not stop.is_set():
                try:
                    conn.execute("SELECT count(*) FROM app_jobs.job_history").fetchone()
                except psycopg.Error as exc:
                    errors.append(exc)
                    return

    readers = [threading.Thread(target=read) for _ in range(3)]
    for t in readers:
        t.start()
    rounds = 0
    try:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            deadline = time.monotonic() + 4
            while time.monotonic() < deadline and not errors:
                with conn.transaction():
                    conn.execute("LOCK TABLE app_jobs.job_history IN ACCESS EXCLUSIVE MODE")
                    for (name,) in conn.execute(
                            "SELECT c.relname FROM pg_inherits AS i JOIN pg_class AS c "
                            "ON c.oid = i.inhrelid WHERE i.inhparent = "
                            "'app_jobs.job_history'::regclass "
                            "AND c.relname <> 'job_history_default'").fetchall():
                        conn.execute(f"DROP TABLE app_jobs.{name}")
                conn.execute("""INSERT INTO app_jobs.job_history (job_id, task_identifier,
                                    payload, priority, status, attempts, max_attempts,
                                    created_at)
                                SELECT g, 'r', '{}', 0, 'completed', 1, 25, now()
                                FROM generate_series(1, 20) AS g""")
                try:
                    conn.execute("SELECT app_jobs._ensure_history_partitions()")
                except psycopg.Error as exc:
                    errors.append(exc)
                rounds += 1
    finally:
        stop.set()
        for t in readers:
            t.join(10)
    assert not errors, f"after {rounds} rounds: {errors[0]!r}"
    assert rounds >= 3
