"""Helpers for the fault-injection suite (test_faults.py): worker processes, claim logs,
database polling that survives a server restart, and pg_ctl.

Claim log: every handler of a task module written by `write_tasks` can call
`claim_log(job, "start")` / `claim_log(job, "end")`, which appends one line
`job_id attempt pid start|end monotonic_seconds` to the log file with a single write on an
O_APPEND descriptor, so lines of concurrent processes and threads never interleave.
CLOCK_MONOTONIC is system-wide on Linux, so the times of all processes (and the test's
own `time.monotonic()`) are comparable.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import textwrap
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import psycopg
from workerproc import (
    WORKER,
    wait_for,  # noqa: F401 - the fault tests import it from here
)

SOAK = os.environ.get("PGJOBS_SOAK", "").lower() in ("1", "true", "yes")

_PRELUDE = """\
import asyncio, os, random, sys, threading, time
import pgjobs

_CLAIM_LOG = os.open({log!r}, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)


def claim_log(job, event):
    os.write(_CLAIM_LOG, (
        f"{{job.id}} {{job.attempts}} {{os.getpid()}} {{event}} {{time.monotonic():.6f}}\\n"
    ).encode())

"""


def write_tasks(tmp_path: Path, claim_log: Path, body: str, name: str = "fault_tasks") -> Path:
    """A task module with `claim_log(job, event)` defined, then `body`."""
    path = tmp_path / f"{name}.py"
    path.write_text(_PRELUDE.format(log=str(claim_log)) + textwrap.dedent(body))
    return path


def report(tag: str, name: str, **figures: object) -> None:
    """The figures of one test, on one line (visible with pytest -s)."""
    print(f"\n[{tag}] {name}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))


# -- the claim log -------------------------------------------------------------------------

@dataclass
class Claim:
    """One attempt of one job in one process, as the claim log tells it."""

    job_id: int
    attempt: int
    pid: int
    start: float
    end: float | None = None


def read_claims(path: Path) -> list[Claim]:
    """Claims in log order; a start without an end (process killed, job released) has
    end None. Fails on a malformed line or an end without a start."""
    if not path.exists():
        return []
    claims: list[Claim] = []
    open_claims: dict[tuple[int, int, int], Claim] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        assert len(parts) == 5 and parts[3] in ("start", "end"), f"bad log line {n}: {line!r}"
        job_id, attempt, pid = int(parts[0]), int(parts[1]), int(parts[2])
        at = float(parts[4])
        key = (job_id, attempt, pid)
        if parts[3] == "start":
            assert key not in open_claims, f"line {n}: claim {key} started twice"
            claim = Claim(job_id, attempt, pid, at)
            open_claims[key] = claim
            claims.append(claim)
        else:
            claim = open_claims.pop(key, None)
            assert claim is not None, f"line {n}: end of claim {key} that never started"
            claim.end = at
    return claims


def by_job(claims: Iterable[Claim]) -> dict[int, list[Claim]]:
    jobs: dict[int, list[Claim]] = defaultdict(list)
    for c in claims:
        jobs[c.job_id].append(c)
    return jobs


def overlaps(claims: Iterable[Claim], died_at: dict[int, float] | None = None,
             ) -> list[tuple[Claim, Claim]]:
    """Pairs of claims of one job whose [start, end] intervals overlap. A claim without an
    end lasts until its process died (died_at[pid]) or, if it did not die, forever."""
    died_at = died_at or {}
    found = []
    for job_claims in by_job(claims).values():
        if len(job_claims) < 2:
            continue
        ordered = sorted(job_claims, key=lambda c: c.start)
        for prev, cur in pairwise(ordered):
            prev_end = prev.end if prev.end is not None else died_at.get(prev.pid, float("inf"))
            if cur.start < prev_end:
                found.append((prev, cur))
    return found


def duplicates(claims: Iterable[Claim]) -> dict[int, list[Claim]]:
    """Jobs started by more than one process."""
    return {job_id: cs for job_id, cs in by_job(claims).items()
            if len({c.pid for c in cs}) > 1}


# -- worker processes ----------------------------------------------------------------------

class WorkerProc:
    """One pgjobs-worker process; stdout and stderr go to a file (a pipe nobody reads
    would fill up and block the worker)."""

    def __init__(self, conninfo: str, tasks: Path, log_dir: Path, worker_id: str,
                 *extra: str):
        self.worker_id = worker_id
        self.log_path = log_dir / f"{worker_id}.log"
        self._log = open(self.log_path, "ab")  # closed in wait()
        self.proc = subprocess.Popen(
            [WORKER, "--database-url", conninfo, "--tasks", str(tasks),
             "--worker-id", worker_id, *extra],
            stdout=self._log, stderr=subprocess.STDOUT,
        )
        self.pid = self.proc.pid
        self.started = time.monotonic()
        self.died_at: float | None = None

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> float:
        """Send sig; the monotonic time it was sent."""
        at = time.monotonic()
        self.proc.send_signal(sig)
        return at

    def kill9(self) -> float:
        """SIGKILL and reap; the time of the kill."""
        at = self.signal(signal.SIGKILL)
        self.wait(10)
        self.died_at = at
        return at

    def wait(self, timeout: float) -> int:
        code = self.proc.wait(timeout)
        if self.died_at is None:
            self.died_at = time.monotonic()
        self._log.close()
        return code

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM and wait; the exit code."""
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def cleanup(self) -> None:
        if self.alive():
            self.proc.kill()
        try:
            self.wait(10)
        except subprocess.TimeoutExpired:
            pass


