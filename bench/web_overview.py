"""Case W: the dashboard's overview page (GET /) with 10^6 waiting jobs.

One database with `web_jobs` waiting jobs over 20 tasks (a tenth of them in 4 named
queues), 1,000 permanently failed ones, 20,000 history rows finished in the last hour,
VACUUM ANALYZE'd as autovacuum would leave it. Each run renders the overview through
Starlette's TestClient (in process: the SQL, the template and the ASGI round trip, no
network), after one warm-up. For comparison, the same page with the estimate threshold
lifted (exact counts, the one-pass grouping queue_stats does) and SELECT * FROM
app_jobs.queue_stats alone.
"""

from __future__ import annotations

import time

from bench.config import Config
from bench.util import connect, drop_db, fresh_db, log, summary

DB = "bench_web"


def _fill(n: int) -> None:
    with connect(DB) as conn:
        conn.execute(
            "INSERT INTO app_jobs.jobs (task_identifier, queue_name, payload)"
            " SELECT 'task_' || (i %% 20), CASE WHEN i %% 10 = 0 THEN 'queue_' || (i %% 4) END,"
            " json_build_object('n', i) FROM generate_series(1, %s) AS i", (n,))
        conn.execute(
            "INSERT INTO app_jobs.jobs (task_identifier, attempts, max_attempts, last_error)"
            " SELECT 'task_' || (i % 20), 3, 3, 'boom' FROM generate_series(1, 1000) AS i")
        conn.execute(
            "INSERT INTO app_jobs.job_history (job_id, task_identifier, payload, priority,"
            " status, attempts, max_attempts, created_at, started_at, finished_at)"
            " SELECT 10000000 + i, 'task_' || (i % 20), '{}', 0,"
            " CASE WHEN i % 50 = 0 THEN 'failed' ELSE 'completed' END, 1, 25,"
            " now() - interval '1 hour', now() - interval '2 seconds',"
            " now() - (i % 3600) * interval '1 second' FROM generate_series(1, 20000) AS i")
        conn.execute("VACUUM ANALYZE")


def _time_page(app, runs: int) -> list[float]:
    from starlette.testclient import TestClient

    timings = []
    with TestClient(app) as client:
        assert client.get("/").status_code == 200  # warm-up: pool, plans, templates
        for _ in range(runs):
            start = time.perf_counter()
            response = client.get("/")
            timings.append((time.perf_counter() - start) * 1000)
            assert response.status_code == 200
    return timings


def measure(cfg: Config) -> dict:
    """ms per overview page at cfg.web_jobs waiting jobs: estimated (default) and exact."""
    import pgjobs.web

    fresh_db(DB)
    start = time.perf_counter()
    _fill(cfg.web_jobs)
    log(f"W: {cfg.web_jobs:,} waiting jobs in {time.perf_counter() - start:.1f} s")
    conninfo = f"dbname={DB}"
    runs = max(cfg.runs, 10)
    default = _time_page(pgjobs.web.app(conninfo), runs)
    exact = _time_page(pgjobs.web.app(conninfo, exact_below=10**12, budget_ms=60_000), runs)
    stats = []
    with connect(DB) as conn:
        for _ in range(runs):
            t0 = time.perf_counter()
            conn.execute("SELECT * FROM app_jobs.queue_stats").fetchall()
            stats.append((time.perf_counter() - t0) * 1000)
    log(f"W overview: {[round(t, 1) for t in default]} ms (estimated); exact "
        f"{[round(t, 1) for t in exact]} ms; queue_stats {[round(t, 1) for t in stats]} ms")
    drop_db(DB)
    return {
        "jobs": cfg.web_jobs,
        "overview_ms": summary(default, unit="ms"),
        "overview_exact_ms": summary(exact, unit="ms"),
        "queue_stats_ms": summary(stats, unit="ms"),
    }
