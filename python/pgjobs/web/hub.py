"""Live updates: one LISTEN connection per database (shard), or polling, fanned out to every
browser's SSE stream.

A Fanout holds the browsers' streams and turns every burst of change signals into one
"change" event (debounced). A Hub, one per database, LISTENs on the job channels, proves
the LISTEN works with a probe notification (behind a transaction-mode pooler it is silent,
as the worker finds out too), and kicks the fanout on every notification. A cheap
fingerprint query backs it up every `backstop` seconds (changes such as a claim send no
notification); when LISTEN is silent or disabled, the fingerprint is polled every
`poll_interval` seconds instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets

import psycopg

from ..sessions import listen_if_heard
from . import queries

log = logging.getLogger("pgjobs.web")


class Fanout:
    """Fans change signals (from every shard's hub) out to any number of subscriber queues."""

    def __init__(self, debounce: float = 0.2):
        """No subscriber yet."""
        self.debounce = debounce
        self.seq = 0
        self._subscribers: set[asyncio.Queue] = set()
        self._pending = False

    def subscribe(self) -> asyncio.Queue:
        """A queue that receives the sequence number of each change (None: the end)."""
        q: asyncio.Queue = asyncio.Queue(maxsize=1)
        self._subscribers.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue) -> None:
        """Forget a subscriber (its stream ended)."""
        self._subscribers.discard(q)

    @property
    def subscribers(self) -> int:
        """How many streams are open."""
        return len(self._subscribers)

    def kick(self) -> None:
        """Announce a change: bursts within `debounce` seconds become one event."""
        if self._pending:
            return
        self._pending = True
        asyncio.get_running_loop().call_later(self.debounce, self._flush)

    def _flush(self) -> None:
        """Send one change event to every subscriber (a slow one keeps only the latest)."""
        self._pending = False
        self.seq += 1
        for q in list(self._subscribers):
            _offer(q, self.seq)

    def end(self) -> None:
        """End every subscriber's stream."""
        for q in list(self._subscribers):
            _offer(q, None)


class Hub:
    """One database's source of change signals (LISTEN, else polling), sent to a Fanout."""

    def __init__(self, conninfo: str, connection, fanout: Fanout, *, listen: bool = True,
                 poll_interval: float = 1.0, backstop: float = 2.0,
                 probe_timeout: float = 1.0):
        """Configure; nothing connects until start(). connection(): an async context
        manager lending a pooled connection to this database."""
        self.conninfo = conninfo
        self.connection = connection
        self.fanout = fanout
        self.listen = listen
        self.poll_interval = poll_interval
        self.backstop = backstop
        self.probe_timeout = probe_timeout
        self.mode = "starting" if listen else "poll"
        self._task: asyncio.Task | None = None
        self._conn: psycopg.AsyncConnection | None = None
        self._fingerprint: tuple | None = None

    def start(self) -> None:
        """Run the hub's loop in the current event loop (once)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        """Stop the loop, close the LISTEN connection."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        await self._close_listen()

    def kick(self) -> None:
        """Something changed in this database."""
        self.fanout.kick()

    async def _run(self) -> None:
        """Listen (or poll) until cancelled; reconnect after errors."""
        while True:
            try:
                if self.listen and self._conn is None and self.mode != "silent":
                    self.mode = await self._start_listening()
                if self._conn is not None:
                    async for _note in self._conn.notifies(timeout=self.backstop):
                        self.kick()
                else:
                    await asyncio.sleep(self.poll_interval)
                await self._check_fingerprint()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database went away: try again in a while
                log.warning("pgjobs web: live updates interrupted: %s", exc)
                await self._close_listen()
                await asyncio.sleep(min(5.0, self.poll_interval * 2))

    async def _check_fingerprint(self) -> None:
        """Kick when the fingerprint changed since the last look."""
        async with self.connection() as conn:
            row = await (await conn.execute(queries.FINGERPRINT)).fetchone()
        if self._fingerprint is not None and row != self._fingerprint:
            self.kick()
        self._fingerprint = row

    async def _start_listening(self) -> str:
        """LISTEN and probe: 'listen' when the probe arrives, else 'silent' (we poll)."""
        conn = await psycopg.AsyncConnection.connect(
            self.conninfo, autocommit=True, prepare_threshold=None,
            application_name="pgjobs-web listen")
        async with self.connection() as work:
            heard = await listen_if_heard(conn, work, queries.LISTEN, secrets.token_hex(8),
                                          self.probe_timeout)
        if heard:
            self._conn = conn
            return "listen"
        with contextlib.suppress(psycopg.Error):
            await conn.close()
        log.warning("pgjobs web: notifications do not arrive on the LISTEN connection "
                    "(a transaction-mode pooler?): polling every %g s", self.poll_interval)
        return "silent"

    async def _close_listen(self) -> None:
        """Close the LISTEN connection if open."""
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
            self._conn = None


def _offer(q: asyncio.Queue, item) -> None:
    """Put without waiting: a full queue drops its stale item for the new one."""
    if q.full():
        with contextlib.suppress(asyncio.QueueEmpty):
            q.get_nowait()
    q.put_nowait(item)
