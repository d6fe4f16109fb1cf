"""Handlers for the benchmark worker: `noop` does nothing, `lat` records when it started.

`lat` appends "job_id sent started" (seconds since the epoch) to the file named by
BENCH_LAT_FILE; the clock is read first thing, before any other work.
"""

from __future__ import annotations

import os
import time

import pgjobs


@pgjobs.task
async def noop(payload, job):
    return None


@pgjobs.task
async def lat(payload, job):
    started = time.time()
    with open(os.environ["BENCH_LAT_FILE"], "a", encoding="utf-8") as out:
        out.write(f"{job.id} {payload.get('sent', 0)!r} {started!r}\n")
    return None
