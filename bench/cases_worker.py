"""Cases that run the real `pgjobs-worker`: B (drain), C (wake-up latency), E (churn)."""

from __future__ import annotations

import json
import math
import os
import tempfile
import time

from bench.config import Config
from bench.util import (
    connect,
    count_jobs,
    drop_db,
    fill_jobs,
    fresh_db,
    log,
    reset_jobs,
    start_worker,
    summary,
    wait_listening,
)


def _history_setting(conn) -> str:
    return conn.execute("SELECT app_jobs.setting('history')").fetchone()[0]


def _log_path(name: str) -> str:
    return os.path.join(tempfile.gettempdir(), f"pgjobs-bench-{name}.log")


# -- B: drain ---------------------------------------------------------------------------


def drain(cfg: Config) -> dict:
    """One worker (--burst) drains drain_jobs waiting no-op jobs: jobs/s from starting the
    process to its exit on an empty queue, with default flags and with the best of a few
    candidate flag sets (each tried once on explore_jobs, the winner run cfg.runs times)."""
    db = "bench_drain"
    fresh_db(db)
    with connect(db) as conn:
        history = _history_setting(conn)
        default = _drain_runs(conn, db, [], cfg.drain_jobs, cfg.drain_cap_s, cfg.runs)
        log(f"B default flags: {_rates(default)} jobs/s")
        tries = []
        for flags in cfg.best_candidates:
            run = _drain_once(conn, db, list(flags), cfg.explore_jobs, cfg.explore_cap_s)
            tries.append({"flags": " ".join(flags), **run})
            log(f"B try {' '.join(flags)}: {run['jobs_per_s']:.0f} jobs/s")
        best_flags = max(tries, key=lambda t: t["jobs_per_s"])["flags"].split()
        best = _drain_runs(conn, db, best_flags, cfg.drain_jobs, cfg.drain_cap_s, cfg.runs)
        log(f"B best flags ({' '.join(best_flags)}): {_rates(best)} jobs/s")
    drop_db(db)
    return {
        "default": {**default, "flags": "(defaults)", "history": history},
        "best": {**best, "flags": " ".join(best_flags), "history": history},
        "candidates": tries,
        "jobs": cfg.drain_jobs,
    }


def _rates(result: dict) -> list[int]:
    return [round(r) for r in result["runs"]]


def _drain_runs(conn, db: str, flags: list[str], n: int, cap: float, runs: int) -> dict:
    details = [_drain_once(conn, db, flags, n, cap) for _ in range(runs)]
    return summary([d["jobs_per_s"] for d in details], unit="jobs/s", jobs=n,
                   capped_runs=sum(d["capped"] for d in details), details=details)


def _drain_once(conn, db: str, flags: list[str], n: int, cap: float) -> dict:
    reset_jobs(conn)
    fill_jobs(conn, n)
    conn.execute("CHECKPOINT")
    worker = start_worker(db, flags, _log_path("drain"), burst=True)
    try:
        deadline = worker.started + cap
        while worker.proc.poll() is None and time.perf_counter() < deadline:
            time.sleep(0.02)
        elapsed = time.perf_counter() - worker.started
        capped = worker.proc.poll() is None
        left = count_jobs(conn)  # read before a capped worker is stopped: what it had done
    finally:
        code = worker.stop()
    if not capped and (code != 0 or left):
        raise RuntimeError(f"worker exited {code} with {left} jobs left: {worker.tail()}")
    done = n - left
    return {"jobs_per_s": done / elapsed, "elapsed_s": elapsed, "completed": done,
            "capped": capped}


# -- C: wake-up latency -------------------------------------------------------------------


