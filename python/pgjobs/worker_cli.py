"""`pgjobs-worker`: run the handlers of one or more task modules."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from datetime import timedelta

import psycopg

from . import logs
from .connection import describe, first_line, prepare_threshold, resolve_url
from .metrics import MetricsServerError
from .shard_worker import ShardedWorker
from .tasks import import_task_modules
from .worker import Worker, WorkerOptions, default_worker_id

_DEFAULTS = WorkerOptions(worker_id="-")
DEFAULT_PREFETCH = _DEFAULTS.prefetch
DEFAULT_FLUSH_SIZE = _DEFAULTS.flush_size
DEFAULT_FLUSH_DELAY = _DEFAULTS.flush_delay


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(name, default)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a TCP port (0-65535), got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pgjobs-worker",
        description="Process pgjobs jobs with the handlers registered by @pgjobs.task.",
        epilog="Every option can also be set through the environment variable shown.",
    )
    p.add_argument("--database-url", action="append",
                   help="libpq URL or conninfo [PGJOBS_DATABASE_URL, then DATABASE_URL, "
                        "then libpq's PG* variables]; repeat it to work for several shards "
                        "(one claim loop and --concurrency handlers per shard)")
    p.add_argument("--listen-database-url", default=_env("PGJOBS_LISTEN_DATABASE_URL"),
                   help="where the LISTEN connection goes, when --database-url is a "
                        "transaction-mode pooler: straight to PostgreSQL "
                        "[PGJOBS_LISTEN_DATABASE_URL, default --database-url]")
    p.add_argument("--no-listen", action="store_true",
                   default=_env("PGJOBS_NO_LISTEN", "").lower() in ("1", "true", "yes"),
                   help="no LISTEN connection: new jobs are found by polling every "
                        "--poll-interval [PGJOBS_NO_LISTEN]")
    p.add_argument("--prepare-threshold", type=prepare_threshold,
                   default=prepare_threshold(_env("PGJOBS_PREPARE_THRESHOLD", "none")),
                   help="prepare a statement after this many runs; none: never, which works "
                        "behind a pooler that cannot keep prepared statements "
                        "[PGJOBS_PREPARE_THRESHOLD, default none]")
    p.add_argument("--connect-timeout", type=_non_negative_float,
                   default=float(_env("PGJOBS_CONNECT_TIMEOUT", "10")),
                   help="seconds a new connection may take to answer its first statement "
                        "(a full pool keeps it waiting); then an error is logged and it is "
                        "tried again; 0: wait forever [PGJOBS_CONNECT_TIMEOUT, default 10]")
    p.add_argument("--tasks", action="append", metavar="MODULE",
                   help="module (dotted name or .py path) defining @pgjobs.task handlers; "
                        "repeatable [PGJOBS_TASKS, comma-separated]")
    p.add_argument("--concurrency", type=_positive_int,
                   default=int(_env("PGJOBS_CONCURRENCY", "4")),
                   help="jobs run at once [PGJOBS_CONCURRENCY, default 4]")
    p.add_argument("--task-identifiers", default=_env("PGJOBS_TASK_IDENTIFIERS"),
                   help="comma-separated: only claim these tasks [PGJOBS_TASK_IDENTIFIERS]")
    p.add_argument("--batch-size", type=_positive_int,
                   default=int(_env("PGJOBS_BATCH_SIZE", "0")) or None,
                   help="at most this many jobs per claim statement "
                        "[PGJOBS_BATCH_SIZE, default prefetch + concurrency]")
    p.add_argument("--prefetch", type=_non_negative_int,
                   default=int(_env("PGJOBS_PREFETCH", str(DEFAULT_PREFETCH))),
                   help="at most this many claimed jobs wait to start, and no more than "
                        "the handlers start in about 0.1 s; 0: claim only what can start "
                        f"at once [PGJOBS_PREFETCH, default {DEFAULT_PREFETCH}]")
    p.add_argument("--flush-size", type=_positive_int,
                   default=int(_env("PGJOBS_FLUSH_SIZE", str(DEFAULT_FLUSH_SIZE))),
                   help="deliver outcomes once this many are owed "
                        f"[PGJOBS_FLUSH_SIZE, default {DEFAULT_FLUSH_SIZE}]")
    p.add_argument("--flush-delay", type=_non_negative_float,
                   default=float(_env("PGJOBS_FLUSH_DELAY", str(DEFAULT_FLUSH_DELAY))),
                   help="or this many seconds after the previous delivery; 0: at once "
                        f"[PGJOBS_FLUSH_DELAY, default {DEFAULT_FLUSH_DELAY:g}]")
    p.add_argument("--poll-interval", type=_positive_float,
                   default=float(_env("PGJOBS_POLL_INTERVAL", "2")),
                   help="seconds between polls when no notification arrives "
                        "[PGJOBS_POLL_INTERVAL, default 2]")
    p.add_argument("--worker-id", default=_env("PGJOBS_WORKER_ID"),
                   help="name written to locked_by [PGJOBS_WORKER_ID, default host-pid-random]")
    p.add_argument("--burst", action="store_true",
                   default=_env("PGJOBS_BURST", "").lower() in ("1", "true", "yes"),
                   help="exit 0 once no job is available [PGJOBS_BURST]")
    p.add_argument("--shutdown-timeout", type=float,
                   default=float(_env("PGJOBS_SHUTDOWN_TIMEOUT", "30")),
                   help="seconds running jobs get to finish after SIGTERM/SIGINT "
                        "[PGJOBS_SHUTDOWN_TIMEOUT, default 30]")
    p.add_argument("--job-expiry", type=_positive_float,
                   default=float(_env("PGJOBS_JOB_EXPIRY", "0")) or None,
                   help="seconds after which another worker's lock counts as dead "
                        "[PGJOBS_JOB_EXPIRY, default: the job_expiry setting, 4 hours]")
    p.add_argument("--schedule-interval", type=float,
                   default=float(_env("PGJOBS_SCHEDULE_INTERVAL", "1")),
                   help="seconds between scheduler ticks (app_jobs.run_due_scheduled_jobs); "
                        "0 disables [PGJOBS_SCHEDULE_INTERVAL, default 1]")
    p.add_argument("--heartbeat-interval", type=_positive_float,
                   default=float(_env("PGJOBS_HEARTBEAT_INTERVAL", "5")),
                   help="seconds between heartbeats (sent on a connection of their own); "
                        "also how often dead workers are reaped "
                        "[PGJOBS_HEARTBEAT_INTERVAL, default 5]")
    p.add_argument("--dead-for", type=_positive_float,
                   default=float(_env("PGJOBS_DEAD_FOR", "20")),
                   help="seconds of silence after which a worker's jobs are rescued; at least "
                        "3 heartbeat intervals [PGJOBS_DEAD_FOR, default 20]")
    p.add_argument("--default-timeout", type=_positive_float,
                   default=float(_env("PGJOBS_DEFAULT_TIMEOUT", "0")) or None,
                   help="seconds an attempt may run when neither the job nor its task sets a "
                        "timeout [PGJOBS_DEFAULT_TIMEOUT, default none]")
    p.add_argument("--cancel-grace", type=float,
                   default=float(_env("PGJOBS_CANCEL_GRACE", "5")),
                   help="seconds a timed-out or cancelled handler gets to stop before it is "
                        "abandoned [PGJOBS_CANCEL_GRACE, default 5]")
    p.add_argument("--statement-timeout", type=_non_negative_float,
                   default=_env("PGJOBS_STATEMENT_TIMEOUT", "60"),
                   help="seconds any one statement of the worker may run (statement_timeout; "
                        "0: no limit); the history purge is exempt "
                        "[PGJOBS_STATEMENT_TIMEOUT, default 60]")
    p.add_argument("--idle-in-transaction-timeout", type=_non_negative_float,
                   default=_env("PGJOBS_IDLE_IN_TRANSACTION_TIMEOUT", "60"),
                   help="seconds a worker session may sit idle inside a transaction "
                        "(idle_in_transaction_session_timeout; 0: no limit) "
                        "[PGJOBS_IDLE_IN_TRANSACTION_TIMEOUT, default 60]")
    p.add_argument("--lock-timeout", type=_non_negative_float,
                   default=_env("PGJOBS_LOCK_TIMEOUT", "5"),
                   help="seconds a worker statement may wait for a row or table lock "
                        "(lock_timeout; 0: no limit); it is then tried again later "
                        "[PGJOBS_LOCK_TIMEOUT, default 5]")
    p.add_argument("--metrics-port", type=_port, default=_env("PGJOBS_METRICS_PORT") or None,
                   help="serve Prometheus metrics at http://HOST:PORT/metrics (0: any free "
                        "port, logged) [PGJOBS_METRICS_PORT, default off]")
    p.add_argument("--metrics-host", default=_env("PGJOBS_METRICS_HOST", "127.0.0.1"),
                   help="address the metrics endpoint listens on "
                        "[PGJOBS_METRICS_HOST, default 127.0.0.1]")
    p.add_argument("--log-level", default=_env("PGJOBS_LOG_LEVEL", "info"),
                   choices=["debug", "info", "warning", "error"],
                   help="[PGJOBS_LOG_LEVEL, default info]")
    p.add_argument("--log-format", default=_env("PGJOBS_LOG_FORMAT", "text"),
                   choices=["text", "json"], help="[PGJOBS_LOG_FORMAT, default text]")
    return p


def fail(message: str, code: int = 2) -> int:
    print(f"pgjobs-worker: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure(args.log_level, args.log_format)

    modules = args.tasks or [m for m in (_env("PGJOBS_TASKS") or "").split(",") if m]
    if not modules:
        return fail("no task module given (use --tasks MODULE or PGJOBS_TASKS)")
    sys.path.insert(0, os.getcwd())
    try:
        handlers = import_task_modules(modules)
    except Exception as exc:  # noqa: BLE001 - any import failure is reported the same way
        return fail(f"cannot import task module: {type(exc).__name__}: {exc}")
    if not handlers:
        return fail(f"no @pgjobs.task handlers found in {', '.join(modules)}")

    conninfos = [resolve_url(u) for u in args.database_url or [_env("PGJOBS_DATABASE_URL")]]
    conninfo = conninfos[0]
    wanted = [t for t in (args.task_identifiers or "").split(",") if t] or None
    if wanted and not set(wanted) & set(handlers):
        return fail(f"none of --task-identifiers {wanted} has a handler")
    if args.dead_for < 3 * args.heartbeat_interval:
        return fail(f"--dead-for ({args.dead_for:g} s) must be at least 3 x "
                    f"--heartbeat-interval ({args.heartbeat_interval:g} s)")
    options = WorkerOptions(
        concurrency=args.concurrency,
        batch_size=args.batch_size,
        prefetch=args.prefetch,
        flush_size=args.flush_size,
        flush_delay=args.flush_delay,
        poll_interval=args.poll_interval,
        worker_id=args.worker_id or default_worker_id(),
        burst=args.burst,
        shutdown_timeout=args.shutdown_timeout,
        task_identifiers=wanted,
        job_expiry=timedelta(seconds=args.job_expiry) if args.job_expiry else None,
        schedule_interval=args.schedule_interval,
        heartbeat_interval=args.heartbeat_interval,
        dead_for=args.dead_for,
        default_timeout=args.default_timeout,
        cancel_grace=max(args.cancel_grace, 0.0),
        statement_timeout=args.statement_timeout,
        idle_in_transaction_timeout=args.idle_in_transaction_timeout,
        lock_timeout=args.lock_timeout,
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
        prepare_threshold=args.prepare_threshold,
        listen_conninfo=args.listen_database_url,
        listen=not args.no_listen,
        connect_timeout=args.connect_timeout,
    )
    worker: Worker | ShardedWorker
    if len(conninfos) > 1:
        try:
            worker = ShardedWorker(conninfos, handlers, options)
        except ValueError as exc:
            return fail(str(exc))
    else:
        worker = Worker(conninfo, handlers, options)
    try:
        code = asyncio.run(worker.run())
    except MetricsServerError as exc:
        return fail(str(exc), 1)
    except psycopg.OperationalError as exc:
        if isinstance(worker, ShardedWorker):
            conninfo = worker.failed or conninfo
        return fail(f"cannot connect to {describe(conninfo)}: {first_line(exc)}", 1)
    except psycopg.Error as exc:
        return fail(f"database error: {first_line(exc)}", 1)
    logging.shutdown()
    # Handler threads still running past the shutdown timeout were released; don't wait.
    if worker.busy_threads():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
