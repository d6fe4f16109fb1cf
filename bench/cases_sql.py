"""Cases driven from SQL alone: F (the floor), A (enqueue), D (claim cost vs table size),
and the scheduler tick."""

from __future__ import annotations

import time

import psycopg
from psycopg.types.json import Jsonb

from bench import scheduler_tick
from bench.config import Config
from bench.util import (
    connect,
    count_jobs,
    drop_db,
    fresh_db,
    log,
    pgbench,
    reset_jobs,
    summary,
)

ADD_JOB_SCRIPT = "SELECT app_jobs.add_job(identifier := 'noop');"
FLOOR_INSERT = "INSERT INTO floor_q (payload) VALUES ('{}');"
FLOOR_CLAIM = (
    "DELETE FROM floor_q WHERE id IN (SELECT id FROM floor_q ORDER BY id LIMIT 100"
    " FOR UPDATE SKIP LOCKED) RETURNING *;"
)
FLOOR_CLAIM_ROWS = 100


# -- F: the floor -----------------------------------------------------------------------


def floor(cfg: Config) -> dict:
    """What PostgreSQL itself does on this machine: single-row INSERTs into a bare table,
    and batched claims (DELETE ... FOR UPDATE SKIP LOCKED, 100 rows) from 8 clients."""
    db = "bench_floor"
    fresh_db(db, extension=False)
    result: dict = {}
    with connect(db) as conn:
        conn.execute("CREATE TABLE floor_q (id bigserial PRIMARY KEY, payload json)")
        for clients in (1, 8):
            tps = []
            for _ in range(cfg.runs):
                conn.execute("TRUNCATE floor_q")
                conn.execute("CHECKPOINT")
                tps.append(pgbench(db, FLOOR_INSERT, clients, cfg.pgbench_seconds))
            result[f"insert_{clients}"] = summary(tps, unit="tps", clients=clients)
            log(f"F insert, {clients} client(s): {[round(v) for v in tps]} tps")
        result["claim_8"] = _floor_claims(conn, db, cfg)
    drop_db(db)
    return result


def _floor_claims(conn: psycopg.Connection, db: str, cfg: Config) -> dict:
    rates: list[float] = []
    dry = 0
    need = 300_000 * cfg.pgbench_seconds  # a first guess; later runs use the rate seen
    conn.execute("TRUNCATE floor_q")
    while len(rates) < cfg.runs:
        have = conn.execute("SELECT count(*) FROM floor_q").fetchone()[0]
        if have < need:
            conn.execute(
                "INSERT INTO floor_q (payload) SELECT '{}' FROM generate_series(1, %s)",
                (need - have,),
            )
        conn.execute("VACUUM ANALYZE floor_q")
        conn.execute("CHECKPOINT")
        tps = pgbench(db, FLOOR_CLAIM, 8, cfg.pgbench_seconds)
        rate = tps * FLOOR_CLAIM_ROWS
        left = conn.execute("SELECT count(*) FROM floor_q").fetchone()[0]
        if left == 0:  # ran dry: empty deletes would inflate tps; prefill more, run again
            dry += 1
            need *= 2
            if dry > 3:
                raise RuntimeError("floor claim kept running out of rows")
            continue
        rates.append(rate)
        need = max(need, int(rate * cfg.pgbench_seconds * 1.5))
    log(f"F batched claim, 8 clients: {[round(r) for r in rates]} rows/s")
    return summary(rates, unit="rows/s", clients=8, rows_per_transaction=FLOOR_CLAIM_ROWS,
                   reruns_after_running_dry=dry)


# -- A: enqueue ---------------------------------------------------------------------------


