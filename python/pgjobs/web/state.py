"""The dashboard's settings and its connections: per database (shard) a psycopg pool and a
live-update hub, and one fanout of their change signals to the browsers.

All are created on first use in the running event loop (a mounted sub-application gets no
lifespan events of its own) and closed by the application's lifespan when it has one.
With several databases (shards), a shard that cannot be reached fails fast (a direct
connection attempt of at most CONNECT_TIMEOUT seconds before its pool opens, and its pool
is dropped after any connection error) so that the pages show the other shards.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from ..connection import first_line
from .hub import Fanout, Hub

CONNECT_TIMEOUT = 3


@dataclass
class Config:
    """What pgjobs.web.app(...) was given."""

    urls: list[str] = field(default_factory=lambda: [""])
    read_only: bool = False
    tenant: str | None = None
    auth: Callable[[Any], bool | Awaitable[bool]] | None = None
    user: str | None = None
    password: str | None = None
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    listen: bool = True
    poll_interval: float = 1.0
    page_size: int = 50
    exact_below: int = 200_000
    budget_ms: int = 250
    pool_size: int = 4


class State:
    """Lazily opened pools and hubs (one each per shard), bound to the event loop that
    opened them."""

    def __init__(self, config: Config):
        """Keep the settings; connect later."""
        self.config = config
        self._pools: list[AsyncConnectionPool | None] = [None] * len(config.urls)
        self._hubs: list[Hub] = []
        self._fanout: Fanout | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._locks: list[asyncio.Lock] = []

    @property
    def sharded(self) -> bool:
        """Several databases (shards), added up on the pages."""
        return len(self.config.urls) > 1

    @property
    def shards(self) -> range:
        """The shard indexes (0 .. n-1, the order of the URLs)."""
        return range(len(self.config.urls))

    def _bind(self) -> None:
        """Forget pools and hubs of another (finished) event loop."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop = loop
            self._locks = [asyncio.Lock() for _ in self.shards]
            self._pools = [None] * len(self.config.urls)
            self._hubs = []
            self._fanout = None

    async def pool(self, shard: int = 0) -> AsyncConnectionPool:
        """The shard's open pool (opened now in this event loop if needed)."""
        self._bind()
        if self._pools[shard] is not None:
            return self._pools[shard]
        async with self._locks[shard]:
            if self._pools[shard] is None:
                url = self.config.urls[shard]
                if self.sharded:  # a shard that is down: fail now, not after the pool's wait
                    probe = await psycopg.AsyncConnection.connect(
                        url, connect_timeout=CONNECT_TIMEOUT, autocommit=True)
                    await probe.close()
                pool = AsyncConnectionPool(
                    url, min_size=1, max_size=self.config.pool_size,
                    kwargs={"autocommit": True, "prepare_threshold": None,
                            "application_name": "pgjobs-web"},
                    open=False, name=f"pgjobs-web-{shard}",
                    timeout=2 * CONNECT_TIMEOUT if self.sharded else 30.0,
                )
                try:
                    await pool.open(wait=True, timeout=10)
                except BaseException:
                    await pool.close()
                    raise
                self._pools[shard] = pool
        return self._pools[shard]

    @contextlib.asynccontextmanager
    async def connection(self, shard: int = 0) -> AsyncIterator[psycopg.AsyncConnection]:
        """A pooled connection to the shard; with several shards, a connection error
        drops that shard's pool (the next use tries to connect afresh, quickly)."""
        pool = await self.pool(shard)
        lent = None
        try:
            async with pool.connection() as conn:
                lent = conn
                yield conn
        except psycopg.OperationalError:
            lost = lent is None or lent.closed or lent.broken  # (not a mere query error)
            if self.sharded and lost and self._pools[shard] is pool:
                self._pools[shard] = None
                await pool.close(timeout=1)
            raise

    async def each(self, work: Callable[[psycopg.AsyncConnection, int], Awaitable[Any]],
                   shards: list[int] | None = None) -> list[tuple[int, Any, str | None]]:
        """work(conn, shard) on every shard (or these) at once: (shard, result, None), or
        (shard, None, error) for a shard that cannot be reached. With a single database
        its error propagates (the page answers 503, as it always did)."""
        async def one(shard: int) -> tuple[int, Any, str | None]:
            try:
                async with self.connection(shard) as conn:
                    return shard, await work(conn, shard), None
            except psycopg.OperationalError as exc:
                if not self.sharded:
                    raise
                return shard, None, first_line(exc)

        return list(await asyncio.gather(*(one(s) for s in (
            self.shards if shards is None else shards))))

    async def fanout(self) -> Fanout:
        """The change signals of every shard (their hubs started on first use)."""
        if not self.sharded:
            await self.pool()  # (the one database down: the stream answers 503)
        self._bind()
        if self._fanout is None:
            self._fanout = Fanout()
            for shard, url in enumerate(self.config.urls):
                hub = Hub(url, functools.partial(self.connection, shard), self._fanout,
                          listen=self.config.listen, poll_interval=self.config.poll_interval)
                hub.start()
                self._hubs.append(hub)
        return self._fanout

    @property
    def live_mode(self) -> str:
        """listen, silent (LISTEN hears nothing: polling), poll (--no-listen), starting, or
        mixed (shards in different modes)."""
        modes = {hub.mode for hub in self._hubs}
        if not modes:
            return "starting" if self.config.listen else "poll"
        if len(modes) > 1:
            modes.discard("starting")  # (a shard that is down: the others say how it goes)
        return modes.pop() if len(modes) == 1 else "mixed"

    def kick(self) -> None:
        """Tell every browser something changed (after an action of ours)."""
        if self._fanout is not None and self._loop is asyncio.get_running_loop():
            self._fanout.kick()

    async def close(self) -> None:
        """Close the hubs, end the streams, close the pools."""
        for hub in self._hubs:
            await hub.close()
        self._hubs = []
        if self._fanout is not None:
            self._fanout.end()
            self._fanout = None
        for shard, pool in enumerate(self._pools):
            if pool is not None:
                await pool.close()
                self._pools[shard] = None


def env_credentials() -> tuple[str | None, str | None]:
    """PGJOBS_WEB_USER and PGJOBS_WEB_PASSWORD (None when unset or empty)."""
    return (os.environ.get("PGJOBS_WEB_USER") or None,
            os.environ.get("PGJOBS_WEB_PASSWORD") or None)
