"""One worker process for several shards: a Worker per shard database, each with its own
connections, claim loop, runners (`concurrency` each), delivery and heartbeat, all in one
event loop. A shard that goes away only stops its own Worker, which reconnects with
backoff while the others go on (doc/sharding.md)."""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import replace

from .tasks import Handler
from .worker import Worker, WorkerOptions

log = logging.getLogger("pgjobs.worker")


class ShardedWorker:
    """Runs a Worker per conninfo until stopped (burst: until every shard is empty)."""

    def __init__(self, conninfos: list[str], handlers: dict[str, Handler],
                 options: WorkerOptions):
        if len(conninfos) < 2:
            raise ValueError("ShardedWorker needs two or more shards (else use Worker)")
        if options.metrics_port is not None:
            raise ValueError("--metrics-port serves one shard's worker only: not with "
                             "several --database-url")
        if options.listen_conninfo is not None:
            raise ValueError("--listen-database-url names one database: with several "
                             "--database-url each shard listens on its own URL")
        # The shard's number in the worker id tells the shards' log lines apart (each
        # shard's workers table and locked_by hold it too).
        self.workers = [
            Worker(c, handlers, replace(options, worker_id=f"{options.worker_id}-shard{i}",
                                        handle_signals=False))
            for i, c in enumerate(conninfos)
        ]
        # The conninfo of the shard whose worker ended them all (None: none did).
        self.failed: str | None = None

    def stop(self) -> None:
        for w in self.workers:
            w.stop()

    def busy_threads(self) -> int:
        return sum(w.busy_threads() for w in self.workers)

    async def run(self) -> int:
        """Exit code: 0, or 1 when a shard's worker owed outcomes at shutdown. A shard
        that cannot be reached at the start ends them all (a wrong URL must not leave a
        worker half running); later outages are each Worker's own."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self.stop)
            except (NotImplementedError, RuntimeError):
                pass
        tasks = [asyncio.create_task(w.run()) for w in self.workers]
        try:
            codes = await asyncio.gather(*tasks)
        except BaseException:
            self.stop()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.failed = next((w.conninfo for w, t in zip(self.workers, tasks, strict=True)
                                if t.done() and not t.cancelled() and t.exception()), None)
            raise
        return max(codes)