def latency(cfg: Config) -> dict:
    """An idle default worker; jobs of task `lat` added one per transaction, latency_gap_s
    apart, from another connection. Latency = the handler's first clock read minus the
    producer's clock read just before COMMIT (also shown: minus the moment COMMIT returned).
    """
    db = "bench_latency"
    fresh_db(db)
    lat_file = os.path.join(tempfile.gettempdir(), "pgjobs-bench-latency.txt")
    worker = start_worker(db, [], _log_path("latency"), env={"BENCH_LAT_FILE": lat_file})
    per_run: list[dict] = []
    try:
        wait_listening(db)
        time.sleep(1.0)  # let the first claim (empty) and scheduler tick pass
        with connect(db) as conn:
            conn.autocommit = False
            for run in range(cfg.runs):
                open(lat_file, "w").close()
                sent = _produce_latency_jobs(conn, cfg, run)
                started = _wait_for_lines(lat_file, len(sent), timeout=10.0)
                per_run.append(_latency_stats(sent, started))
                log(f"C run {run + 1}: p50 {per_run[-1]['p50_ms']:.2f} ms, "
                    f"p95 {per_run[-1]['p95_ms']:.2f} ms, max {per_run[-1]['max_ms']:.2f} ms")
                time.sleep(0.5)
        with connect(db) as conn:
            history = _history_setting(conn)
    finally:
        worker.stop()
    drop_db(db)
    result = {key: summary([r[key] for r in per_run], unit="ms")
              for key in ("p50_ms", "p95_ms", "max_ms",
                          "after_commit_p50_ms", "after_commit_p95_ms", "payload_send_p50_ms",
                          "commit_p50_ms")}
    result.update(
        jobs_per_run=cfg.latency_jobs, gap_ms=cfg.latency_gap_s * 1000, flags="(defaults)",
        history=history, missing=sum(r["missing"] for r in per_run), runs=per_run,
        method=("t0 = time.time() just before COMMIT of the add_job transaction (job id -> t0 "
                "kept by the producer); t1 = time.time() first thing in the async handler, "
                "written with the job id to a file; latency = t1 - t0, one host clock. "
                "after_commit_*: from the moment COMMIT returned to the producer; "
                "payload_send_*: from a time carried in the payload, read before add_job."),
    )
    return result


def _produce_latency_jobs(conn, cfg: Config, run: int) -> dict[int, tuple[float, float]]:
    """Add latency_jobs jobs one per transaction; job id -> (before COMMIT, after COMMIT)."""
    sent: dict[int, tuple[float, float]] = {}
    t_next = time.perf_counter()
    for i in range(cfg.latency_jobs):
        payload = json.dumps({"sent": time.time(), "run": run, "seq": i})
        job_id = conn.execute(
            "SELECT id FROM app_jobs.add_job(identifier := 'lat', payload := %s::json)",
            (payload,),
        ).fetchone()[0]
        before = time.time()
        conn.commit()
        sent[job_id] = (before, time.time())
        t_next += cfg.latency_gap_s
        time.sleep(max(0.0, t_next - time.perf_counter()))
    return sent


def _wait_for_lines(path: str, n: int, timeout: float) -> dict[int, tuple[float, float]]:
    """job id -> (payload send time, handler start) from the `lat` handler's file."""
    deadline = time.monotonic() + timeout
    started: dict[int, tuple[float, float]] = {}
    while time.monotonic() < deadline:
        with open(path, encoding="utf-8") as f:
            lines = [line.split() for line in f if line.endswith("\n")]
        started = {int(job_id): (float(sent), float(t)) for job_id, sent, t in lines}
        if len(started) >= n:
            break
        time.sleep(0.05)
    return started


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


def _latency_stats(sent: dict[int, tuple[float, float]],
                   started: dict[int, tuple[float, float]]) -> dict:
    ran = [i for i in sent if i in started]
    before = [(started[i][1] - sent[i][0]) * 1000 for i in ran]
    after = [(started[i][1] - sent[i][1]) * 1000 for i in ran]
    from_send = [(started[i][1] - started[i][0]) * 1000 for i in ran]
    commit = [(a - b) * 1000 for b, a in sent.values()]
    if not before:
        raise RuntimeError("no latency job ran within 10 s")
    return {
        "p50_ms": _percentile(before, 0.50), "p95_ms": _percentile(before, 0.95),
        "max_ms": max(before),
        "after_commit_p50_ms": _percentile(after, 0.50),
        "after_commit_p95_ms": _percentile(after, 0.95),
        "payload_send_p50_ms": _percentile(from_send, 0.50),
        "commit_p50_ms": _percentile(commit, 0.50),
        "jobs": len(sent), "missing": len(sent) - len(before),
    }


