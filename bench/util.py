"""Shared helpers: run statistics, fresh databases, pgbench and worker subprocesses."""

from __future__ import annotations

import os
import re
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

REPO = Path(__file__).resolve().parent.parent
WORKER = REPO / ".venv" / "bin" / "pgjobs-worker"
TASKS = REPO / "bench" / "tasks.py"


def summary(values: list[float], **extra) -> dict:
    """Median, min and max of a case's runs (every run value is kept too)."""
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "runs": values,
        **extra,
    }


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- databases -------------------------------------------------------------------------


def connect(dbname: str, **kwargs) -> psycopg.Connection:
    return psycopg.connect("", dbname=dbname, autocommit=True, **kwargs)


def fresh_db(dbname: str, extension: bool = True) -> None:
    """Drop and create dbname (with CREATE EXTENSION pgjobs unless told otherwise)."""
    with connect("postgres") as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(dbname)))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    if extension:
        with connect(dbname) as conn:
            conn.execute("CREATE EXTENSION pgjobs")


def drop_db(dbname: str) -> None:
    with connect("postgres") as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(dbname)))


def reset_jobs(conn: psycopg.Connection) -> None:
    """Empty the queue and its history, and start the next run from a clean checkpoint."""
    conn.execute("TRUNCATE app_jobs.jobs, app_jobs.job_history")
    conn.execute("VACUUM ANALYZE app_jobs.jobs")
    conn.execute("CHECKPOINT")


def fill_jobs(conn: psycopg.Connection, n: int, task: str = "noop") -> None:
    """n waiting jobs, inserted set-based (the setup of a drain, not what is measured)."""
    conn.execute(
        "INSERT INTO app_jobs.jobs (task_identifier) SELECT %s FROM generate_series(1, %s)",
        (task, n),
    )
    conn.execute("VACUUM ANALYZE app_jobs.jobs")


def count_jobs(conn: psycopg.Connection) -> int:
    return conn.execute("SELECT count(*) FROM app_jobs.jobs").fetchone()[0]


# -- pgbench ----------------------------------------------------------------------------


def find_pgbench() -> str:
    candidates = [os.environ.get("PGBENCH", "")]
    if os.environ.get("PGJOBS_PG_BINDIR"):
        candidates.append(os.path.join(os.environ["PGJOBS_PG_BINDIR"], "pgbench"))
    try:
        bindir = subprocess.run(
            ["pg_config", "--bindir"], capture_output=True, text=True, check=True
        ).stdout.strip()
        candidates.append(os.path.join(bindir, "pgbench"))
    except (OSError, subprocess.CalledProcessError):
        pass
    candidates.append(shutil.which("pgbench") or "")
    for path in candidates:
        if path and os.access(path, os.X_OK):
            return path
    raise RuntimeError("pgbench not found (next to pg_config --bindir, or set PGBENCH)")


def pgbench(dbname: str, script: str, clients: int, seconds: float) -> float:
    """Run one custom pgbench script (-M prepared, no vacuum) and return its tps."""
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write(script + "\n")
        path = f.name
    try:
        cmd = [
            find_pgbench(), "-n", "-M", "prepared", "-f", path,
            "-c", str(clients), "-j", str(min(clients, 2)), "-T", str(int(seconds)), dbname,
        ]
        out = subprocess.run(cmd, capture_output=True, text=True)
    finally:
        os.unlink(path)
    if out.returncode != 0:
        raise RuntimeError(f"pgbench failed ({out.returncode}): {out.stderr.strip()[-500:]}")
    match = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", out.stdout)
    if not match:
        raise RuntimeError(f"pgbench printed no tps: {out.stdout[-500:]}")
    return float(match.group(1))


# -- the worker ---------------------------------------------------------------------------


@dataclass
class WorkerRun:
    """One pgjobs-worker subprocess and what it left in its log."""

    proc: subprocess.Popen
    log_path: str
    started: float

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def tail(self, lines: int = 5) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return "".join(f.readlines()[-lines:]).strip()
        except OSError:
            return ""


def start_worker(dbname: str, flags: list[str], log_path: str, burst: bool = False,
                 env: dict | None = None) -> WorkerRun:
    """pgjobs-worker --tasks bench/tasks.py [--burst] FLAGS against dbname, logging to a file."""
    # PGJOBS_* variables are worker options: none may leak in from the caller.
    child_env = {k: v for k, v in os.environ.items()
                 if k != "DATABASE_URL" and not k.startswith("PGJOBS_")}
    child_env["PGDATABASE"] = dbname
    child_env.update(env or {})
    cmd = [str(WORKER), "--tasks", str(TASKS), *(["--burst"] if burst else []), *flags]
    with open(log_path, "w", encoding="utf-8") as out:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=child_env,
                                cwd=str(REPO))
    return WorkerRun(proc, log_path, started)


def wait_listening(dbname: str, timeout: float = 15.0) -> None:
    """Until a worker session of dbname has issued its LISTEN (so it is idle and awake)."""
    deadline = time.monotonic() + timeout
    with connect("postgres") as conn:
        while time.monotonic() < deadline:
            n = conn.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = %s AND query ILIKE 'LISTEN%%'", (dbname,),
            ).fetchone()[0]
            if n:
                return
            time.sleep(0.05)
    raise RuntimeError(f"no worker LISTENed on {dbname} within {timeout:g} s")
