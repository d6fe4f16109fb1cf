"""Running handlers: a fixed set of runner coroutines, one per slot of `concurrency`, and
a pool of reusable threads for plain (sync) handlers.

Each runner takes the next job from the prefetch buffer, runs its handler and reports
the outcome, then takes the next: no task or thread is created per job. A handler is
stopped through its job's control (`request_stop`): a timeout (counted from the
handler's start), a cancel request, a claim lost to fencing, or the shutdown.

- An async handler runs inside its runner; a stop cancels the runner, so the handler
  sees CancelledError where it awaits. One that ignores it and goes on is abandoned
  after `cancel_grace`: its outcome is recorded and a new runner takes its slot.
- A sync handler runs on a pool thread while its runner waits; a stop sets
  `job.cancelled` / `job.stop_event` and the runner stops waiting at once: the thread
  is abandoned (it finishes in the background, then serves again), the slot is free.

Either way the outcome follows the stop's reason: fenced means none (the claim is not
ours), cancel means cancelled, timeout means failed; a handler that returned normally
completed, unless it was cancelled on request.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from .job import Job
from .outcome import Outcome, jsonable
from .prefetch import Prefetch
from .tasks import Handler, default_timeout, is_async

# A runner whose handlers never await lets the loop run after this many jobs.
YIELD_EVERY = 4

# finished(job, outcome or None when fenced, seconds the handler ran)
Finished = Callable[[Job, "Outcome | None", float], None]


class _Slot:
    """One runner: its task and the job it runs now."""

    __slots__ = ("task", "job", "started", "stopping", "abandoned", "grace", "on_stop")

    def __init__(self) -> None:
        self.task: asyncio.Task | None = None
        self.job: Job | None = None
        self.started = 0.0  # time.monotonic() when the handler started
        self.stopping = False  # its job was asked to stop (and the task cancelled)
        self.abandoned = False  # its handler ignored the stop: the slot is given up
        self.grace: asyncio.TimerHandle | None = None
        # The job's control.on_stop while it runs: one callable per slot, not per job.
        self.on_stop: Callable[[], None] | None = None


class Runners:
    """`concurrency` runners taking jobs from the prefetch buffer."""

    def __init__(self, prefetch: Prefetch, handlers: dict[str, Handler], concurrency: int,
                 default_timeout: float | None, cancel_grace: float, finished: Finished,
                 started: Callable[[Job], None]):
        self._prefetch = prefetch
        self._handlers = handlers
        self._async = {name: is_async(h) for name, h in handlers.items()}
        self._concurrency = concurrency
        self._default_timeout = default_timeout
        self._cancel_grace = cancel_grace
        self._finished = finished
        self._started = started
        # job id -> job, for the jobs whose handlers run now (and count as running).
        self.running: dict[int, Job] = {}
        self._slots: set[_Slot] = set()
        # Runners with nothing to do, each waiting on its future: True when jobs came,
        # False when the runners close.
        self._idle: deque[asyncio.Future] = deque()
        self._closed = False
        self._threads = ThreadPool()
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for _ in range(self._concurrency):
            self._spawn()

    def _spawn(self) -> None:
        slot = _Slot()
        slot.on_stop = lambda: self._interrupt(slot)
        self._slots.add(slot)
        slot.task = self._loop.create_task(self._run_slot(slot), name="pgjobs-runner")

    def feed(self) -> None:
        """Jobs arrived in the buffer: wake as many idle runners. A job stays in the
        buffer until a runner starts it, so it is always either buffered or running."""
        idle = self._idle
        for _ in range(min(len(idle), len(self._prefetch))):
            _wake(idle.popleft(), True)

    def close(self) -> None:
        """No more jobs: idle runners end; busy ones end after their current job."""
        self._closed = True
        while self._idle:
            _wake(self._idle.popleft(), False)

    async def wait(self, timeout: float) -> None:
        """Until every runner has ended (the running handlers finished) or timeout."""
        tasks = [s.task for s in self._slots if s.task is not None and not s.task.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    def abandon_all(self) -> list[Job]:
        """Shutdown: stop every running handler and give up its slot; the jobs, which
        get no outcome (the caller releases them)."""
        jobs = []
        for slot in list(self._slots):
            job = slot.job
            if job is None or slot.abandoned:
                continue
            job.control.request_stop("shutdown")  # cancels an async handler
            self._give_up(slot)
            jobs.append(job)
        self._threads.close()
        return jobs

    def busy_threads(self) -> int:
        """Pool threads still running a handler (abandoned ones, after abandon_all)."""
        return self._threads.busy

    # -- one slot -------------------------------------------------------------------

    async def _run_slot(self, slot: _Slot) -> None:
        prefetch, idle = self._prefetch, self._idle
        ran = 0
        while not self._closed:
            job = prefetch.take()
            if job is None:
                waiter = self._loop.create_future()
                idle.append(waiter)
                if not await waiter:
                    return
                continue
            await self._run(slot, job)
            if slot.abandoned:
                return
            ran += 1
            if ran % YIELD_EVERY == 0:
                # Let the loop breathe: handlers that never await would otherwise keep
                # claims, outcomes and heartbeats waiting for the whole buffer.
                await asyncio.sleep(0)

    async def _run(self, slot: _Slot, job: Job) -> None:
        handler = self._handlers[job.task_identifier]
        control = job.control
        # A job stopped before it started is taken out of the buffer, never handed out.
        assert control.stop_reason is None, (job.id, control.stop_reason)
        loop = self._loop
        slot.job = job
        self.running[job.id] = job
        self._started(job)
        slot.started = started = time.monotonic()
        timeout = self._timeout_for(job, handler)
        timer = (loop.call_at(loop.time() + timeout, control.request_stop, "timeout")
                 if timeout is not None else None)
        control.on_stop = slot.on_stop
        raised: BaseException | None = None
        result: Any = None
        try:
            if self._async[job.task_identifier]:
                result = await handler(job.payload, job)
            else:
                result = await self._threads.submit(loop, handler, job)
        except asyncio.CancelledError as exc:
            if not slot.stopping and _cancelling(slot.task):
                raise  # the runner itself is cancelled (the loop is closing)
            raised = exc  # stopped by us, or the handler's own CancelledError
        except BaseException as exc:  # noqa: BLE001 - a handler's failure is data
            raised = exc
        finally:
            if timer is not None:
                timer.cancel()
            control.on_stop = None
            if slot.stopping:
                slot.stopping = False
                if _cancelling(slot.task):
                    slot.task.uncancel()
            if slot.grace is not None:
                slot.grace.cancel()
                slot.grace = None
        if slot.abandoned:
            return  # given up meanwhile: its outcome was settled then (or it is released)
        slot.job = None
        del self.running[job.id]
        self._finished(job, _outcome(job, raised, result, timeout),
                       time.monotonic() - started)

    def _timeout_for(self, job: Job, handler: Handler) -> float | None:
        if job.timeout is not None:
            return job.timeout.total_seconds()
        return default_timeout(handler) or self._default_timeout

    def _interrupt(self, slot: _Slot) -> None:
        """A stop was requested for the job this slot runs: cancel the handler; an async
        one gets cancel_grace to end before its slot is given up."""
        job = slot.job
        if job is None or slot.stopping or slot.abandoned:
            return
        slot.stopping = True
        slot.task.cancel()
        if self._async[job.task_identifier]:
            slot.grace = self._loop.call_later(self._cancel_grace, self._abandon, slot, job)

    def _abandon(self, slot: _Slot, job: Job) -> None:
        """The handler ignored its stop for cancel_grace: record its outcome now, give up
        the slot (a new runner takes it) and let the handler go on alone."""
        slot.grace = None
        if slot.job is not job or slot.abandoned:
            return
        ran = time.monotonic() - slot.started
        self._give_up(slot)
        timeout = self._timeout_for(job, self._handlers[job.task_identifier])
        self._finished(job, _outcome(job, None, None, timeout, ignored=True), ran)

    def _give_up(self, slot: _Slot) -> None:
        job = slot.job
        slot.abandoned = True
        slot.job = None
        self._slots.discard(slot)
        if job is not None:
            self.running.pop(job.id, None)
        if not self._closed:
            self._spawn()


def _cancelling(task: asyncio.Task) -> int:
    """Pending cancel requests of the task (Python 3.11+; 0 on 3.10, which does not
    count them and so needs no uncancel)."""
    cancelling = getattr(task, "cancelling", None)
    return cancelling() if cancelling is not None else 0


def _wake(waiter: asyncio.Future, value: bool) -> None:
    if not waiter.done():  # not cancelled with its runner
        waiter.set_result(value)


def _outcome(job: Job, raised: BaseException | None, result: Any, timeout: float | None,
             ignored: bool = False) -> Outcome | None:
    """The outcome of one attempt (None when fenced: the claim is not ours)."""
    reason = job.control.stop_reason
    if reason == "fenced":
        return None
    if reason == "cancel":
        # Before the return value: a handler that saw job.cancelled and returned early
        # was cancelled, not completed (whichever of its return and the stop came first).
        return Outcome(job, "cancelled", error="cancelled on request")
    if raised is None and not ignored:
        return Outcome(job, "completed", result=jsonable(result))
    if reason == "timeout":
        return Outcome(
            job, "failed", error=f"timed out after {timeout:g} s",
            error_data={"type": "Timeout", "timeout_seconds": timeout},
        )
    if raised is None or isinstance(raised, asyncio.CancelledError):
        return Outcome(job, "failed", error="handler was cancelled")
    return Outcome.raised(job, raised)


class ThreadPool:
    """Threads for sync handlers, reused from job to job. A thread whose handler was
    abandoned (it ignored its stop) keeps running it; a new thread is started whenever
    no idle one is left, so an abandoned handler never holds up another job."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0
        self._threads = 0
        self._closed = False
        self.busy = 0

    def submit(self, loop: asyncio.AbstractEventLoop, handler: Handler,
               job: Job) -> asyncio.Future:
        future = loop.create_future()
        with self._lock:
            spawn = self._idle == 0
            if not spawn:
                self._idle -= 1
        self._queue.put((loop, future, handler, job))
        if spawn:
            self._threads += 1
            threading.Thread(target=self._work, daemon=True,
                             name=f"pgjobs-job-{self._threads}").start()
        return future

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            loop, future, handler, job = item
            with self._lock:
                self.busy += 1
            try:
                value = handler(job.payload, job)
            except BaseException as exc:  # noqa: BLE001 - a handler's failure is data
                _settle_threadsafe(loop, future, None, exc)
            else:
                _settle_threadsafe(loop, future, value, None)
            with self._lock:
                self.busy -= 1
                if self._closed:
                    return
                self._idle += 1

    def close(self) -> None:
        """Idle threads end now; busy (abandoned) ones after their handler returned."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, 0
        for _ in range(idle):
            self._queue.put(None)


def _settle_threadsafe(loop: asyncio.AbstractEventLoop, future: asyncio.Future,
                       value: Any, exc: BaseException | None) -> None:
    try:
        loop.call_soon_threadsafe(_settle, future, value, exc)
    except RuntimeError:
        pass  # the loop is closed: the worker is gone, nobody waits for this any more


def _settle(future: asyncio.Future, value: Any, exc: BaseException | None) -> None:
    if future.done():
        return  # abandoned: the runner stopped waiting
    if exc is None:
        future.set_result(value)
    else:
        future.set_exception(exc)
