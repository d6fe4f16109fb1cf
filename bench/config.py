"""Sizes and durations of the full and quick benchmark modes."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Config:
    mode: str
    runs: int = 3                      # every case runs at least this many times
    pgbench_seconds: int = 10          # -T of each pgbench run (A single, F)
    batch_jobs: int = 100_000          # A: jobs added by one batch statement
    drain_jobs: int = 100_000          # B: waiting jobs one worker drains
    drain_cap_s: float = 60.0          # B: a drain still running then is stopped and rated
    explore_jobs: int = 20_000         # B: jobs per try of a candidate "best" flag set
    explore_cap_s: float = 20.0
    latency_jobs: int = 200            # C: jobs per run, added one at a time
    latency_gap_s: float = 0.020       # C: time between two adds
    scale_sizes: tuple[int, int] = (1_000, 1_000_000)  # D: rows that are never due
    scale_due: int = 10_000            # D: due jobs claimed by the timed rounds
    scale_batch: int = 100             # D: get_jobs batch size
    scale_rounds: int = 30             # D: claim + finish rounds per run
    scale_cap_s: float = 20.0          # D: a run stops after this long
    churn_seconds: float = 600.0       # E: how long the producer and the worker run
    churn_window_s: float = 60.0       # E: first and last windows compared
    churn_backlog: int = 5_000         # E: the producer keeps about this many jobs waiting
    web_jobs: int = 1_000_000          # W: waiting jobs under the dashboard's overview
    # B: candidate flag sets for the "best settings" row (the README names the winner):
    # the prefetching worker at graphile's concurrency, with a bigger buffer and flush,
    # with more runners, and without a buffer (claims bounded by free slots, 0.5 style).
    best_candidates: tuple[tuple[str, ...], ...] = field(default=(
        ("--concurrency", "24"),
        ("--concurrency", "24", "--prefetch", "4000", "--flush-size", "2000"),
        ("--concurrency", "100", "--prefetch", "2000"),
        ("--concurrency", "24", "--prefetch", "0", "--batch-size", "500"),
    ))


FULL = Config(mode="full")

QUICK = Config(
    mode="quick",
    pgbench_seconds=2,
    batch_jobs=20_000,
    drain_jobs=20_000,
    drain_cap_s=30.0,
    explore_jobs=5_000,
    explore_cap_s=8.0,
    latency_jobs=50,
    scale_sizes=(1_000, 100_000),
    scale_cap_s=5.0,
    churn_seconds=120.0,
)