class Fleet:
    """Starts workers with unique ids; every one is killed at teardown, whatever happened."""

    def __init__(self, conninfo: str, tasks: Path, log_dir: Path, prefix: str,
                 *extra: str):
        self.conninfo, self.tasks, self.log_dir = conninfo, tasks, log_dir
        self.prefix, self.extra = prefix, extra
        self.all: list[WorkerProc] = []

    def start(self, *more: str) -> WorkerProc:
        worker = WorkerProc(self.conninfo, self.tasks, self.log_dir,
                            f"{self.prefix}-{len(self.all) + 1}", *self.extra, *more)
        self.all.append(worker)
        return worker

    def by_pid(self) -> dict[int, WorkerProc]:
        return {w.pid: w for w in self.all}

    def by_id(self) -> dict[str, WorkerProc]:
        return {w.worker_id: w for w in self.all}

    def logs(self) -> str:
        return "".join(f"--- {w.worker_id} (pid {w.pid})\n{w.log_text()[-3000:]}"
                       for w in self.all)

    def cleanup(self) -> None:
        for worker in self.all:
            worker.cleanup()


# -- the database --------------------------------------------------------------------------

class Db:
    """Autocommit queries on one connection that is reopened after a failure (the server
    may be restarting): `value`/`rows` raise, `try_value` returns None while it is down."""

    def __init__(self, conninfo: str):
        self.conninfo = conninfo
        self._conn: psycopg.Connection | None = None

    def rows(self, query: str, params: object = None) -> list[tuple]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5)
        try:
            cur = self._conn.execute(query, params)
            return cur.fetchall() if cur.description else []
        except psycopg.OperationalError:
            self.close()
            raise

    def value(self, query: str, params: object = None):
        return self.rows(query, params)[0][0]

    def try_value(self, query: str, params: object = None):
        try:
            return self.value(query, params)
        except psycopg.OperationalError:
            return None

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # noqa: BLE001 - a broken connection may fail to close
                pass
            self._conn = None


def enqueue(db: Db, n: int, task: str, **named: object) -> None:
    """n jobs of task in one statement; payload {"n": i}; named: extra add_job arguments
    given as SQL literals (e.g. priority=1)."""
    args = "".join(f", {k} := {v}" for k, v in named.items())
    db.rows(f"SELECT count(app_jobs.add_job(identifier := %s, "
            f"payload := json_build_object('n', i){args})) "
            f"FROM generate_series(1, %s) AS i", (task, n))


def completed_counts(db: Db) -> dict[int, int]:
    """job id -> number of completed history rows."""
    return dict(db.rows("SELECT job_id, count(*) FROM app_jobs.job_history "
                        "WHERE status = 'completed' GROUP BY job_id"))


# -- the server ------------------------------------------------------------------------------

class Cluster:
    """pg_ctl on the cluster of the test run (PGJOBS_CLUSTER_DIR/data, PGJOBS_PG_BINDIR),
    as the postgres OS user when we are root (the server refuses to run as root)."""

    def __init__(self) -> None:
        cluster_dir = os.environ.get("PGJOBS_CLUSTER_DIR")
        bindir = os.environ.get("PGJOBS_PG_BINDIR")
        self.available = bool(cluster_dir and bindir)
        if not self.available:
            return
        self.data = os.path.join(cluster_dir, "data")
        self.pg_ctl = os.path.join(bindir, "pg_ctl")
        log_dir = os.path.join(cluster_dir, "log")
        self.logfile = os.path.join(log_dir if os.path.isdir(log_dir) else self.data,
                                    "server.log")

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        cmd = [self.pg_ctl, "-D", self.data, *args]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)

    def running(self) -> bool:
        return self._run("status").returncode == 0

    def restart(self) -> float:
        """pg_ctl restart -m fast, waiting until the server is up; seconds it took."""
        t0 = time.monotonic()
        res = self._run("restart", "-m", "fast", "-w", "-t", "60", "-l", self.logfile)
        assert res.returncode == 0, f"pg_ctl restart failed: {res.stdout}{res.stderr}"
        return time.monotonic() - t0

    def ensure_up(self) -> None:
        """Start the server if it is down (whatever a failed test left behind)."""
        if not self.available or self.running():
            return
        res = self._run("start", "-w", "-t", "60", "-l", self.logfile)
        if res.returncode != 0 and not self.running():
            raise RuntimeError(f"cannot start the cluster again: {res.stdout}{res.stderr}")


def seeded_random() -> tuple[random.Random, int]:
    """A Random and its seed (PGJOBS_FAULT_SEED to replay a run)."""
    seed = int(os.environ.get("PGJOBS_FAULT_SEED") or random.randrange(1 << 30))
    return random.Random(seed), seed
