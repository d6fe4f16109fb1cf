"""`pgjobs`: install, upgrade, inspect and manage the queue from the shell."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

import psycopg

from . import client, installer, sharding, sql
from .connection import describe, first_line, prepare_threshold, resolve_url


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


DATABASE_URL_HELP = ("libpq URL [PGJOBS_DATABASE_URL, then DATABASE_URL, then PG*]; status "
                     "and web take it once per shard (repeat it) and add the shards up")
PREPARE_THRESHOLD_HELP = ("prepare a statement after this many runs; none: never, which "
                          "works behind any pooler [PGJOBS_PREPARE_THRESHOLD, default none]")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pgjobs", description="Manage a pgjobs queue.")
    p.add_argument("--database-url", action="append", help=DATABASE_URL_HELP)
    p.add_argument("--prepare-threshold", type=prepare_threshold,
                   default=prepare_threshold(os.environ.get("PGJOBS_PREPARE_THRESHOLD", "none")),
                   help=PREPARE_THRESHOLD_HELP)
    sub = p.add_subparsers(dest="command", required=True)

    inst = sub.add_parser("install", help="create the app_jobs schema (plain SQL by default)")
    inst.add_argument("--extension", action="store_true",
                      help="use CREATE EXTENSION (needs `make install` on the server)")
    sub.add_parser("upgrade", help="apply pending upgrade scripts")
    st = sub.add_parser("status",
                        help="jobs per task and queue, workers, schedules, notification queue")
    st.add_argument("--watch", nargs="?", const=2.0, type=_positive_float, metavar="SECONDS",
                    help="refresh every SECONDS (default 2) until Ctrl-C")

    add = sub.add_parser("add", help="enqueue a job")
    add.add_argument("identifier", help="task identifier")
    add.add_argument("payload", nargs="?", default="{}", help="JSON payload (default {})")
    add.add_argument("--queue", dest="queue_name")
    add.add_argument("--job-key")
    add.add_argument("--priority", type=int)
    add.add_argument("--max-attempts", type=int)
    add.add_argument("--run-at", type=datetime.fromisoformat,
                     help="ISO timestamp, e.g. 2030-01-01T09:00:00+00:00")
    add.add_argument("--delay", type=float, help="seconds from now (instead of --run-at)")
    add.add_argument("--db-id", help="database (tenant) uuid")

    shard = sub.add_parser(
        "shard", help="make --database-url (a database of its own) a PL/Proxy proxy that "
                      "routes the enqueue API to the shards by tenant (doc/sharding.md)")
    shard.add_argument("--shard", action="append", required=True, metavar="URL",
                       help="a shard running pgjobs; repeat it, in a fixed order (the "
                            "first is partition p0); 1, 2, 4, 8, ... shards")

    for name, what in (("retry", "run permanently failed jobs again"),
                       ("remove", "delete permanently failed jobs")):
        cmd = sub.add_parser(name, help=what)
        cmd.add_argument("ids", nargs="*", type=int, help="job ids (only failed ones are used)")
        cmd.add_argument("--all-failed", action="store_true", help="every failed job")
        cmd.add_argument("--task", help="only failed jobs of this task")

    web = sub.add_parser("web", help="serve the dashboard (needs pip install \"pgjobs[web]\")")
    web.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    web.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    web.add_argument("--read-only", action="store_true",
                     help="hide and refuse every action (the role needs only SELECT)")
    web.add_argument("--base-path", default="", help="serve under this prefix, e.g. /jobs")
    web.add_argument("--database-id", help="show and act on this tenant (database_id) only")
    web.add_argument("--no-listen", action="store_true",
                     help="poll for changes instead of LISTEN (e.g. behind a transaction pooler)")
    web.add_argument("--poll-interval", type=_positive_float, default=1.0,
                     help="seconds between polls when not listening (default 1)")
    web.add_argument("--check", action="store_true",
                     help="check the database and the role's access, print, exit (no serving)")

    # The connection options go before or after the subcommand; after wins (SUPPRESS:
    # a subcommand that is not given one leaves the value from before it alone).
    for cmd in sub.choices.values():
        cmd.add_argument("--database-url", action="append", default=argparse.SUPPRESS,
                         help=DATABASE_URL_HELP)
        cmd.add_argument("--prepare-threshold", type=prepare_threshold,
                         default=argparse.SUPPRESS, help=PREPARE_THRESHOLD_HELP)
    return p


def _format_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def _age(value: timedelta | None) -> str:
    if value is None:
        return "-"
    seconds = value.total_seconds()
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


def _one_line(text: str, width: int = 80) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= width else line[:width - 3] + "..."


# How new jobs wake each worker (workers.wakeup), as status shows it.
WAKEUP = {
    "listen": "LISTEN",
    "silent": "polling: LISTEN silent (pooler? --listen-database-url)",
    "poll": "polling (--no-listen)",
}


QUEUE_HEADERS = ["task", "queue", "waiting", "scheduled", "running", "retrying", "failed",
                 "oldest waiting", "blocked", "completed/min", "failed/min"]


def _queue_table(rows: list[tuple]) -> str:
    body = [[r[0], r[1] or "-", *(str(v) for v in r[2:7]), _age(r[7]),
             *(str(v) for v in r[8:11])] for r in rows]
    return _format_table(QUEUE_HEADERS, body) if body else "no jobs"


def status(conn: psycopg.Connection) -> str:
    """Jobs per task and queue (app_jobs.queue_stats), workers, schedules (the failing
    ones in a table), notification queue; sections separated by blank lines."""
    sections = [_queue_table(conn.execute(sql.STATUS).fetchall())]

    workers = conn.execute(sql.STATUS_WORKERS).fetchall()
    if workers:
        stale = sum(1 for w in workers if w[4])
        sections.append(f"workers: {len(workers)} ({stale} stale)\n" + _format_table(
            ["worker", "host", "pid", "last heartbeat", "wake-up"],
            [[w[0], w[1] or "-", "-" if w[2] is None else str(w[2]),
              _age(w[3]) + " ago" + (" (stale)" if w[4] else ""), WAKEUP.get(w[5], "-")]
             for w in workers],
        ))
    else:
        sections.append("workers: none registered")

    total = conn.execute(sql.STATUS_SCHEDULES).fetchone()[0]
    failing = conn.execute(sql.STATUS_FAILING_SCHEDULES).fetchall()
    schedules = f"schedules: {total} ({len(failing)} failing)"
    if failing:
        schedules += "\n" + _format_table(
            ["schedule", "task", "last error", "when"],
            [[str(f[0]), f[1], _one_line(f[2]), "-" if f[3] is None else _age(f[3]) + " ago"]
             for f in failing],
        )
    sections.append(schedules)

    usage = conn.execute(sql.NOTIFICATION_QUEUE).fetchone()[0]
    sections.append(f"notification queue usage: {usage * 100:.2f}%")
    return "\n\n".join(sections)


def _add_up(rows: list[tuple]) -> list[tuple]:
    """STATUS rows of several shards added up per task and queue (oldest waiting: the
    oldest on any shard)."""
    total: dict[tuple, list] = {}
    for r in rows:
        t = total.setdefault((r[0], r[1]), [r[0], r[1], 0, 0, 0, 0, 0, None, 0, 0, 0])
        for i in (2, 3, 4, 5, 6, 8, 9, 10):
            t[i] += r[i]
        if r[7] is not None and (t[7] is None or r[7] > t[7]):
            t[7] = r[7]
    return [tuple(v) for _, v in sorted(total.items())]


def sharded_status(urls: list[str], prepare: int | None) -> tuple[str, bool]:
    """status of each shard in a section of its own, then the jobs of all shards added
    up; a shard that cannot be reached says so and the others are still shown. Also
    True when every shard answered."""
    sections: list[str] = []
    rows: list[tuple] = []
    answered = 0
    for i, url in enumerate(urls):
        head = f"== shard {i}: {describe(url)}"
        try:
            with psycopg.connect(url, autocommit=True, prepare_threshold=prepare,
                                 connect_timeout=5) as conn:
                rows += conn.execute(sql.STATUS).fetchall()
                sections.append(f"{head}\n\n{status(conn)}")
                answered += 1
        except psycopg.Error as exc:
            sections.append(f"{head}\n\nunreachable: {first_line(exc)}")
    summary = f"== all shards ({answered} of {len(urls)} answered)"
    sections.append(f"{summary}\n\n{_queue_table(_add_up(rows))}")
    return "\n\n".join(sections), answered == len(urls)


def watch(text_of: Callable[[], str], every: float) -> None:
    """Print status every `every` seconds until Ctrl-C; on a terminal, on a clean screen."""
    tty = sys.stdout.isatty()
    first = True
    try:
        while True:
            text = text_of()
            stamp = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
            header = f"pgjobs status at {stamp} (every {every:g} s; Ctrl-C to stop)"
            if tty:
                sys.stdout.write("\x1b[H\x1b[2J")
            elif not first:
                sys.stdout.write("\n")
            sys.stdout.write(f"{header}\n\n{text}\n")
            sys.stdout.flush()
            first = False
            time.sleep(every)
    except KeyboardInterrupt:
        pass


def _failed_ids(conn: psycopg.Connection, args: argparse.Namespace) -> list[int]:
    failed = [r[0] for r in conn.execute(sql.FAILED_JOB_IDS, {"task": args.task}).fetchall()]
    if args.all_failed or (args.task and not args.ids):
        return failed
    if not args.ids:
        raise SystemExit("pgjobs: give job ids, --all-failed or --task")
    wanted = set(args.ids)
    skipped = sorted(wanted - set(failed))
    if skipped:
        print(f"skipping jobs that are not permanently failed: {skipped}", file=sys.stderr)
    return [i for i in failed if i in wanted]


def run(args: argparse.Namespace, conn: psycopg.Connection) -> str:
    if args.command == "install":
        return installer.install(conn, extension=args.extension)
    if args.command == "upgrade":
        return installer.upgrade(conn)
    if args.command == "status":
        return status(conn)
    if args.command == "shard":
        return sharding.setup_proxy(conn, args.shard)
    if args.command == "add":
        run_at = args.run_at
        if args.delay is not None:
            run_at = datetime.now().astimezone() + timedelta(seconds=args.delay)
        with conn.transaction():
            job_id = client.add_job(
                conn, args.identifier, json.loads(args.payload), job_key=args.job_key,
                queue_name=args.queue_name, run_at=run_at, max_attempts=args.max_attempts,
                priority=args.priority, db_id=args.db_id,
            )
        return f"added job {job_id} ({args.identifier})"
    ids = _failed_ids(conn, args)
    query = sql.RETRY_JOBS if args.command == "retry" else sql.REMOVE_JOBS
    with conn.transaction():
        done = [r[0] for r in conn.execute(query, (ids,)).fetchall()]
    verb = "retrying" if args.command == "retry" else "removed"
    return f"{verb} {len(done)} job(s)" + (f": {done}" if done else "")


def web(args: argparse.Namespace, urls: list[str]) -> int:
    """`pgjobs web`: check the database (each shard's), then serve the dashboard with
    uvicorn. With several shards, one that cannot be reached is reported and the
    dashboard shows it as unreachable (--check: exit 1)."""
    try:
        import uvicorn

        from . import web as pgjobs_web
        from .web import queries as web_queries
    except ImportError as exc:
        print(f'pgjobs web: missing {exc.name or "a dependency"}: pip install "pgjobs[web]"',
              file=sys.stderr)
        return 1
    if args.database_id:
        try:
            uuid.UUID(args.database_id)
        except ValueError:
            print(f"pgjobs web: --database-id is not a uuid: {args.database_id}",
                  file=sys.stderr)
            return 2
    found: list[str] = []
    for i, conninfo in enumerate(urls):
        try:
            with psycopg.connect(conninfo, autocommit=True, prepare_threshold=None,
                                 connect_timeout=10) as conn:
                dbname, version, _ = conn.execute(web_queries.PREFLIGHT).fetchone()
            found.append(f"database {dbname}, pgjobs {version}")
        except psycopg.OperationalError as exc:
            if len(urls) == 1:
                raise
            print(f"pgjobs web: shard {i} ({describe(conninfo)}) is unreachable: "
                  f"{first_line(exc)}", file=sys.stderr)
    if not found:
        print("pgjobs web: no shard can be reached", file=sys.stderr)
        return 1
    app = pgjobs_web.app(urls if len(urls) > 1 else urls[0], read_only=args.read_only,
                         base_path=args.base_path,
                         tenant=args.database_id, listen=not args.no_listen,
                         poll_interval=args.poll_interval)
    cfg = app.state.pgjobs.config
    if cfg.user is None and cfg.auth is None and args.host not in ("127.0.0.1", "localhost",
                                                                     "::1"):
        print("pgjobs web: WARNING serving without authentication on "
              f"{args.host}; set PGJOBS_WEB_USER and PGJOBS_WEB_PASSWORD", file=sys.stderr)
    base = "/" + args.base_path.strip("/") if args.base_path.strip("/") else ""
    what = (found[0] if len(urls) == 1
            else f"{len(found)} of {len(urls)} shards reachable: " + "; ".join(found))
    where = (f"http://{args.host}:{args.port}{base}/ ({what}"
             f"{', read-only' if args.read_only else ''})")
    if args.check:
        print(f"pgjobs web: ready to serve {where}")
        return 0 if len(found) == len(urls) else 1
    print(f"pgjobs web: {where}", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning",
                timeout_graceful_shutdown=2)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    urls = [resolve_url(u) for u in args.database_url or [os.environ.get("PGJOBS_DATABASE_URL")]]
    if args.command == "web":
        try:
            return web(args, urls)
        except psycopg.OperationalError as exc:
            print(f"pgjobs: cannot connect to {describe(urls[0])}: {first_line(exc)}",
                  file=sys.stderr)
            return 1
    if len(urls) > 1:
        if args.command != "status":
            print(f"pgjobs: {args.command} takes one --database-url (status and web take "
                  "one per shard)", file=sys.stderr)
            return 2
        if args.watch:
            watch(lambda: sharded_status(urls, args.prepare_threshold)[0], args.watch)
            return 0
        text, every_shard = sharded_status(urls, args.prepare_threshold)
        print(text)
        return 0 if every_shard else 1
    conninfo = urls[0]
    try:
        with psycopg.connect(conninfo, autocommit=True,
                             prepare_threshold=args.prepare_threshold) as conn:
            if args.command == "status" and args.watch:
                watch(lambda: status(conn), args.watch)
            else:
                print(run(args, conn))
    except psycopg.OperationalError as exc:
        print(f"pgjobs: cannot connect to {describe(conninfo)}: {first_line(exc)}",
              file=sys.stderr)
        return 1
    except (installer.InstallError, sharding.ShardError, json.JSONDecodeError) as exc:
        print(f"pgjobs: {exc}", file=sys.stderr)
        return 1
    except psycopg.Error as exc:
        diag = exc.diag.sqlstate or ""
        print(f"pgjobs: {diag} {first_line(exc)}".strip(), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
