"""The overview's numbers: exact on a small jobs table, sampled estimates on a big one;
with several shards, each shard's overview added up (add_up).

Exact (reltuples below Config.exact_below, and the grouped count finishes within
Config.budget_ms): one grouped pass over jobs, as app_jobs.queue_stats does. Otherwise a
TABLESAMPLE SYSTEM of about 30,000 rows, scaled by pg_class.reltuples, gives every
status per task and queue ("~"), while running jobs (jobs_locked_at_idx), the head of the
claim order (jobs_claim_idx) and the named queues' counters (job_queues) stay exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

import psycopg

from . import queries

SAMPLE_ROWS = 30_000
COLUMNS = ("waiting", "scheduled", "running", "retrying", "failed", "blocked")


@dataclass
class Row:
    """One task and queue: jobs by status and the oldest due job's wait."""

    task: str
    queue: str | None
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COLUMNS, 0))
    oldest: timedelta | None = None


@dataclass
class Overview:
    """Everything the overview shows."""

    rows: list[Row]
    estimated: bool
    estimate_note: str
    jobs_estimate: int
    totals: dict[str, int]
    head_due_for: timedelta | None
    queues: list[tuple]
    throughput: list[tuple[int, int]] | None
    finished: dict[str, int]
    history: str
    workers: tuple[int, int]
    schedules: tuple[int, int, int]  # total, failing, paused
    notify_usage: float


async def _budgeted(conn: psycopg.AsyncConnection, query: str, params: dict,
                    budget_ms: int) -> list | None:
    """Rows of `query`, or None when it takes longer than budget_ms."""
    try:
        async with conn.transaction():
            await conn.execute(queries.BUDGET, (f"{budget_ms}ms",))
            return await (await conn.execute(query, params)).fetchall()
    except psycopg.errors.QueryCanceled:
        return None


def _rows_from_exact(result: list) -> list[Row]:
    """Group the exact count's rows per task and queue."""
    rows: dict[tuple, Row] = {}
    for task, queue, status, n, oldest in result:
        row = rows.setdefault((task, queue), Row(task, queue))
        row.counts[status] = row.counts.get(status, 0) + n
        if oldest is not None and (row.oldest is None or oldest > row.oldest):
            row.oldest = oldest
    return list(rows.values())


def _rows_from_sample(result: list, reltuples: int, running: list) -> list[Row]:
    """Scale the sample's counts to the table's estimated size; running stays exact."""
    sampled = result[0][4] if result else 0
    scale = reltuples / sampled if sampled else 0
    rows: dict[tuple, Row] = {}
    for task, queue, status, n, _ in result:
        if n == 0 or status == "running":
            continue
        row = rows.setdefault((task, queue), Row(task, queue))
        row.counts[status] = round(n * scale)
    for task, queue, n in running:
        rows.setdefault((task, queue), Row(task, queue)).counts["running"] = n
    return list(rows.values())


async def load(conn: psycopg.AsyncConnection, config) -> Overview:
    """Read the overview with a handful of cheap statements."""
    params = {"db": config.tenant}
    reltuples, pages = (await (await conn.execute(queries.JOBS_ESTIMATE)).fetchone())
    exact = None
    if reltuples < config.exact_below:
        exact = await _budgeted(conn, queries.COUNTS_EXACT, params, config.budget_ms)
    if exact is not None:
        rows = _rows_from_exact(exact)
        estimated = False
        note = "exact counts"
    else:
        if reltuples < 0:  # never analyzed: guess from the pages (about 70 rows each)
            reltuples = max(pages, 1) * 70
        percent = min(100.0, max(0.01, 100.0 * SAMPLE_ROWS / max(reltuples, 1)))
        sample = await (await conn.execute(
            queries.COUNTS_SAMPLE, {**params, "percent": percent})).fetchall()
        running = await (await conn.execute(queries.COUNTS_RUNNING, params)).fetchall()
        rows = _rows_from_sample(sample, reltuples, running)
        estimated = True
        note = (f"~ estimated from a {percent:.2g}% block sample of about {reltuples:,} jobs "
                "(pg_class.reltuples); running counts are exact")
    rows.sort(key=lambda r: (r.task, r.queue or ""))
    totals = {c: sum(r.counts[c] for r in rows) for c in COLUMNS}

    head = await (await conn.execute(queries.HEAD_OF_QUEUE, params)).fetchone()
    queues = [] if config.tenant else await (await conn.execute(queries.QUEUES)).fetchall()
    history = (await (await conn.execute(queries.HISTORY_SETTING)).fetchone())[0]
    tp = await _budgeted(conn, queries.THROUGHPUT, params, config.budget_ms)
    throughput = None
    finished = {"completed": 0, "failed": 0, "cancelled": 0}
    if tp is not None:
        buckets = [[0, 0] for _ in range(60)]
        for minutes_ago, status, n in tp:
            finished[status] = finished.get(status, 0) + n
            slot = 59 - minutes_ago
            if status == "completed":
                buckets[slot][0] += n
            elif status == "failed":
                buckets[slot][1] += n
        throughput = [(c, f) for c, f in buckets]
    workers = await (await conn.execute(queries.WORKERS_SUMMARY)).fetchone()
    schedules = await (await conn.execute(queries.SCHEDULES_SUMMARY, params)).fetchone()
    usage = (await (await conn.execute(queries.NOTIFICATION_QUEUE)).fetchone())[0]
    return Overview(
        rows=rows, estimated=estimated, estimate_note=note, jobs_estimate=max(reltuples, 0),
        totals=totals, head_due_for=head[0] if head else None, queues=queues,
        throughput=throughput, finished=finished, history=history, workers=tuple(workers),
        schedules=tuple(schedules), notify_usage=usage,
    )


