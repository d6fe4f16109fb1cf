"""Time one scheduler tick (app_jobs.run_due_scheduled_jobs) over 10,000 schedules, 100 due.

Usage: bench/scheduler_tick.py [DBNAME]

Connects with the PG* environment variables. Without DBNAME it creates a temporary
database pgjobs_bench_tick with CREATE EXTENSION pgjobs and drops it afterwards; with
DBNAME it uses that database (pgjobs installed) and leaves it as found except for the
schedules and jobs it adds, which it deletes.
"""

from __future__ import annotations

import statistics
import sys
import time

import psycopg
from psycopg import sql

N_SCHEDULES = 10_000
N_DUE = 100
REPEATS = 5
TEMP_DB = "pgjobs_bench_tick"
IDENT = "bench_tick"


def bench(conn: psycopg.Connection) -> list[float]:
    conn.execute(
        "INSERT INTO app_jobs.scheduled_jobs (task_identifier, schedule_info)"
        " SELECT %s, '{\"rule\": \"0 3 * * *\"}'::json FROM generate_series(1, %s)",
        (IDENT, N_SCHEDULES),
    )
    conn.execute("ANALYZE app_jobs.scheduled_jobs")
    timings = []
    for _ in range(REPEATS):
        with conn.transaction():
            conn.execute("DELETE FROM app_jobs.jobs WHERE task_identifier = %s", (IDENT,))
            conn.execute(
                "UPDATE app_jobs.scheduled_jobs SET next_run_at = now() - interval '1 minute'"
                " WHERE id IN (SELECT id FROM app_jobs.scheduled_jobs"
                " WHERE task_identifier = %s ORDER BY id LIMIT %s)",
                (IDENT, N_DUE),
            )
        start = time.perf_counter()
        created = conn.execute(
            "SELECT count(*) FROM app_jobs.run_due_scheduled_jobs()"
        ).fetchone()[0]
        timings.append((time.perf_counter() - start) * 1000)
        assert created == N_DUE, f"tick created {created} jobs, expected {N_DUE}"
    conn.execute("DELETE FROM app_jobs.jobs WHERE task_identifier = %s", (IDENT,))
    conn.execute("DELETE FROM app_jobs.scheduled_jobs WHERE task_identifier = %s", (IDENT,))
    return timings


def measure(dbname: str | None = None) -> list[float]:
    """The tick timings in ms; without dbname, in a temporary database of its own."""
    temp = dbname is None
    if temp:
        dbname = TEMP_DB
        with psycopg.connect("", autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(dbname)))
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    try:
        with psycopg.connect("", dbname=dbname, autocommit=True) as conn:
            if temp:
                conn.execute("CREATE EXTENSION pgjobs")
            return bench(conn)
    finally:
        if temp:
            with psycopg.connect("", autocommit=True) as admin:
                admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(
                    sql.Identifier(dbname)))


def main() -> None:
    timings = measure(sys.argv[1] if len(sys.argv) > 1 else None)
    print(
        f"scheduler tick: {N_SCHEDULES} schedules, {N_DUE} due: "
        f"median {statistics.median(timings):.1f} ms "
        f"(min {min(timings):.1f}, max {max(timings):.1f})"
    )


if __name__ == "__main__":
    main()
