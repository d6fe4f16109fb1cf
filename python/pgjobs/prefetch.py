"""The prefetch buffer: jobs this worker has claimed and not started yet.

Claiming is decoupled from running: the worker claims ahead, up to `size` jobs beyond
what its handlers run, refills in the background when the buffer falls to its low-water
mark, and its runners take the next job from here without a round trip. A buffered job
is a claim like any other (locked by this worker, its attempt counted), so the worker
fences it, ends it cancelled on request and releases it at shutdown like a running one.

How much is buffered is also bounded by time: the target is what the runners start
within HORIZON seconds at the rate handlers finished lately. The rate is measured over
windows of RATE_WINDOW seconds; a burst of 4 x concurrency handlers finishing sooner
may raise the target at once (a quick start), only a whole window lowers it. Fast
handlers get the whole buffer; slow ones get none, so one worker does not sit on jobs
that another, idle worker could run. When handlers turn out slower than the buffer
assumed (quick jobs first, then a batch of slow ones, or every slot stuck in a long
job), the jobs beyond the target are handed back once they are more than `concurrency`.

The buffer is in exactly one mode; every change goes through `_enter`, which asserts
that the transition is one of these:

    STARTING  -> FETCHING, RELEASED      not claimed yet (first claim: at once)
    IDLE      -> FETCHING, RELEASED      the last claim came back short: the database
                                         had no more for us; claim again on a
                                         notification, a delivered outcome, or the poll
                                         interval (and only below the low-water mark)
    WAITING   -> FETCHING, RELEASED      the last claim came back full: claim again as
                                         soon as the buffer is at its low-water mark
    FETCHING  -> IDLE, WAITING, RELEASED one claim statement in flight (never two)
    RELEASED  -> (none)                  stopping: no claim, no job handed out; what is
                                         left (or still arrives) is handed back

The buffer holds plain Job objects in claim order (priority, run_at, id).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from enum import Enum

from .job import Job

# Seconds of work the buffer may hold, at the rate handlers finish.
HORIZON = 0.1
# The finish rate is measured over windows of this many seconds.
RATE_WINDOW = 0.25


class Mode(Enum):
    STARTING = "starting"
    IDLE = "idle"
    WAITING = "waiting"
    FETCHING = "fetching"
    RELEASED = "released"


_ALLOWED = {
    Mode.STARTING: {Mode.FETCHING, Mode.RELEASED},
    Mode.IDLE: {Mode.FETCHING, Mode.RELEASED},
    Mode.WAITING: {Mode.FETCHING, Mode.RELEASED},
    Mode.FETCHING: {Mode.IDLE, Mode.WAITING, Mode.RELEASED},
    Mode.RELEASED: set(),
}


class Prefetch:
    """Claimed, not yet started jobs (see the module's docstring for the modes)."""

    def __init__(self, size: int, concurrency: int, batch_size: int):
        assert size >= 0 and concurrency >= 1 and batch_size >= 1
        self.size = size
        self.concurrency = concurrency
        self.batch_size = batch_size
        self.mode = Mode.STARTING
        self._jobs: OrderedDict[int, Job] = OrderedDict()
        # How many jobs the buffer may hold now (see _retarget): 0 until handlers are
        # seen to finish fast enough.
        self.target = 0
        # Handlers finished per second, as last measured.
        self.rate = 0.0
        self._finished = 0
        self._window_start = 0.0
        self._window_jobs = 4 * concurrency
        self._asked = 0

    # -- state ----------------------------------------------------------------------

    def _enter(self, mode: Mode) -> None:
        assert mode in _ALLOWED[self.mode], f"prefetch: {self.mode.name} -> {mode.name}"
        self.mode = mode

    def __len__(self) -> int:
        return len(self._jobs)

    def __contains__(self, job_id: int) -> bool:
        return job_id in self._jobs

    def jobs(self) -> list[Job]:
        return list(self._jobs.values())

    def ran(self, now: float) -> None:
        """A handler finished at `now` (time.monotonic())."""
        self._finished += 1
        if now - self._window_start >= RATE_WINDOW:
            self._retarget(now, lower=True)
        elif self._finished >= self._window_jobs and self.target < self.size:
            self._retarget(now, lower=False)

    def tick(self, now: float) -> None:
        """Called now and then: with no handler finishing, the rate falls to 0 too."""
        if now - self._window_start >= RATE_WINDOW:
            self._retarget(now, lower=True)

    def _retarget(self, now: float, lower: bool) -> None:
        elapsed = now - self._window_start
        rate = self._finished / elapsed if elapsed > 0 else 0.0
        target = min(self.size, math.floor(rate * HORIZON))
        if target <= self.target and not lower:
            return  # the window goes on: only a whole one lowers the target
        self.rate, self.target = rate, target
        self._finished = 0
        self._window_start = now

    # -- claiming -------------------------------------------------------------------

    def wanted(self, running: int, notified: bool) -> int:
        """How many jobs to claim now (0: none). `running`: handlers running;
        `notified`: something may have become claimable since the last claim began (a
        notification, a delivered outcome, the poll interval)."""
        mode = self.mode
        if mode is Mode.FETCHING or mode is Mode.RELEASED:
            return 0
        if mode is Mode.IDLE and not notified:
            return 0
        buffered = len(self._jobs)
        target = self.target
        if buffered > target >> 1:  # above the low-water mark, half the target
            return 0
        room = target + self.concurrency - running - buffered
        return min(room, self.batch_size) if room > 0 else 0

    def fetching(self, asked: int) -> None:
        """A claim for `asked` jobs is being sent."""
        assert asked > 0
        self._enter(Mode.FETCHING)
        self._asked = asked

    def fetched(self, jobs: list[Job]) -> None:
        """The claim's answer: buffer its jobs. Fewer than asked means the database had
        no more for us right now (IDLE); as many as asked means it may have more
        (WAITING). After a stop (RELEASED) they are kept only to be handed back."""
        assert len(jobs) <= self._asked, (len(jobs), self._asked)
        add = self._jobs.__setitem__
        for job in jobs:
            add(job.id, job)
        if self.mode is Mode.RELEASED:
            return
        self._enter(Mode.WAITING if len(jobs) == self._asked else Mode.IDLE)

    def failed(self) -> None:
        """The claim did not run or its answer was lost: claim again when kicked."""
        if self.mode is not Mode.RELEASED:
            self._enter(Mode.IDLE)

    # -- handing out ----------------------------------------------------------------

    def take(self) -> Job | None:
        """The next job to start, or None (empty, or released)."""
        if not self._jobs or self.mode is Mode.RELEASED:
            return None
        return self._jobs.popitem(last=False)[1]

    def excess(self) -> list[Job]:
        """Take out the jobs beyond the target, last claimed first, once they are more
        than `concurrency` (the target fell: handlers got slower); to be handed back."""
        extra = len(self._jobs) - self.target
        if extra <= self.concurrency or self.mode is Mode.RELEASED:
            return []
        pop = self._jobs.popitem
        return [pop(last=True)[1] for _ in range(extra)][::-1]

    def restore(self, jobs: list[Job]) -> None:
        """Put back jobs taken out by excess() that could not be handed back."""
        for job in jobs:
            self._jobs[job.id] = job

    def over_target(self) -> bool:
        return len(self._jobs) - self.target > self.concurrency

    def remove(self, job_id: int) -> Job | None:
        """Take one buffered job out (fenced or cancelled before it started)."""
        return self._jobs.pop(job_id, None)

    def release(self) -> list[Job]:
        """Stop: no more claims, no more jobs handed out; the buffered ones, to be
        handed back. Later calls return what arrived since (a claim in flight)."""
        if self.mode is not Mode.RELEASED:
            self._enter(Mode.RELEASED)
        jobs = list(self._jobs.values())
        self._jobs.clear()
        return jobs