@dataclass
class ShardLine:
    """One shard on the overview of several: reachable or not, and its main numbers."""

    index: int
    label: str
    error: str | None
    waiting: int = 0
    running: int = 0
    failed: int = 0
    workers: int = 0
    estimated: bool = False


def shard_line(index: int, label: str, ov: Overview | None, error: str | None) -> ShardLine:
    """The overview's line for a shard (its error when it could not be read)."""
    if ov is None:
        return ShardLine(index, label, error or "unreachable")
    return ShardLine(index, label, None, ov.totals["waiting"], ov.totals["running"],
                     ov.totals["failed"], ov.workers[0], ov.estimated)


def add_up(parts: list[tuple[int, Overview]]) -> Overview:
    """The overviews of several shards (index, overview) as one: counts and totals summed
    per task and queue, named queues per name, the throughput per minute; the longest
    waits; estimated (~) when any shard estimated; the fullest notification queue."""
    rows: dict[tuple, Row] = {}
    queues: dict[str, list] = {}
    for _, ov in parts:
        for r in ov.rows:
            row = rows.setdefault((r.task, r.queue), Row(r.task, r.queue))
            for c in COLUMNS:
                row.counts[c] += r.counts[c]
            if r.oldest is not None and (row.oldest is None or r.oldest > row.oldest):
                row.oldest = r.oldest
        for name, jobs, running, locked_by in ov.queues:
            q = queues.setdefault(name, [name, 0, 0, None])
            q[1] += jobs
            q[2] += running
            q[3] = ", ".join(x for x in (q[3], locked_by) if x) or None
    merged = sorted(rows.values(), key=lambda r: (r.task, r.queue or ""))
    estimated = [i for i, ov in parts if ov.estimated]
    note = "exact counts"
    if estimated:
        note = ("~ estimated on shard(s) " + ", ".join(map(str, estimated)) + " from a block "
                "sample scaled by pg_class.reltuples; running counts are exact")
    heads = [ov.head_due_for for _, ov in parts if ov.head_due_for is not None]
    charts = [ov.throughput for _, ov in parts]
    throughput = None
    if all(c is not None for c in charts):
        throughput = [(sum(c[m][0] for c in charts), sum(c[m][1] for c in charts))
                      for m in range(60)]
    finished: dict[str, int] = {"completed": 0, "failed": 0, "cancelled": 0}
    for _, ov in parts:
        for status, n in ov.finished.items():
            finished[status] = finished.get(status, 0) + n
    histories = {ov.history for _, ov in parts}
    return Overview(
        rows=merged, estimated=bool(estimated), estimate_note=note,
        jobs_estimate=sum(ov.jobs_estimate for _, ov in parts),
        totals={c: sum(r.counts[c] for r in merged) for c in COLUMNS},
        head_due_for=max(heads) if heads else None,
        queues=[tuple(q) for _, q in sorted(queues.items())],
        throughput=throughput, finished=finished,
        history=histories.pop() if len(histories) == 1 else "mixed",
        workers=tuple(sum(ov.workers[k] for _, ov in parts) for k in (0, 1)),
        schedules=tuple(sum(ov.schedules[k] for _, ov in parts) for k in (0, 1, 2)),
        notify_usage=max((ov.notify_usage for _, ov in parts), default=0.0),
    )