# -- E: churn -----------------------------------------------------------------------------


def churn(cfg: Config) -> dict:
    """A producer keeps about churn_backlog jobs waiting (adding as fast as one default
    worker drains) for churn_seconds; throughput of the last window over the first, and
    what the tables weigh at the end."""
    db = "bench_churn"
    fresh_db(db)
    worker = start_worker(db, [], _log_path("churn"))
    try:
        wait_listening(db)
        with connect(db) as conn:
            samples, added, starved = _produce_churn(conn, cfg)
            sizes = _table_sizes(conn)
            history = _history_setting(conn)
    finally:
        code = worker.stop()
    drop_db(db)
    if code != 0:
        raise RuntimeError(f"churn worker exited {code}: {worker.tail()}")
    window = min(cfg.churn_window_s, cfg.churn_seconds / 2)
    end = samples[-1][0]
    first = (_done_at(samples, window) - _done_at(samples, 0.0)) / window
    last = (_done_at(samples, end) - _done_at(samples, end - window)) / window
    series = [
        round((_done_at(samples, t + 10) - _done_at(samples, t)) / 10, 1)
        for t in range(0, int(end) - 9, 10)
    ]
    log(f"E churn: first {first:.0f} jobs/s, last {last:.0f} jobs/s")
    return {
        "seconds": end, "window_s": window, "first_jobs_per_s": first,
        "last_jobs_per_s": last, "ratio": last / first if first else 0.0,
        "jobs_added": added, "jobs_done": samples[-1][1], "backlog_target": cfg.churn_backlog,
        "starved_samples_pct": 100.0 * starved / len(samples),
        "rate_every_10s": series, "tables_at_end": sizes, "flags": "(defaults)",
        "history": history, "runs": 1,
    }


def _produce_churn(conn, cfg: Config) -> tuple[list[tuple[float, int]], int, int]:
    """Top the queue up to churn_backlog every 50 ms; samples of (seconds, jobs done)."""
    added, starved = 0, 0
    samples: list[tuple[float, int]] = []
    start = time.perf_counter()
    while True:
        now = time.perf_counter() - start
        waiting = count_jobs(conn)
        samples.append((now, added - waiting))
        starved += waiting == 0
        if now >= cfg.churn_seconds:
            return samples, added, starved
        if waiting < cfg.churn_backlog:
            k = cfg.churn_backlog - waiting
            conn.execute(
                "SELECT count(app_jobs.add_job(identifier := 'noop'))"
                " FROM generate_series(1, %s)", (k,),
            )
            added += k
        time.sleep(0.05)


def _done_at(samples: list[tuple[float, int]], t: float) -> float:
    """Jobs done by time t, interpolated between samples."""
    prev = samples[0]
    for sample in samples:
        if sample[0] >= t:
            if sample[0] == prev[0]:
                return float(sample[1])
            share = (t - prev[0]) / (sample[0] - prev[0])
            return prev[1] + share * (sample[1] - prev[1])
        prev = sample
    return float(samples[-1][1])


def _table_sizes(conn) -> dict:
    rows = conn.execute(
        "SELECT c.relname, pg_total_relation_size(c.oid), pg_relation_size(c.oid),"
        " s.n_live_tup, s.n_dead_tup"
        " FROM pg_class AS c JOIN pg_stat_user_tables AS s ON s.relid = c.oid"
        " WHERE s.schemaname = 'app_jobs' AND c.relname IN ('jobs', 'job_history')"
    ).fetchall()
    sizes = {}
    for name, total, heap, live, dead in rows:
        exact = conn.execute(f"SELECT count(*) FROM app_jobs.{name}").fetchone()[0]
        sizes[name] = {"total_bytes": total, "heap_bytes": heap, "rows": exact,
                       "stats_live_rows": live, "stats_dead_rows": dead}
    return sizes
