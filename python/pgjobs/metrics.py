"""Prometheus metrics of one worker process, served over HTTP by `--metrics-port`.

Each worker has its own CollectorRegistry (not prometheus_client's global default), so
several workers can live in one process, as they do in tests. The per-job cost is a few
counter increments: the labelled children of each task are looked up once and cached.
A worker without a metrics port uses NO_METRICS, whose hooks do nothing.

Queue-wide numbers (jobs per state, oldest waiting job, workers, finished jobs) are not
per worker: they come from the database, `SELECT app_jobs.metrics()`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

# prometheus_client is imported by WorkerMetrics only: a worker without --metrics-port
# does not pay for it at start.

log = logging.getLogger("pgjobs.metrics")

# Handler run times: from milliseconds to an hour.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                    60.0, 300.0, 900.0, 3600.0)
# Claim round trips (get_jobs): well under a second when healthy.
CLAIM_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                 2.5, 5.0, 10.0)


class MetricsServerError(RuntimeError):
    """The /metrics endpoint could not be served (address in use, bad host, ...)."""


class _TaskMetrics:
    """The labelled children of one task, looked up once."""

    __slots__ = ("started", "completed", "failed", "duration")

    def __init__(self, m: WorkerMetrics, task: str):
        self.started = m.jobs_started.labels(task)
        self.completed = m.jobs_completed.labels(task)
        self.failed = m.jobs_failed.labels(task)
        self.duration = m.job_duration.labels(task)


class WorkerMetrics:
    """The worker's counters, histograms and gauges, in a registry of their own."""

    enabled = True

    def __init__(self, running: Callable[[], float] | None = None,
                 connected: Callable[[], float] | None = None,
                 owed: Callable[[], float] | None = None,
                 prefetched: Callable[[], float] | None = None,
                 listen_ok: Callable[[], float] | None = None):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.jobs_started = Counter(
            "pgjobs_worker_jobs_started", "Jobs this worker claimed and started, by task",
            ["task"], registry=r)
        self.jobs_completed = Counter(
            "pgjobs_worker_jobs_completed",
            "Attempts of this worker recorded as completed, by task", ["task"], registry=r)
        self.jobs_failed = Counter(
            "pgjobs_worker_jobs_failed",
            "Attempts of this worker recorded as failed (retrying or for good), by task",
            ["task"], registry=r)
        self.jobs_cancelled = Counter(
            "pgjobs_worker_jobs_cancelled", "Attempts of this worker recorded as cancelled",
            registry=r)
        self.jobs_fenced = Counter(
            "pgjobs_worker_jobs_fenced",
            "Attempts whose claim this worker had lost (rescued or expired): outcome dropped",
            registry=r)
        self.job_duration = Histogram(
            "pgjobs_worker_job_duration_seconds",
            "Run time of each attempt that produced an outcome, by task", ["task"],
            buckets=DURATION_BUCKETS, registry=r)
        self.claim_seconds = Histogram(
            "pgjobs_worker_claim_seconds", "Round trip of each claim (app_jobs.get_jobs)",
            buckets=CLAIM_BUCKETS, registry=r)
        self.running = Gauge(
            "pgjobs_worker_running", "Jobs this worker is running now", registry=r)
        self.prefetched = Gauge(
            "pgjobs_worker_prefetched",
            "Jobs this worker has claimed and not started yet (its prefetch buffer)",
            registry=r)
        self.connected = Gauge(
            "pgjobs_worker_connected", "1 while the worker's database connections are up",
            registry=r)
        self.listen_ok = Gauge(
            "pgjobs_worker_listen_ok",
            "1 while notifications wake the worker, 0 while it polls (LISTEN silent behind "
            "a pooler, or --no-listen)", registry=r)
        self.outcomes_owed = Gauge(
            "pgjobs_worker_outcomes_owed",
            "Outcomes of finished handlers the database has not taken yet", registry=r)
        self.statements_refused = Counter(
            "pgjobs_worker_statements_refused",
            "Statements the database refused on a live connection, by statement and SQLSTATE",
            ["statement", "sqlstate"], registry=r)
        self.notification_queue_usage = Gauge(
            "pgjobs_worker_notification_queue_usage",
            "pg_notification_queue_usage() as last read by the worker", registry=r)
        if running is not None:
            self.running.set_function(_safe(running))
        if connected is not None:
            self.connected.set_function(_safe(connected))
        if owed is not None:
            self.outcomes_owed.set_function(_safe(owed))
        if prefetched is not None:
            self.prefetched.set_function(_safe(prefetched))
        if listen_ok is not None:
            self.listen_ok.set_function(_safe(listen_ok))
        self._tasks: dict[str, _TaskMetrics] = {}
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.address: tuple[str, int] | None = None

    # -- hooks the worker calls ---------------------------------------------------------

    def _task(self, task: str) -> _TaskMetrics:
        m = self._tasks.get(task)
        if m is None:
            m = self._tasks[task] = _TaskMetrics(self, task)
        return m

    def job_started(self, task: str) -> None:
        self._task(task).started.inc()

    def job_ran(self, task: str, seconds: float) -> None:
        """An attempt ended with an outcome (not fenced while it ran)."""
        self._task(task).duration.observe(seconds)

    def job_recorded(self, task: str, status: str) -> None:
        """The database recorded an outcome: completed, cancelled, failed or retrying."""
        if status == "completed":
            self._task(task).completed.inc()
        elif status == "cancelled":
            self.jobs_cancelled.inc()
        else:
            self._task(task).failed.inc()

    def job_fenced(self) -> None:
        self.jobs_fenced.inc()

    def claimed(self, seconds: float) -> None:
        self.claim_seconds.observe(seconds)

    def notification_usage(self, value: float) -> None:
        self.notification_queue_usage.set(value)

    def statement_refused(self, statement: str, sqlstate: str) -> None:
        self.statements_refused.labels(statement, sqlstate).inc()

    # -- the endpoint -------------------------------------------------------------------

    def serve(self, port: int, host: str = "127.0.0.1") -> tuple[str, int]:
        """Serve /metrics on a daemon thread (port 0: any free port); the bound address."""
        from prometheus_client.exposition import start_http_server

        try:
            server = start_http_server(port, addr=host, registry=self.registry)
        except (OSError, ValueError) as exc:
            raise MetricsServerError(f"cannot serve metrics on {host}:{port}: {exc}") from exc
        if isinstance(server, tuple):  # prometheus_client >= 0.20 returns (server, thread)
            self._server, self._thread = server
            self.address = self._server.server_address[:2]
        else:
            self.address = (host, port)
        return self.address

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def text(self) -> str:
        """The exposition text, as /metrics serves it."""
        from prometheus_client.exposition import generate_latest

        return generate_latest(self.registry).decode()


