"""Run every benchmark case against the cluster named by the PG* variables.

    python -m bench.run [--quick] [--only F,A,...] [--out bench/results]

scripts/bench.sh starts the throwaway cluster (fsync and synchronous_commit on), installs
the extension, runs this and stops the cluster. The cases (see README "Performance"):

  F  the floor: bare-table INSERTs and batched DELETE ... SKIP LOCKED claims (pgbench)
  A  enqueue: add_job per transaction (pgbench, 1 and 8 clients) and in one batch
  B  drain: one pgjobs-worker --burst empties a queue of no-op jobs
  C  latency: commit -> handler start with an idle worker woken by NOTIFY
  D  scale: claim cost with few vs many never-due rows in app_jobs.jobs
  E  churn: a producer keeps the queue topped up while one worker drains, for minutes
  tick  the scheduler tick (bench/scheduler_tick.py)
  W  the dashboard's overview page with 10^6 waiting jobs (bench/web_overview.py)

Prints a table with the targets of issue 7 and writes bench/results/<timestamp>.json and
bench/results/latest.json (and latest.md, the table as Markdown). Exits 1 if a case failed.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import traceback
from pathlib import Path

from bench import cases_sql, cases_worker, report, web_overview
from bench.config import FULL, QUICK
from bench.util import REPO, connect, log

CASES = {
    "F": cases_sql.floor,
    "A": cases_sql.enqueue,
    "B": cases_worker.drain,
    "C": cases_worker.latency,
    "D": cases_sql.scale,
    "E": cases_worker.churn,
    "tick": cases_sql.tick,
    "W": web_overview.measure,
}


def check_durability() -> None:
    """The numbers only mean something with PostgreSQL's default durability."""
    with connect("postgres") as conn:
        for name in ("fsync", "synchronous_commit", "full_page_writes"):
            value = conn.execute("SELECT current_setting(%s)", (name,)).fetchone()[0]
            if value != "on":
                raise SystemExit(f"bench: {name} is {value}; the benchmarks need it on")


def _load(load: tuple[float, float, float]) -> str:
    return " / ".join(f"{v:.2f}" for v in load)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.run", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smaller sizes, shorter runs")
    p.add_argument("--only", help=f"comma-separated subset of {','.join(CASES)}")
    p.add_argument("--churn-seconds", type=float, help="override E's duration")
    p.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = p.parse_args(argv)

    cfg = QUICK if args.quick else FULL
    if args.churn_seconds:
        cfg = type(cfg)(**{**cfg.__dict__, "churn_seconds": args.churn_seconds})
    wanted = args.only.split(",") if args.only else list(CASES)
    unknown = set(wanted) - set(CASES)
    if unknown:
        p.error(f"unknown case(s) {', '.join(sorted(unknown))}")

    # SIGTERM unwinds like Ctrl-C, so every worker subprocess is stopped on the way out.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    check_durability()
    began = time.time()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.localtime(began))
    machine = report.describe_machine()
    load_start = os.getloadavg()
    log(f"{cfg.mode} run on {report.machine_line(machine)}")

    results: dict = {}
    durations: dict = {}
    for name in wanted:
        log(f"case {name} ...")
        t0 = time.perf_counter()
        try:
            results[name] = CASES[name](cfg)
        except Exception as exc:  # noqa: BLE001 - one broken case must not hide the others
            traceback.print_exc()
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
        durations[name] = round(time.perf_counter() - t0, 1)
        log(f"case {name} took {durations[name]} s")

    targets = report.evaluate(results)
    rows = report.table_rows(results, targets)
    runtime = time.time() - began
    doc = {
        "timestamp": stamp,
        "mode": cfg.mode,
        "runtime_s": round(runtime, 1),
        "case_seconds": durations,
        "machine": machine,
        "machine_line": report.machine_line(machine),
        # Other processes on the machine skew every number: the 1/5/15-minute load.
        "load_average": {"start": load_start, "end": os.getloadavg()},
        "config": cfg.__dict__,
        "cases": results,
        "targets": targets,
        "table": [dict(zip(report.HEADER, r, strict=True)) for r in rows],
    }
    path = report.write_json(doc, Path(args.out), stamp)
    markdown = report.render_markdown(rows)
    (Path(args.out) / "latest.md").write_text(
        f"{cfg.mode} run {stamp}, {runtime:.0f} s: {report.machine_line(machine)}; "
        f"load average at start {_load(load_start)}\n\n"
        f"{markdown}\n", encoding="utf-8")

    print()
    print(f"pgjobs benchmarks ({cfg.mode}, {runtime:.0f} s): {report.machine_line(machine)}")
    print(report.render_text(rows))
    print(f"load average (1/5/15 min) at start {_load(load_start)}, at end "
          f"{_load(os.getloadavg())} on {machine['cores']} cores")
    print(f"\nwrote {path.relative_to(REPO) if path.is_relative_to(REPO) else path}"
          " and latest.json")
    failed = [n for n, r in results.items() if isinstance(r, dict) and "error" in r]
    if failed:
        print(f"bench: case(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
