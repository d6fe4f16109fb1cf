"""The worker's connections and notifications.

The Connector owns the work connection (claims, releases, housekeeping) and the LISTEN
connection with its listener task; it opens the sessions of the delivery and heartbeat
tasks too (each task keeps its own). It connects, proves that LISTEN hears (a probe at
every (re)connect: behind a transaction-mode pooler notifications do not arrive, and the
worker then says so once and polls), reconnects with a backoff, and turns notifications
into calls: new jobs, a cancel request for one job, the listener lost.

The statements that register the worker and record how it wakes up belong to the job
manager: the worker hands them in as hooks run on every new work connection.

Database errors come in two kinds, told apart here: a lost connection (connection_lost)
means reconnecting; anything else is the database refusing one statement on a live
connection.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import psycopg

from . import sql
from .connection import describe, first_line
from .sessions import ConnectTimeout, listen_if_heard, open_plain, open_session

if TYPE_CHECKING:
    from .worker import WorkerOptions

log = logging.getLogger("pgjobs.worker")

# Refusals after which the same statement may well succeed later: lock not available
# (lock_timeout), query cancelled (statement_timeout), serialization failure, deadlock,
# notification queue full, and class 53 (insufficient resources).
TRANSIENT_SQLSTATES = frozenset({"55P03", "57014", "40001", "40P01", "54000"})
# The server ended the session: shutdown, crash shutdown, cannot connect now.
SESSION_ENDED_SQLSTATES = frozenset({"57P01", "57P02", "57P03"})

Hook = Callable[[psycopg.AsyncConnection], Awaitable[None]]


def connection_lost(conn: psycopg.AsyncConnection | None, exc: psycopg.Error) -> bool:
    """True when exc means the connection is gone (reconnect); False when the database
    refused one statement on a live connection. Decided from the connection's state and
    the SQLSTATE, never from the exception's class: psycopg raises OperationalError for
    classes 53-58 too (54001 stack depth, 55P03 lock timeout, ...)."""
    if conn is None or conn.closed or conn.broken:
        return True
    state = exc.sqlstate
    if state is None:
        # Nothing came from the server: a failure to talk to it, unless psycopg itself
        # refused to send a value (a DataError, say), which leaves the session usable.
        return isinstance(exc, psycopg.OperationalError)
    return state.startswith("08") or state in SESSION_ENDED_SQLSTATES


def is_transient(exc: psycopg.Error) -> bool:
    state = exc.sqlstate or ""
    return state in TRANSIENT_SQLSTATES or state.startswith("53")


def is_up(conn: psycopg.AsyncConnection | None) -> bool:
    return conn is not None and not conn.closed and not conn.broken


def milliseconds(seconds: float | None) -> str:
    """A timeout setting's value in whole milliseconds: '0' (no limit) for None or 0, at
    least '1' for any positive number (a tiny limit must not turn into none)."""
    if not seconds or seconds <= 0:
        return "0"
    return str(max(round(seconds * 1000), 1))


async def close_quietly(conn: psycopg.AsyncConnection | None) -> None:
    if conn is not None:
        try:
            await conn.close()
        except Exception:  # noqa: BLE001 - a broken connection may fail to close
            pass


class Connector:
    """The work and LISTEN connections of one worker, and the sessions of its tasks."""

    def __init__(self, conninfo: str, options: WorkerOptions, *,
                 on_open: Hook, on_wakeup: Callable[[psycopg.AsyncConnection, str],
                                                    Awaitable[None]],
                 on_connected: Callable[[bool], None], on_jobs: Callable[[], None],
                 on_cancel: Callable[[int], None], on_listener_lost: Callable[[], None]):
        self.conninfo = conninfo
        self.options = options
        self.worker_id = options.worker_id
        # on_open(work) registers the worker; on_wakeup(work, wakeup) records how it
        # wakes up; on_connected(reconnected) follows every successful (re)connect.
        self._on_open = on_open
        self._on_wakeup = on_wakeup
        self._on_connected = on_connected
        self._on_jobs = on_jobs
        self._on_cancel = on_cancel
        self._on_listener_lost = on_listener_lost
        self.work: psycopg.AsyncConnection | None = None
        self.listen_conn: psycopg.AsyncConnection | None = None
        self.listener: asyncio.Task | None = None
        # How new jobs wake this worker: listen, silent (LISTEN hears nothing: polling) or
        # poll (no LISTEN); None before the first connect.
        self.wakeup: str | None = None
        self._connected_once = False

    # -- sessions -----------------------------------------------------------------------

    async def open_session(self, role: str) -> psycopg.AsyncConnection:
        """A work, delivery or heartbeat session: autocommit, named after this worker,
        each statement under the worker's limits (sessions.py)."""
        o = self.options
        return await open_session(self.conninfo, f"{role} {self.worker_id}",
                                  self.session_limits(), o.prepare_threshold,
                                  o.connect_timeout)

    def session_limits(self) -> tuple[str, str, str]:
        """statement_timeout, lock_timeout and idle_in_transaction_session_timeout of each
        statement on the work, delivery and heartbeat sessions, as SET_LOCAL_LIMITS takes
        them (all of them here, in one place)."""
        return (
            milliseconds(self.options.statement_timeout),
            milliseconds(self.options.lock_timeout),
            milliseconds(self.options.idle_in_transaction_timeout),
        )

    def listen_url(self) -> str:
        return self.options.listen_conninfo or self.conninfo

    # -- connecting ---------------------------------------------------------------------

    async def connect_first(self) -> None:
        """The first connect: a server that cannot be reached ends the worker (a wrong
        URL must not retry forever), one that keeps it waiting for a connection (a full
        pool) is reported and tried again."""
        delay = 0.5
        while True:
            try:
                await self.connect()
                return
            except ConnectTimeout as exc:
                log.error("worker %s: %s (retry in %.1f s)", self.worker_id,
                          first_line(exc), delay, extra={"event": "connect_timeout"})
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.options.reconnect_max_delay)

    async def connect(self) -> None:
        try:
            await self._open()
        except BaseException:
            # Half-open (e.g. a statement timed out after connecting): close what opened,
            # so a retry does not leak connections.
            await self.close()
            raise
        reconnected, self._connected_once = self._connected_once, True
        self._on_connected(reconnected)

    async def _open(self) -> None:
        self.work = await self.open_session("pgjobs-worker")
        await self._on_open(self.work)
        wakeup = await self._start_listening() if self.options.listen else "poll"
        if wakeup != self.wakeup:
            if wakeup == "silent":
                log.warning(
                    "worker %s: notifications do not arrive on the LISTEN connection (%s; a "
                    "transaction-mode pooler?): polling every %g s. Give LISTEN a direct "
                    "connection with --listen-database-url, or pass --no-listen",
                    self.worker_id, describe(self.listen_url()), self.options.poll_interval,
                    extra={"event": "listen_silent"},
                )
            elif self.wakeup == "silent":
                log.info("worker %s: notifications arrive again", self.worker_id)
            self.wakeup = wakeup
        await self._on_wakeup(self.work, wakeup)
        if self._connected_once:
            log.info("worker %s reconnected", self.worker_id)

    async def ensure(self, deadline: float | None = None,
                     stopping: Callable[[], bool] = lambda: False) -> None:
        """Connected when this returns: reconnect (with a backoff) if anything is down.
        Past `deadline`, TimeoutError; while stopping without a deadline, the error."""
        if self.healthy():
            return
        await self.close()
        delay = 0.05
        while True:
            try:
                await self.connect()
                return
            except psycopg.Error as exc:
                # Unreachable, kept waiting for a connection (a full pool), or refused
                # while setting up (registration timed out on a lock, say): either way,
                # start over after a while.
                if deadline is not None and time.monotonic() + delay > deadline:
                    raise TimeoutError("database unreachable") from exc
                log.log(
                    logging.ERROR if isinstance(exc, ConnectTimeout) else logging.WARNING,
                    "worker %s cannot reach the database (retry in %.2f s): %s",
                    self.worker_id, delay, first_line(exc),
                )
                if stopping() and deadline is None:
                    raise
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, self.options.reconnect_max_delay)

    def healthy(self) -> bool:
        """The work connection is up, and so is the listener when this worker listens."""
        return is_up(self.work) and (self.wakeup != "listen" or (
            self.listen_conn is not None
            and not self.listen_conn.closed
            and self.listener is not None
            and not self.listener.done()
        ))

    async def close(self) -> None:
        """Close the work and LISTEN connections (the heartbeat and delivery tasks own
        theirs)."""
        if self.listener is not None:
            self.listener.cancel()
            try:
                await self.listener
            except (asyncio.CancelledError, Exception):
                pass
            self.listener = None
        for conn in (self.work, self.listen_conn):
            await close_quietly(conn)
        self.work = self.listen_conn = None

    # -- LISTEN -------------------------------------------------------------------------

    async def _start_listening(self) -> str:
        """Open the LISTEN connection and probe it (sessions.listen_if_heard): 'listen'
        when it hears a notification sent from the work connection (the listener task
        then runs), 'silent' when it does not (the connection is closed: the worker
        polls)."""
        o = self.options
        conn = self.listen_conn = await open_plain(
            self.listen_url(), f"pgjobs-listen {self.worker_id}", o.connect_timeout)
        nonce = f"{self.worker_id} {random.getrandbits(64):016x}"
        if not await listen_if_heard(conn, self.work, sql.LISTEN, nonce, o.probe_timeout):
            await close_quietly(conn)
            self.listen_conn = None
            return "silent"
        # A session of our own, then: it idles by design, so no idle-session or statement
        # limit may end it (session settings are safe here).
        await conn.execute(
            sql.SET_LISTEN_SESSION_TIMEOUTS if conn.info.server_version >= 140000
            else sql.SET_LISTEN_SESSION_TIMEOUTS_PG13,
            (milliseconds(o.idle_in_transaction_timeout),),
        )
        self.listener = asyncio.create_task(self._listen(conn))
        return "listen"

    async def _listen(self, conn: psycopg.AsyncConnection) -> None:
        try:
            async for note in conn.notifies():
                self._dispatch(note)
        except psycopg.Error as exc:
            log.warning("worker %s: LISTEN connection lost: %s", self.worker_id, exc)
        finally:
            self._on_listener_lost()

    def _dispatch(self, note: psycopg.Notify) -> None:
        """A cancel request names its job; anything else but other workers' probes means
        new jobs."""
        if note.channel == sql.CANCEL_CHANNEL:
            if note.payload.isdigit():
                self._on_cancel(int(note.payload))
        elif note.channel != sql.PROBE_CHANNEL:
            self._on_jobs()