class _NoMetrics:
    """Stands in for WorkerMetrics when no metrics port is set: every hook is a no-op."""

    enabled = False
    address = None

    def job_started(self, task: str) -> None:
        pass

    def job_ran(self, task: str, seconds: float) -> None:
        pass

    def job_recorded(self, task: str, status: str) -> None:
        pass

    def job_fenced(self) -> None:
        pass

    def claimed(self, seconds: float) -> None:
        pass

    def notification_usage(self, value: float) -> None:
        pass

    def statement_refused(self, statement: str, sqlstate: str) -> None:
        pass

    def close(self) -> None:
        pass


NO_METRICS = _NoMetrics()


def _safe(read: Callable[[], float]) -> Callable[[], float]:
    """A gauge callback that never breaks a scrape (it runs on the HTTP thread)."""

    def value() -> float:
        try:
            return float(read())
        except Exception:  # noqa: BLE001 - a scrape must not fail on a racing read
            return float("nan")

    return value


class Stats:
    """The counts of the worker's closing summary, and the Prometheus counters that go
    with them, each counted once, when it became final: an attempt's outcome when the
    database took it (finish_jobs' answer), a fenced attempt when finish_jobs or the
    heartbeat said the claim was lost, released and returned jobs when the release
    committed. Nothing is counted ahead and corrected later."""

    def __init__(self, metrics: Any = NO_METRICS):
        self.metrics = metrics
        self.completed = 0
        self.failed = 0
        self.cancelled = 0
        self.fenced = 0
        self.released = 0  # running at shutdown, handed back (attempt refunded)
        self.returned = 0  # buffered, never started, handed back at shutdown
        self.started = time.monotonic()

    def count_recorded(self, task: str, outcome: str, status: str) -> None:
        """finish_jobs recorded `outcome` (completed, failed or cancelled) as `status`."""
        if outcome == "completed":
            self.completed += 1
        elif outcome == "cancelled":
            self.cancelled += 1
        else:
            self.failed += 1
        if self.metrics.enabled:
            self.metrics.job_recorded(task, status)

    def count_fenced(self) -> None:
        self.fenced += 1
        self.metrics.job_fenced()

    def summary(self) -> dict[str, int]:
        return {"completed": self.completed, "failed": self.failed,
                "cancelled": self.cancelled, "fenced": self.fenced,
                "released": self.released, "returned": self.returned}
