"""pgjobs.listen() / listen_async(): the connection is free between events (left with
`break`, the iterator still referenced, it still executes and commits within seconds),
close() and the (async) context manager UNLISTEN and end the iteration, the timeout ends
it, and no event is lost to a break or to other use of the connection.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pgjobs
import psycopg
import pytest

HARD_TIMEOUT = 5.0  # a call on a connection that is free returns well within this


def within(fn: Callable[[], Any], what: str, seconds: float = HARD_TIMEOUT) -> Any:
    """fn() on a daemon thread; fail (not hang) if it has not returned after `seconds`
    (a connection left locked blocks every call on it)."""
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised below, on the test's thread
            result["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"{what}: still blocked after {seconds} s")
    if "error" in result:
        raise result["error"]
    return result.get("value")


def within_async(coro: Any, what: str, seconds: float = HARD_TIMEOUT) -> Any:
    async def run() -> Any:
        try:
            return await asyncio.wait_for(coro, seconds)
        except TimeoutError:
            pytest.fail(f"{what}: still blocked after {seconds} s")
    return run()


def run_async(main: Callable[[], Any]) -> None:
    """asyncio.run(main()) with a hard limit: a connection left locked would otherwise hang
    the test in its own cleanup (the rollback or close of `async with`)."""
    within(lambda: asyncio.run(main()), "the async test", seconds=3 * HARD_TIMEOUT)


@pytest.fixture
def send(connect) -> Callable[..., None]:
    """send(*events, channel=...): one committed notification per argument (a dict, or a
    list of them for a batch), from a session of its own."""
    sender = connect()

    def _send(*events: object, channel: str = "jobs:stopped") -> None:
        for event in events:
            sender.execute("SELECT pg_notify(%s, %s)", (channel, json.dumps(event)))

    return _send


def channels(conn: psycopg.Connection) -> list[str]:
    return sorted(r[0] for r in conn.execute("SELECT pg_listening_channels()"))


LISTENED = ["jobs:bundle_stopped", "jobs:stopped"]


# -- sync --------------------------------------------------------------------------------------

def test_break_keeps_the_iterator_but_frees_the_connection(connect, send):
    conn = connect()
    events = pgjobs.listen(conn, timeout=HARD_TIMEOUT)
    send({"id": 1}, {"id": 2})
    for event in events:
        assert event.data == {"id": 1}
        break
    assert within(lambda: conn.execute("SELECT 41 + 1").fetchone()[0],
                  "execute after break") == 42
    # The iterator goes on where it left off, the connection still free afterwards.
    assert next(events).data == {"id": 2}
    within(lambda: conn.execute("SELECT 1"), "execute after next()")


def test_break_then_the_commit_at_the_end_of_a_with_block(db):
    conn = psycopg.connect(db.info.dsn, autocommit=True)
    try:
        events = pgjobs.listen(conn, timeout=HARD_TIMEOUT)
        conn.execute("""SELECT pg_notify('jobs:stopped', '{"id": 7}')""")
        for event in events:
            assert event.data == {"id": 7}
            break

        def leave_with_block() -> None:
            with conn:  # commits, then closes
                conn.execute("SELECT 1")

        within(leave_with_block, "the with block's commit")
        assert conn.closed
        del events
    finally:
        conn.close()


def test_a_batch_left_in_the_middle_loses_nothing(connect, send):
    conn = connect()
    events = pgjobs.listen(conn, timeout=HARD_TIMEOUT)
    send([{"id": 1}, {"id": 2}, {"id": 3}])
    assert next(events).data == {"id": 1}
    within(lambda: conn.execute("SELECT 1"), "execute in the middle of a batch")
    assert [next(events).data for _ in range(2)] == [{"id": 2}, {"id": 3}]


def test_events_sent_while_the_connection_is_busy_are_delivered(connect, send):
    conn = connect()
    events = pgjobs.listen(conn, timeout=HARD_TIMEOUT)
    send({"id": 1})
    assert next(events).data == {"id": 1}
    sent = threading.Timer(0.2, send, args=({"id": 2},))
    sent.start()
    within(lambda: conn.execute("SELECT pg_sleep(0.6)"), "a query between two events")
    sent.join()
    assert next(events).data == {"id": 2}


def test_close_unlistens_and_ends_the_iteration(connect, send):
    conn = connect()
    events = pgjobs.listen(conn, timeout=HARD_TIMEOUT)
    assert channels(conn) == LISTENED
    send({"id": 1}, {"id": 2})
    for _ in events:
        break
    within(events.close, "close()")
    assert channels(conn) == []
    started = time.monotonic()
    assert list(events) == []  # ended at once: no wait for the timeout
    assert time.monotonic() - started < 1
    events.close()  # a second close is harmless


def test_context_manager_unlistens_on_exit(connect, send):
    conn = connect()

    def use() -> list[dict]:
        got = []
        with pgjobs.listen(conn, timeout=HARD_TIMEOUT) as events:
            assert channels(conn) == LISTENED
            send({"id": 1}, {"id": 2})
            for event in events:
                got.append(event.data)
                break
        return got

    assert within(use, "a with block around listen()") == [{"id": 1}]
    assert channels(conn) == []
    within(lambda: conn.execute("SELECT 1"), "execute after the with block")


def test_timeout_ends_a_plain_for_loop(connect, send):
    conn = connect()
    events = pgjobs.listen(conn, timeout=0.3)
    send({"id": 1}, [{"id": 2}, {"id": 3}])  # committed before the loop starts: kept
    started = time.monotonic()
    got = within(lambda: [e.data for e in events], "a loop that should time out")
    assert got == [{"id": 1}, {"id": 2}, {"id": 3}]
    assert 0.3 <= time.monotonic() - started < 3
    assert channels(conn) == []  # the timed-out iterator stopped listening


def test_other_channels_are_not_events(connect, send):
    conn = connect()
    conn.execute('LISTEN "mine"')
    events = pgjobs.listen(conn, timeout=0.5)
    send("not an event", channel="mine")
    send({"id": 5}, channel="jobs:bundle_stopped")
    got = within(lambda: list(events), "listen() with another channel's notification")
    assert got == [pgjobs.Event("jobs:bundle_stopped", {"id": 5})]


# -- async -------------------------------------------------------------------------------------

def test_async_break_keeps_the_iterator_but_frees_the_connection(db, send):
    async def main() -> None:
        async with await psycopg.AsyncConnection.connect(db.info.dsn, autocommit=True) as conn:
            events = pgjobs.listen_async(conn, timeout=HARD_TIMEOUT)
            async with events:  # listening from here on
                send({"id": 1}, [{"id": 2}, {"id": 3}])
                async for event in events:
                    assert event.data == {"id": 1}
                    break
                cur = await within_async(conn.execute("SELECT 41 + 1"), "execute after break")
                assert (await cur.fetchone())[0] == 42
                assert (await events.__anext__()).data == {"id": 2}
                await within_async(conn.execute("SELECT 1"), "execute in a batch")
                assert (await events.__anext__()).data == {"id": 3}
            # the commit at the end of the connection's async with block
            await within_async(conn.commit(), "commit after the iterator")

    run_async(main)


def test_async_close_unlistens_and_ends_the_iteration(db, send):
    async def main() -> None:
        async with await psycopg.AsyncConnection.connect(db.info.dsn, autocommit=True) as conn:
            events = pgjobs.listen_async(conn, timeout=HARD_TIMEOUT)
            asyncio.get_running_loop().call_later(0.2, send, {"id": 1}, {"id": 2})
            async for event in events:  # listening from the first __anext__
                assert event.data == {"id": 1}
                break
            await within_async(events.close(), "close()")
            cur = await conn.execute("SELECT pg_listening_channels()")
            assert await cur.fetchall() == []
            assert [e async for e in events] == []
            await events.aclose()  # a second close is harmless

    run_async(main)


def test_async_context_manager_and_timeout(db, send):
    async def main() -> None:
        async with await psycopg.AsyncConnection.connect(db.info.dsn, autocommit=True) as conn:
            async with pgjobs.listen_async(conn, timeout=0.3) as events:
                send({"id": 1})
                started = time.monotonic()
                got = await within_async(_collect(events), "a loop that should time out")
                assert got == [{"id": 1}]
                assert 0.3 <= time.monotonic() - started < 3
            cur = await conn.execute("SELECT pg_listening_channels()")
            assert await cur.fetchall() == []

            async with pgjobs.listen_async(conn, timeout=HARD_TIMEOUT) as events:
                send({"id": 2}, {"id": 3})
                async for _ in events:
                    break
            cur = await within_async(conn.execute("SELECT pg_listening_channels()"),
                                     "execute after the async with block")
            assert await cur.fetchall() == []

    run_async(main)


async def _collect(events: Any) -> list[dict]:
    return [e.data async for e in events]
