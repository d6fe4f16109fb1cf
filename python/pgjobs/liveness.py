"""Liveness: the heartbeat task.

It only heartbeats, on a connection of its own that it connects and reconnects itself,
so a statement blocked on another connection never makes a live worker look dead. Each
heartbeat keeps this worker registered as alive and answers which jobs it still holds
(and which of them are asked to cancel); the worker judges its running and buffered
jobs by that answer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import psycopg

from .connection import first_line
from .connector import Connector, close_quietly, connection_lost, is_up
from .job import Job
from .jobmanager import JobManager
from .timing import Wakeup

if TYPE_CHECKING:
    from .worker import WorkerOptions

log = logging.getLogger("pgjobs.worker")


class Heartbeat:
    """Heartbeats every heartbeat_interval, or at once after `now.set()`."""

    def __init__(self, connector: Connector, jobs: JobManager, options: WorkerOptions,
                 known: Callable[[], list[Job]],
                 judge: Callable[[list[Job], dict[int, dict]], None]):
        self.connector = connector
        self.jobs = jobs
        self.options = options
        self.worker_id = options.worker_id
        # known(): the jobs running and buffered now; judge(known, held) acts on the
        # heartbeat's answer (held: job id -> row) for the jobs known before it was sent.
        self._known = known
        self._judge = judge
        self.conn: psycopg.AsyncConnection | None = None
        self.now = Wakeup()

    def up(self) -> bool:
        return is_up(self.conn)

    async def run(self) -> None:
        """Heartbeat on a connection of its own, (re)connected here, and act on cancel
        requests and fencing. Nothing but an asyncio cancel ends this loop."""
        conn: psycopg.AsyncConnection | None = None
        try:
            while True:
                self.now.clear()
                try:
                    if conn is None or conn.closed or conn.broken:
                        await close_quietly(conn)
                        conn = self.conn = None
                        conn = self.conn = await self.connector.open_session(
                            "pgjobs-heartbeat")
                    await self._beat(conn)
                except psycopg.Error as exc:
                    if connection_lost(conn, exc):
                        log.warning("worker %s: heartbeat connection lost: %s",
                                    self.worker_id, first_line(exc))
                        await close_quietly(conn)
                        conn = self.conn = None
                    else:
                        self.jobs.refused("worker_heartbeat", exc)
                except Exception:  # noqa: BLE001 - heartbeats must go on whatever happens
                    log.exception("worker %s: heartbeat failed", self.worker_id)
                await self.now.wait(self.options.heartbeat_interval)
        finally:
            self.conn = None
            await close_quietly(conn)

    async def _beat(self, conn: psycopg.AsyncConnection) -> None:
        # Only the jobs held before the heartbeat is sent are judged by its answer: a
        # claim committed on the work connection meanwhile may be missing from it.
        known = self._known()
        try:
            held = await self.jobs.heartbeat(conn)
        except psycopg.Error as exc:
            if exc.sqlstate != "PJ019" or connection_lost(conn, exc):
                raise
            log.error(
                "worker %s was presumed dead and reaped; its running jobs were rescued "
                "and will be fenced. Registering again.", self.worker_id,
                extra={"event": "worker_reaped"},
            )
            await self.jobs.register(conn)
            held = await self.jobs.heartbeat(conn)
        self._judge(known, held)
