"""GET /events: the server-sent event stream every page subscribes to."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import StreamingResponse

KEEPALIVE = 15.0


async def events(request: Request):
    """One `change` event per debounced burst of changes (of any shard); a comment every
    15 s."""
    state = request.app.state.pgjobs
    fanout = await state.fanout()
    queue = fanout.subscribe()

    async def stream():
        """Yield events until the browser goes away or the hub closes."""
        try:
            yield f"event: mode\ndata: {state.live_mode}\n\n"
            while True:
                try:
                    seq = await asyncio.wait_for(queue.get(), KEEPALIVE)
                except asyncio.TimeoutError:
                    yield ": keepalive\n\n"
                    continue
                if seq is None:
                    return
                yield f"event: change\ndata: {seq}\n\n"
        finally:
            fanout.unsubscribe(queue)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
