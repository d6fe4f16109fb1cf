"""The machine description, the targets, the printed table and the JSON file."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path

from bench.util import REPO, connect, drop_db, fresh_db

PG_SETTINGS = (
    "fsync", "synchronous_commit", "full_page_writes", "shared_buffers", "wal_buffers",
    "max_wal_size", "checkpoint_timeout", "work_mem", "jit", "autovacuum",
    "max_connections",
)


# -- the machine ------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ram_gb() -> float | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _git() -> dict:
    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
        return out.stdout.strip()

    changed = [line[3:] for line in git("status", "--porcelain").splitlines()]
    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "uncommitted_changes": sorted(p for p in changed if p.startswith(("sql/", "python/"))),
    }


def describe_machine() -> dict:
    """CPU, cores, RAM, kernel, PostgreSQL and the settings every case ran with."""
    db = "bench_meta"
    fresh_db(db)
    try:
        with connect(db) as conn:
            version = conn.execute("SELECT version()").fetchone()[0]
            settings = {
                name: conn.execute("SELECT current_setting(%s)", (name,)).fetchone()[0]
                for name in PG_SETTINGS
            }
            pgjobs = {
                "extension_version": conn.execute(
                    "SELECT extversion FROM pg_extension WHERE extname = 'pgjobs'"
                ).fetchone()[0],
                "history": conn.execute("SELECT app_jobs.setting('history')").fetchone()[0],
                "history_retention": conn.execute(
                    "SELECT app_jobs.setting('history_retention')").fetchone()[0],
            }
    finally:
        drop_db(db)
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "ram_gb": _ram_gb(),
        "kernel": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "postgresql": version,
        "settings": settings,
        "pgjobs": pgjobs,
        "git": _git(),
    }


def machine_line(machine: dict) -> str:
    s = machine["settings"]
    pg = machine["postgresql"].split(" on ")[0]
    return (
        f"{machine['cpu_model']}, {machine['cores']} cores, {machine['ram_gb']} GB RAM, "
        f"{machine['kernel']}; {pg}; fsync={s['fsync']}, "
        f"synchronous_commit={s['synchronous_commit']}, shared_buffers={s['shared_buffers']}, "
        f"jit={s['jit']}; pgjobs {machine['pgjobs']['extension_version']}, "
        f"history={machine['pgjobs']['history']}"
    )


# -- targets ------------------------------------------------------------------------------


def _get(results: dict, *path):
    node = results
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _median(results: dict, *path) -> float | None:
    return _get(results, *path, "median")


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def _best_batch(results: dict) -> float | None:
    values = [_median(results, "A", k) for k in ("batch_loop", "batch_set_based")]
    values = [v for v in values if v is not None]
    return max(values) if values else None


def evaluate(results: dict) -> list[dict]:
    """Each target of issue 7 with its value, met or missed, and by how much."""
    specs = [
        ("A_single", "A", "add_job 1 client / F insert 1 client", ">=", 0.70, "ratio",
         _ratio(_median(results, "A", "single_1"), _median(results, "F", "insert_1"))),
        ("A_batch", "A", "batch enqueue, best method", ">=", 150_000, "jobs/s",
         _best_batch(results)),
        ("B_abs", "B", "drain, best flags", ">=", 60_000, "jobs/s",
         _median(results, "B", "best")),
        ("B_floor", "B", "drain best / F batched claim", ">=", 0.60, "ratio",
         _ratio(_median(results, "B", "best"), _median(results, "F", "claim_8"))),
        ("C_p50", "C", "latency p50", "<=", 1.0, "ms", _median(results, "C", "p50_ms")),
        ("C_p95", "C", "latency p95", "<=", 2.0, "ms", _median(results, "C", "p95_ms")),
        ("D_ratio", "D", "claim cost big / small table", "<=", 1.3, "ratio",
         _get(results, "D", "ratio")),
        ("E_ratio", "E", "churn throughput last / first", ">=", 0.9, "ratio",
         _get(results, "E", "ratio")),
        ("W_overview", "W", "dashboard overview, 10^6 waiting jobs", "<=", 300.0, "ms",
         _median(results, "W", "overview_ms")),
    ]
    out = []
    for tid, case, what, op, target, unit, value in specs:
        entry = {"id": tid, "case": case, "what": what, "op": op, "target": target,
                 "unit": unit, "value": value}
        if value is None:
            entry.update(met=None, factor=None, status="n/a (case failed or skipped)")
        else:
            # factor >= 1: met, by that margin; < 1: missed, needs 1/factor to meet.
            factor = value / target if op == ">=" else (target / value if value else 1e9)
            entry.update(met=factor >= 1, factor=factor, status=_status(factor))
        out.append(entry)
    return out


def _status(factor: float) -> str:
    if factor >= 1:
        return f"met ({factor:.2f}x)"
    return f"MISSED (needs {1 / factor:.2f}x)"


# -- the table -----------------------------------------------------------------------------


def _num(value: float, unit: str) -> str:
    if unit in ("ms", "ms/job"):
        return f"{value:.3f}" if value < 1 else f"{value:.2f}" if value < 100 else f"{value:.0f}"
    if unit == "ratio":
        return f"{value:.2f}"
    return f"{value:,.0f}"


def _spread(s: dict | None, unit: str) -> str:
    if not s or "median" not in s:
        return "—"
    return f"{_num(s['median'], unit)} ({_num(s['min'], unit)}–{_num(s['max'], unit)})"


def _target_text(t: dict) -> str:
    unit = "" if t["unit"] == "ratio" else f" {t['unit']}"
    op = "≥" if t["op"] == ">=" else "≤"
    shown = f"{t['target']:.0%}" if t["unit"] == "ratio" and t["op"] == ">=" \
        and t["target"] < 1 else _num(t["target"], t["unit"])
    return f"{op} {shown}{unit}"


def _value_text(t: dict) -> str:
    if t["value"] is None:
        return "—"
    if t["unit"] == "ratio" and t["target"] < 1 and t["op"] == ">=":
        return f"{t['value']:.0%}"
    return _num(t["value"], t["unit"])


def _mb(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MB"


def table_rows(results: dict, targets: list[dict]) -> list[tuple[str, str, str, str, str]]:
    """(case, measurement, median (min–max), target, status) lines. A target that judges a
    row's own median sits on that row; one that judges a ratio gets a row of its own."""
    by_id = {t["id"]: t for t in targets}
    rows: list[tuple[str, str, str, str, str]] = []

    def row(case: str, what: str, value: str, tid: str | None = None) -> None:
        t = by_id.get(tid) if tid else None
        rows.append((case, what, value, _target_text(t) if t else "", t["status"] if t else ""))

    def ratio_row(tid: str, what: str) -> None:
        row(by_id[tid]["case"], what, _value_text(by_id[tid]), tid)

    def err(case: str) -> bool:
        if isinstance(results.get(case), dict) and "error" in results[case]:
            rows.append((case, "error", results[case]["error"][:60], "", "FAILED"))
            return True
        return case not in results

    if not err("F"):
        f = results["F"]
        row("F", "bare INSERT, 1 client (tps)", _spread(f.get("insert_1"), "tps"))
        row("F", "bare INSERT, 8 clients (tps)", _spread(f.get("insert_8"), "tps"))
        row("F", "DELETE..SKIP LOCKED x100, 8 clients (rows/s)",
            _spread(f.get("claim_8"), "rows/s"))
    if not err("A"):
        a = results["A"]
        row("A", "add_job, 1 client (tps)", _spread(a.get("single_1"), "tps"))
        ratio_row("A_single", "add_job 1 client / F INSERT 1 client")
        row("A", "add_job, 8 clients (tps)", _spread(a.get("single_8"), "tps"))
        loop, sb = a.get("batch_loop", {}), a.get("batch_set_based", {})
        loop_best = "median" not in sb or loop.get("median", 0) >= sb["median"]
        row("A", f"batch: add_job x {loop.get('jobs', 0):,} in one statement (jobs/s)",
            _spread(loop, "jobs/s"), "A_batch" if loop_best else None)
        if "median" in sb:
            row("A", f"batch: {sb['function']} (jobs/s)", _spread(sb, "jobs/s"),
                None if loop_best else "A_batch")
        else:
            row("A", "batch: set-based app_jobs.add_jobs", "—")
            rows[-1] = (*rows[-1][:4], "skipped: none in the SQL")
    if not err("B"):
        b = results["B"]
        for key, tid in (("default", None), ("best", "B_abs")):
            r = b[key]
            capped = f", {r['capped_runs']} run(s) capped" if r.get("capped_runs") else ""
            row("B", f"drain {b['jobs']:,}, {key} flags: {r['flags']}, history "
                f"{r['history']}{capped} (jobs/s)", _spread(r, "jobs/s"), tid)
        ratio_row("B_floor", "drain best / F batched claim")
    if not err("C"):
        c = results["C"]
        row("C", f"latency p50 ({c['jobs_per_run']} jobs {c['gap_ms']:.0f} ms apart, idle "
            "default worker; from just before COMMIT) (ms)", _spread(c["p50_ms"], "ms"),
            "C_p50")
        row("C", "latency p95 (ms)", _spread(c["p95_ms"], "ms"), "C_p95")
        row("C", "latency max (ms)", _spread(c["max_ms"], "ms"))
        row("C", "from COMMIT returned instead: p50 / p95 (ms)",
            f"{_num(c['after_commit_p50_ms']['median'], 'ms')} / "
            f"{_num(c['after_commit_p95_ms']['median'], 'ms')}")
    if not err("D"):
        d = results["D"]
        for size, r in d["sizes"].items():
            row("D", f"get_jobs + finish_jobs, batch 100, {int(size):,} never-due rows "
                "(ms/job)", _spread(r["ms_per_job"], "ms/job"))
        ratio_row("D_ratio", f"ratio {d['big']:,} / {d['small']:,} rows")
    if not err("E"):
        e = results["E"]
        row("E", f"churn {e['seconds']:.0f} s, default worker: first / last "
            f"{e['window_s']:.0f} s (jobs/s)",
            f"{e['first_jobs_per_s']:,.0f} / {e['last_jobs_per_s']:,.0f}")
        ratio_row("E_ratio", "throughput last / first")
        sizes = e["tables_at_end"]
        row("E", "table size at end: jobs / job_history",
            " / ".join(_mb(sizes[t]["total_bytes"]) for t in ("jobs", "job_history")
                       if t in sizes))
    if not err("tick"):
        t = results["tick"]
        row("tick", f"scheduler tick, {t['schedules']:,} schedules, {t['due']} due (ms)",
            _spread(t, "ms"))
    if not err("W"):
        w = results["W"]
        row("W", f"dashboard overview GET /, {w['jobs']:,} waiting jobs, estimated (ms)",
            _spread(w["overview_ms"], "ms"), "W_overview")
        row("W", "same page with exact counts (ms)", _spread(w["overview_exact_ms"], "ms"))
        row("W", "SELECT * FROM app_jobs.queue_stats alone (ms)",
            _spread(w["queue_stats_ms"], "ms"))
    return rows


HEADER = ("case", "measurement", "median (min–max) / value", "target", "status")


def render_text(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(str(r[i])) for r in [HEADER, *rows]) for i in range(len(HEADER))]
    lines = []
    for i, row in enumerate([HEADER, *rows]):
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render_markdown(rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for row in rows:
        cells = [str(c).replace("|", "\\|").strip() for c in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_json(report: dict, out_dir: Path, stamp: str) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{stamp}.json"
    text = json.dumps(report, indent=2, default=str) + "\n"
    tmp = out_dir / f"{stamp}.json.tmp"
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    (out_dir / "latest.json").write_text(text, encoding="utf-8")
    return path


if __name__ == "__main__":
    # python -m bench.report [FILE]: a results file's table again, as Markdown.
    import sys

    doc = json.loads(Path(sys.argv[1] if len(sys.argv) > 1 else
                          REPO / "bench" / "results" / "latest.json").read_text())
    print(f"{doc['mode']} run {doc['timestamp']}: {doc['machine_line']}\n")
    print(render_markdown(table_rows(doc["cases"], evaluate(doc["cases"]))))