def enqueue(cfg: Config) -> dict:
    """add_job one job per transaction (pgbench, 1 and 8 clients), and one statement adding
    batch_jobs jobs: the add_job loop, plus a set-based function if the SQL has one."""
    db = "bench_enqueue"
    fresh_db(db)
    result: dict = {}
    with connect(db) as conn:
        for clients in (1, 8):
            tps = []
            for _ in range(cfg.runs):
                reset_jobs(conn)
                tps.append(pgbench(db, ADD_JOB_SCRIPT, clients, cfg.pgbench_seconds))
            result[f"single_{clients}"] = summary(tps, unit="tps", clients=clients)
            log(f"A add_job, {clients} client(s): {[round(v) for v in tps]} tps")

        loop_sql = (
            "SELECT count(app_jobs.add_job(identifier := 'noop'))"
            " FROM generate_series(1, %s)"
        )
        result["batch_loop"] = _time_batches(
            conn, cfg, lambda: conn.execute(loop_sql, (cfg.batch_jobs,)).fetchone(),
            statement=loop_sql % cfg.batch_jobs,
        )
        log(f"A batch loop: {[round(r) for r in result['batch_loop']['runs']]} jobs/s")
        result["batch_set_based"] = _set_based(conn, cfg)
    drop_db(db)
    return result


def _time_batches(conn: psycopg.Connection, cfg: Config, call, **extra) -> dict:
    rates = []
    for _ in range(cfg.runs):
        reset_jobs(conn)
        start = time.perf_counter()
        call()
        elapsed = time.perf_counter() - start
        added = count_jobs(conn)
        if added != cfg.batch_jobs:
            raise RuntimeError(f"batch added {added} jobs, expected {cfg.batch_jobs}")
        rates.append(cfg.batch_jobs / elapsed)
    return summary(rates, unit="jobs/s", jobs=cfg.batch_jobs, **extra)


BULK_FUNCTIONS = ("add_jobs", "add_jobs_bulk", "bulk_add_jobs", "add_job_batch")


def _set_based(conn: psycopg.Connection, cfg: Config) -> dict:
    """Time app_jobs.add_jobs (or a similar name) if the installed SQL has it."""
    rows = conn.execute(
        "SELECT p.proname, p.oid::regprocedure::text,"
        " format_type(p.proargtypes[0], NULL)"
        " FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace"
        " WHERE n.nspname = 'app_jobs' AND p.proname = ANY(%s) AND p.pronargs >= 1"
        " ORDER BY array_position(%s, p.proname::text)",
        (list(BULK_FUNCTIONS), list(BULK_FUNCTIONS)),
    ).fetchall()
    if not rows:
        log("A set-based: no app_jobs.add_jobs-like function in this SQL; skipped")
        return {"skipped": "no set-based enqueue function (looked for "
                + ", ".join(f"app_jobs.{f}" for f in BULK_FUNCTIONS) + ")"}
    name, signature, first_type = rows[0]
    n = cfg.batch_jobs
    if first_type in ("jsonb", "json"):
        attempts = [
            (f"{first_type} array of {{\"identifier\": \"noop\"}}",
             Jsonb([{"identifier": "noop"}] * n)),
            (f"{first_type} array of {{\"task_identifier\": \"noop\"}}",
             Jsonb([{"task_identifier": "noop"}] * n)),
        ]
    elif first_type == "text[]":
        attempts = [("text[] of identifiers", ["noop"] * n)]
    else:
        return {"skipped": f"found {signature}, whose first argument ({first_type}) "
                "the harness does not know how to fill", "function": signature}
    statement = f"SELECT count(*) FROM app_jobs.{name}(%s::{first_type})"
    errors = []
    for how, arg in attempts:
        try:
            result = _time_batches(
                conn, cfg, lambda a=arg: conn.execute(statement, (a,)).fetchone(),
                function=signature, argument=how, statement=statement,
            )
            log(f"A set-based {signature}: {[round(r) for r in result['runs']]} jobs/s")
            return result
        except (psycopg.Error, RuntimeError) as exc:
            errors.append(f"{how}: {str(exc).splitlines()[0]}")
    return {"skipped": f"{signature} refused every argument shape tried", "errors": errors,
            "function": signature}


# -- D: claim cost against table size -----------------------------------------------------


