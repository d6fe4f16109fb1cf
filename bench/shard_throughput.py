"""Single-shard vs two-shard throughput through a PL/Proxy proxy (doc/sharding.md).

    .venv/bin/python -m bench.shard_throughput --proxy URL --shard URL_A --shard URL_B \
        [--jobs 20000] [--batch 1000] [--concurrency 4]

For one shard (A), then two (A and B): `pgjobs shard` points the proxy at them, N jobs
of 50 tenants are enqueued through the proxy by add_jobs calls of --batch jobs (the
tenants mixed in each call), then one `pgjobs-worker --burst` with one --database-url
per shard drains them with a no-op handler. Prints jobs/s for the enqueue and the drain.
The shards must have pgjobs installed; their jobs and history are emptied first.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

BIN = Path(sys.executable).parent
TENANTS = [str(uuid.uuid5(uuid.NAMESPACE_DNS, f"tenant-{i}.bench")) for i in range(50)]
TASKS = "import pgjobs\n\n\n@pgjobs.task\ndef noop(payload, job):\n    pass\n"


def run(proxy: str, shards: list[str], jobs: int, batch: int, concurrency: int) -> dict:
    for url in shards:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("TRUNCATE app_jobs.jobs, app_jobs.job_history CASCADE")
    subprocess.run([str(BIN / "pgjobs"), "--database-url", proxy, "shard",
                    *(a for s in shards for a in ("--shard", s))], check=True,
                   capture_output=True)
    with psycopg.connect(proxy, autocommit=True) as conn:
        start = time.perf_counter()
        for first in range(0, jobs, batch):
            n = min(batch, jobs - first)
            conn.execute(
                "SELECT count(*) FROM app_jobs.add_jobs(array_fill('noop'::text, ARRAY[%s]),"
                " db_ids := %s::uuid[])",
                (n, [TENANTS[(first + i) % len(TENANTS)] for i in range(n)]))
        enqueue = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "bench_noop.py").write_text(TASKS)
        start = time.perf_counter()
        subprocess.run([str(BIN / "pgjobs-worker"), "--tasks", str(Path(tmp, "bench_noop.py")),
                        "--burst", "--concurrency", str(concurrency), "--log-level", "warning",
                        *(a for s in shards for a in ("--database-url", s))],
                       check=True, timeout=600)
        drain = time.perf_counter() - start
    done = 0
    for url in shards:
        with psycopg.connect(url, autocommit=True) as conn:
            done += conn.execute("SELECT count(*) FROM app_jobs.job_history"
                                 " WHERE status = 'completed'").fetchone()[0]
    assert done == jobs, f"{done} of {jobs} jobs completed"
    return {"shards": len(shards), "enqueue_per_s": jobs / enqueue, "drain_per_s": jobs / drain,
            "enqueue_s": enqueue, "drain_s": drain}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--proxy", required=True)
    p.add_argument("--shard", action="append", required=True)
    p.add_argument("--jobs", type=int, default=20_000)
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=4)
    args = p.parse_args()
    for count in (1, len(args.shard)):
        r = run(args.proxy, args.shard[:count], args.jobs, args.batch, args.concurrency)
        print(f"{r['shards']} shard(s): enqueue {r['enqueue_per_s']:8.0f} jobs/s "
              f"({r['enqueue_s']:.1f} s), drain {r['drain_per_s']:8.0f} jobs/s "
              f"({r['drain_s']:.1f} s)", flush=True)


if __name__ == "__main__":
    main()
