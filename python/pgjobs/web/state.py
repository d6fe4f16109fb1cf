"""The dashboard's settings and its connections: a psycopg pool and the live-update hub.

Both are created on first use in the running event loop (a mounted sub-application gets
no lifespan events of its own) and closed by the application's lifespan when it has one.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from psycopg_pool import AsyncConnectionPool

from .hub import Hub


@dataclass
class Config:
    """What pgjobs.web.app(...) was given."""

    database_url: str = ""
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
    """Lazily opened pool and hub, bound to the event loop that opened them."""

    def __init__(self, config: Config):
        """Keep the settings; connect later."""
        self.config = config
        self._pool: AsyncConnectionPool | None = None
        self._hub: Hub | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None

    async def pool(self) -> AsyncConnectionPool:
        """The open pool (opened now in this event loop if needed)."""
        loop = asyncio.get_running_loop()
        if self._pool is not None and self._loop is loop:
            return self._pool
        if self._lock is None or self._loop is not loop:
            self._lock = asyncio.Lock()
            self._loop = loop
            self._pool = None
            self._hub = None
        async with self._lock:
            if self._pool is None:
                pool = AsyncConnectionPool(
                    self.config.database_url, min_size=1, max_size=self.config.pool_size,
                    kwargs={"autocommit": True, "prepare_threshold": None,
                            "application_name": "pgjobs-web"},
                    open=False, name="pgjobs-web",
                )
                await pool.open(wait=True, timeout=10)
                self._pool = pool
        return self._pool

    async def hub(self) -> Hub:
        """The live-update hub (started on first use)."""
        pool = await self.pool()
        if self._hub is None:
            self._hub = Hub(self.config.database_url, pool, listen=self.config.listen,
                            poll_interval=self.config.poll_interval)
            self._hub.start()
        return self._hub

    @property
    def live_mode(self) -> str:
        """listen, silent (LISTEN hears nothing: polling), poll (--no-listen) or starting."""
        if self._hub is None:
            return "starting" if self.config.listen else "poll"
        return self._hub.mode

    def kick(self) -> None:
        """Tell every browser something changed (after an action of ours)."""
        if self._hub is not None and self._loop is asyncio.get_running_loop():
            self._hub.kick()

    async def close(self) -> None:
        """Close the hub and the pool."""
        if self._hub is not None:
            await self._hub.close()
            self._hub = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


def env_credentials() -> tuple[str | None, str | None]:
    """PGJOBS_WEB_USER and PGJOBS_WEB_PASSWORD (None when unset or empty)."""
    return (os.environ.get("PGJOBS_WEB_USER") or None,
            os.environ.get("PGJOBS_WEB_PASSWORD") or None)
