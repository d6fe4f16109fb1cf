"""The worker's database sessions, safe behind a transaction-mode pooler (PgBouncer).

Nothing here leaves state in a server session that another client of a pool could see:

- Statement limits (statement_timeout, lock_timeout, idle_in_transaction_session_timeout)
  are set with set_config(..., true) in the same implicit transaction as each statement:
  both go in one pipeline, one round trip, and the settings end with that transaction.
- Statements are prepared only when asked (prepare_threshold; None: never), because a
  pooler without prepared-statement support hands the next statement to another server
  session, where the prepared name does not exist (or another one does).
- Opening a session and running its first statement must finish within connect_timeout:
  a pool with no server connection free makes the client wait without a word, and that
  wait becomes ConnectTimeout instead.
"""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
from psycopg import pq
from psycopg.rows import dict_row

from . import sql
from .connection import describe

# How often a silent LISTEN connection repeats its UNLISTEN to reach the pooled server
# process that has the probe's LISTEN.
UNLISTEN_TRIES = 50


class ConnectTimeout(psycopg.OperationalError):
    """Opening a session (or its first statement) took longer than connect_timeout."""


class LimitedConnection(psycopg.AsyncConnection):
    """An autocommit session whose every statement runs under `limits`."""

    # (statement_timeout, lock_timeout, idle_in_transaction_session_timeout) in
    # milliseconds as text; None: no limits set.
    limits: tuple[str, str, str] | None = None


class LimitedCursor(psycopg.AsyncCursor):
    """Runs each statement in one pipeline after set_config(limit, true): the limits hold
    for that statement's transaction only (inside a transaction the caller opened, the
    statement runs as it is)."""

    async def execute(self, query: Any, params: Any = None, **kwargs: Any) -> LimitedCursor:
        conn = self.connection
        limits = getattr(conn, "limits", None)
        if limits is None or conn.info.transaction_status != pq.TransactionStatus.IDLE:
            await super().execute(query, params, **kwargs)
            return self
        async with conn.pipeline():
            await psycopg.AsyncCursor(conn).execute(sql.SET_LOCAL_LIMITS, limits)
            await super().execute(query, params, **kwargs)
        return self


async def open_session(
    conninfo: str,
    application_name: str,
    limits: tuple[str, str, str] | None,
    prepare_threshold: int | None,
    connect_timeout: float,
) -> LimitedConnection:
    """A work, delivery or heartbeat session: autocommit, dict rows, each statement under
    `limits`; connected and answering within connect_timeout (ConnectTimeout if not)."""

    async def connect() -> LimitedConnection:
        conn = await LimitedConnection.connect(
            conninfo, autocommit=True, row_factory=dict_row, cursor_factory=LimitedCursor,
            prepare_threshold=prepare_threshold, application_name=application_name[:63],
        )
        conn.limits = limits
        return conn

    return await answering(connect(), conninfo, connect_timeout)


async def open_plain(conninfo: str, application_name: str, connect_timeout: float,
                     ) -> psycopg.AsyncConnection:
    """An autocommit session that never prepares, for LISTEN: connected and answering
    within connect_timeout."""
    connecting = psycopg.AsyncConnection.connect(
        conninfo, autocommit=True, prepare_threshold=None,
        application_name=application_name[:63],
    )
    return await answering(connecting, conninfo, connect_timeout)


async def answering(connecting: Any, conninfo: str, timeout: float) -> Any:
    """The connection `connecting` (a coroutine) makes, once its first statement answered,
    all within `timeout` seconds (0: no limit); past that, ConnectTimeout naming the
    server and the usual cause. A pool with no server free accepts the client and keeps
    its first statement waiting: that statement is abandoned by closing the socket
    (cancelling it would make psycopg wait for the pooler to acknowledge the cancel)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout if timeout and timeout > 0 else None
    if deadline is None:
        conn = await connecting
    else:
        try:
            conn = await asyncio.wait_for(connecting, timeout)
        except asyncio.TimeoutError:
            raise _timed_out(conninfo, timeout) from None
    ping = asyncio.ensure_future(conn.execute(sql.PING))
    try:
        done, _ = await asyncio.wait(
            {ping}, timeout=None if deadline is None else max(deadline - loop.time(), 0))
        if not done:
            raise _timed_out(conninfo, timeout)
        ping.result()
    except BaseException:
        if not ping.done():
            conn.pgconn.finish()  # the waiting statement fails at once
            ping.cancel()
            await asyncio.gather(ping, return_exceptions=True)
        await conn.close()
        raise
    return conn


def _timed_out(conninfo: str, timeout: float) -> ConnectTimeout:
    return ConnectTimeout(
        f"waited {timeout:g} s for a database connection ({describe(conninfo)}): "
        "the server or its connection pool has none free (a session-mode pool "
        "holds 3-4 server connections per worker: see README, Connection poolers)"
    )


async def listen_if_heard(conn: psycopg.AsyncConnection, work: psycopg.AsyncConnection,
                          listens: tuple[str, ...], nonce: str, timeout: float) -> bool:
    """Run the LISTEN statements `listens` on `conn` once it is proved to be a session of
    its own that hears notifications, and say so (True). A transaction pooler lends the
    server process a statement just used to the next client (the work connection's
    statement lands there), or moves a client's next statement to another one: either
    shows that `conn` is not ours, before any LISTEN. Else a notification with `nonce`,
    sent from `work`, must arrive on `conn` within `timeout` seconds. When it does not,
    the probe's LISTEN is taken back (a pooler may send the UNLISTEN to another process,
    so it is repeated, a few times at most, until it runs there) and nothing was
    LISTENed (False): nothing stays behind on a server connection a pooler lends to
    others. The caller closes `conn` then."""
    pid = await fetch_value(conn, sql.BACKEND_PID)
    if (await fetch_value(work, sql.BACKEND_PID) == pid
            or await fetch_value(conn, sql.BACKEND_PID) != pid):
        return False
    listened_on = await fetch_value(conn, sql.LISTEN_PROBE)
    heard = False
    if listened_on == pid:
        await work.execute(sql.PROBE, (nonce,))
        notes = conn.notifies(timeout=timeout)
        try:
            async for note in notes:
                if note.channel == sql.PROBE_CHANNEL and note.payload == nonce:
                    heard = True
                    break
        finally:
            await notes.aclose()  # (its lock is free again for the statements below)
    if heard:
        for statement in (*listens, sql.UNLISTEN_PROBE):
            await conn.execute(statement)
        return True
    for _ in range(UNLISTEN_TRIES):
        try:
            if await fetch_value(conn, sql.UNLISTEN_PROBE) == listened_on:
                break
        except psycopg.Error:
            break
    return False


async def fetch_value(conn: psycopg.AsyncConnection, query: str) -> object:
    """The first column of a one-row query, whatever the connection's row factory."""
    row = await (await conn.execute(query)).fetchone()
    return next(iter(row.values())) if isinstance(row, dict) else row[0]
