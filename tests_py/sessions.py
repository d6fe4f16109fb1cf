"""Helpers for tests that drive many PostgreSQL sessions at once from threads.

Each thread owns its own psycopg connection (one server backend per thread), so the
statements really run concurrently on the server; psycopg releases the GIL while it waits
for the server.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any


class Crew:
    """What every concurrent target gets: a start line and a shared failure flag."""

    def __init__(self, size: int, timeout: float) -> None:
        self.barrier = threading.Barrier(size)
        self.failed = threading.Event()
        self.deadline = time.monotonic() + timeout

    def ready(self) -> None:
        """Wait until every session is connected, then all go at once."""
        self.barrier.wait()

    def keep_going(self) -> bool:
        """False once another session failed; raises when the time budget is spent."""
        if time.monotonic() > self.deadline:
            raise TimeoutError("concurrent test ran out of time")
        return not self.failed.is_set()


def run_concurrently(
    targets: Sequence[Callable[[Crew], Any]],
    timeout: float = 60.0,
) -> list[Any]:
    """Run every target in its own thread, all released together; return their results.

    Each target receives the Crew: it calls `crew.ready()` once connected and polls
    `crew.keep_going()` in its loops. The first exception raised by any target is
    re-raised here (the others are listed in the message); a thread still running after
    `timeout` seconds is a failure too.
    """
    crew = Crew(len(targets), timeout)
    results: list[Any] = [None] * len(targets)
    errors: list[tuple[int, BaseException]] = []
    lock = threading.Lock()

    def wrap(i: int, target: Callable[[Crew], Any]) -> None:
        try:
            results[i] = target(crew)
        except BaseException as exc:  # reported to the test thread
            crew.failed.set()
            crew.barrier.abort()
            with lock:
                errors.append((i, exc))

    threads = [
        threading.Thread(target=wrap, args=(i, t), name=f"session-{i}", daemon=True)
        for i, t in enumerate(targets)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, crew.deadline + 5 - time.monotonic()))
    stuck = [t.name for t in threads if t.is_alive()]
    if errors:
        # A broken barrier in one thread is only a consequence of another's failure.
        real = [(i, e) for i, e in errors if not isinstance(e, threading.BrokenBarrierError)]
        i, first = (real or errors)[0]
        others = "".join(f"\n  session {j}: {e!r}" for j, e in errors if e is not first)
        raise AssertionError(f"session {i} failed: {first!r}{others}") from first
    if stuck:
        raise AssertionError(f"sessions still running after {timeout}s: {stuck}")
    return results