def scale(cfg: Config) -> dict:
    """ms per claimed job (get_jobs + finish_jobs, batch 100) with few and with many rows
    that are never due: half waiting a year ahead, half permanently failed."""
    result: dict = {"sizes": {}}
    for size in cfg.scale_sizes:
        result["sizes"][str(size)] = _scale_one(cfg, size)
    small, big = (result["sizes"][str(s)]["ms_per_job"]["median"] for s in cfg.scale_sizes)
    result["ratio"] = big / small
    result["small"], result["big"] = cfg.scale_sizes
    return result


def _scale_one(cfg: Config, size: int) -> dict:
    db = f"bench_scale_{size}"
    fresh_db(db)
    with connect(db) as conn:
        start = time.perf_counter()
        conn.execute(
            "INSERT INTO app_jobs.jobs (task_identifier, run_at, attempts, max_attempts)"
            " SELECT 'noop', now() + interval '1 year', 0, 25 FROM generate_series(1, %s)",
            (size - size // 2,),
        )
        conn.execute(
            "INSERT INTO app_jobs.jobs (task_identifier, run_at, attempts, max_attempts)"
            " SELECT 'noop', now(), 25, 25 FROM generate_series(1, %s)",
            (size // 2,),
        )
        conn.execute("VACUUM ANALYZE app_jobs.jobs")
        conn.execute(
            "INSERT INTO app_jobs.jobs (task_identifier, run_at)"
            " SELECT 'noop', now() - interval '1 second' FROM generate_series(1, %s)",
            (cfg.scale_due,),
        )
        conn.execute("CHECKPOINT")
        setup_s = time.perf_counter() - start
        _claim_round(conn, cfg.scale_batch)  # warm-up: plan caches, buffers
        per_job, claim_ms, finish_ms, claimed_total = [], [], [], 0
        for _ in range(cfg.runs):
            claimed, t_claim, t_finish = 0, 0.0, 0.0
            deadline = time.perf_counter() + cfg.scale_cap_s
            for _ in range(cfg.scale_rounds):
                n, tc, tf = _claim_round(conn, cfg.scale_batch)
                claimed, t_claim, t_finish = claimed + n, t_claim + tc, t_finish + tf
                if n == 0 or time.perf_counter() > deadline:
                    break
            if claimed == 0:
                raise RuntimeError(f"D: nothing left to claim with {size} rows")
            claimed_total += claimed
            per_job.append((t_claim + t_finish) * 1000 / claimed)
            claim_ms.append(t_claim * 1000 / claimed)
            finish_ms.append(t_finish * 1000 / claimed)
        log(f"D {size} never-due rows: {[round(v, 3) for v in per_job]} ms per claimed job")
    drop_db(db)
    return {
        "rows_never_due": size,
        "ms_per_job": summary(per_job, unit="ms/job"),
        "claim_ms_per_job": summary(claim_ms, unit="ms/job"),
        "finish_ms_per_job": summary(finish_ms, unit="ms/job"),
        "jobs_claimed": claimed_total,
        "setup_s": setup_s,
    }


def _claim_round(conn: psycopg.Connection, batch: int) -> tuple[int, float, float]:
    """One get_jobs + finish_jobs round trip pair, as a worker does it; (claimed, s, s)."""
    start = time.perf_counter()
    rows = conn.execute(
        "SELECT id, attempts FROM app_jobs.get_jobs('bench', NULL, interval '4 hours', %s)",
        (batch,),
    ).fetchall()
    middle = time.perf_counter()
    if not rows:
        return 0, middle - start, 0.0
    outcomes = [{"id": r[0], "attempt": r[1], "outcome": "completed"} for r in rows]
    conn.execute("SELECT * FROM app_jobs.finish_jobs('bench', %s)", (Jsonb(outcomes),))
    return len(rows), middle - start, time.perf_counter() - middle


# -- the scheduler tick -------------------------------------------------------------------


def tick(cfg: Config) -> dict:
    """bench/scheduler_tick.py: one run_due_scheduled_jobs over 10,000 schedules, 100 due."""
    timings = scheduler_tick.measure()
    log(f"scheduler tick: {[round(t, 1) for t in timings]} ms")
    return summary(timings, unit="ms", schedules=scheduler_tick.N_SCHEDULES,
                   due=scheduler_tick.N_DUE)
