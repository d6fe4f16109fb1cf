"""Waiting in the worker's tasks: when a refused step may run again (Backoff) and a flag
one task waits on (Wakeup)."""

from __future__ import annotations

import asyncio


class Backoff:
    """When a statement the database refused (or a periodic step) may run again: FIRST
    seconds after the first refusal, doubling up to CAP; a success resets it."""

    FIRST = 0.25
    CAP = 5.0

    def __init__(self) -> None:
        self.delay = 0.0
        self.at = 0.0  # time.monotonic() from which it may run

    def due(self, now: float) -> bool:
        return now >= self.at

    def refused(self, now: float, at_least: float = 0.0) -> float:
        """Push the next try back (by at_least seconds or more); the delay."""
        self.delay = min(max(self.delay * 2, self.FIRST), self.CAP)
        self.at = now + max(self.delay, at_least)
        return self.at - now

    def succeeded(self, next_at: float = 0.0) -> None:
        self.delay = 0.0
        self.at = next_at


class Wakeup:
    """A flag one task waits on: set() wakes the waiter at once. Cheaper than an
    asyncio.Event under wait_for, which makes a task per wait and takes three turns of
    the loop to wake it; the main loop waits on one after every claim."""

    __slots__ = ("_set", "_waiter")

    def __init__(self) -> None:
        self._set = False
        self._waiter: asyncio.Future | None = None

    def set(self) -> None:
        self._set = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    def is_set(self) -> bool:
        return self._set

    async def wait(self, timeout: float) -> bool:
        """Until set() or timeout seconds (inf: no limit); True when it was set."""
        if self._set:
            return True
        assert self._waiter is None, "one waiter at a time"
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = (loop.call_later(max(timeout, 0.0), _set_none, waiter)
                 if timeout != float("inf") else None)
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()
        return self._set


def _set_none(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)
