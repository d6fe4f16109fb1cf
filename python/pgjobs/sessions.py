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
        try:
            await conn.execute(sql.PING)
        except BaseException:
            await conn.close()
            raise
        return conn

    return await within(connect(), conninfo, connect_timeout)


async def open_plain(conninfo: str, application_name: str, connect_timeout: float,
                     ) -> psycopg.AsyncConnection:
    """An autocommit session that never prepares, for LISTEN: connected and answering
    within connect_timeout."""

    async def connect() -> psycopg.AsyncConnection:
        conn = await psycopg.AsyncConnection.connect(
            conninfo, autocommit=True, prepare_threshold=None,
            application_name=application_name[:63],
        )
        try:
            await conn.execute(sql.PING)
        except BaseException:
            await conn.close()
            raise
        return conn

    return await within(connect(), conninfo, connect_timeout)


async def within(opening: Any, conninfo: str, timeout: float) -> Any:
    """Await `opening` (a coroutine that connects) for at most `timeout` seconds (0: no
    limit); past that, ConnectTimeout naming the server and the usual cause."""
    if not timeout or timeout <= 0:
        return await opening
    try:
        return await asyncio.wait_for(opening, timeout)
    except asyncio.TimeoutError:
        raise ConnectTimeout(
            f"waited {timeout:g} s for a database connection ({describe(conninfo)}): "
            "the server or its connection pool has none free (a session-mode pool "
            "holds 3-4 server connections per worker: see README, Connection poolers)"
        ) from None
