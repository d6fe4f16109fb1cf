"""The job a handler receives: its row from app_jobs.jobs, plus progress and cancellation."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

# The longest stage text set_progress takes (characters); the database refuses longer
# ones (SQLSTATE PJ039).
MAX_STAGE_LENGTH = 1000


class JobControl:
    """The worker's side of one job: why it must stop, and where progress goes.

    Made once per claimed job, so it is kept small: the threading.Event a thread handler
    may wait on is only created when someone asks for it, and the progress reporter is
    one callable shared by every job of a worker, called as
    reporter(job_id, attempt, progress, stage).
    """

    __slots__ = ("stop_reason", "on_stop", "_event", "_reporter", "_job_id", "_attempt")

    def __init__(self, reporter: Callable[[int, int, int, str | None], None] | None = None,
                 job_id: int = 0, attempt: int = 0):
        self.stop_reason: str | None = None  # "cancel", "timeout", "fenced" or "shutdown"
        self.on_stop: Callable[[], object] | None = None
        self._event: threading.Event | None = None
        self._reporter = reporter
        self._job_id = job_id
        self._attempt = attempt

    @property
    def stop_event(self) -> threading.Event:
        if self._event is None:
            with _EVENT_LOCK:
                if self._event is None:
                    event = self._event = threading.Event()
                    # Published first, then checked: request_stop sets stop_reason before
                    # it reads _event, so one of the two sets the event.
                    if self.stop_reason is not None:
                        event.set()
        return self._event

    def request_stop(self, reason: str) -> None:
        """Called on the worker's event loop; the first reason wins."""
        if self.stop_reason is None:
            self.stop_reason = reason
        event = self._event
        if event is not None:
            event.set()
        if self.on_stop is not None:
            self.on_stop()

    def report_progress(self, progress: int, stage: str | None) -> None:
        if self._reporter is not None:
            self._reporter(self._job_id, self._attempt, progress, stage)


_EVENT_LOCK = threading.Lock()


@dataclass(frozen=True)
class Job:
    """One claimed job. `attempts` counts this attempt (1 on the first run)."""

    id: int
    task_identifier: str
    queue_name: str | None
    payload: Any
    priority: int
    run_at: datetime
    attempts: int
    max_attempts: int
    key: str | None
    database_id: UUID | None
    created_at: datetime
    worker_id: str
    timeout: timedelta | None = None
    control: JobControl = field(default_factory=JobControl, compare=False, repr=False)

    @classmethod
    def from_row(
        cls, row: dict[str, Any], worker_id: str, control: JobControl | None = None
    ) -> Job:
        return cls(worker_id=worker_id, control=control or JobControl(), **row)

    @classmethod
    def claimed(cls, row: tuple, worker_id: str, control: JobControl) -> Job:
        """A job from a row of sql.CLAIM_JOBS (the fields in order, timeout last, no
        worker_id). The worker makes one per claimed job, so this skips the frozen
        dataclass's __init__ (an object.__setattr__ per field, about 1 us a job) and
        fills the instance's __dict__ at once: the same object, a third of the cost."""
        job = object.__new__(cls)
        fields = job.__dict__
        fields.update(zip(_ROW_FIELDS, row, strict=True))
        fields["worker_id"] = worker_id
        fields["control"] = control
        return job

    @property
    def is_last_attempt(self) -> bool:
        """True when a failure now would fail the job permanently."""
        return self.attempts >= self.max_attempts

    @property
    def cancelled(self) -> bool:
        """True once the handler should stop: cancelled, timed out, or rescued elsewhere.

        Async handlers are also interrupted with CancelledError; thread handlers should
        check this (or wait on `stop_event`) and return early.
        """
        return self.control.stop_reason is not None

    @property
    def stop_event(self) -> threading.Event:
        return self.control.stop_event

    def set_progress(self, progress: int, stage: str | None = None) -> None:
        """Report progress (0-100) and a stage of at most 1000 characters; stored on the
        job and announced by NOTIFY.

        Safe from async handlers and threads; the worker sends the latest value.
        """
        if type(progress) is bool or not isinstance(progress, int) or not 0 <= progress <= 100:
            raise ValueError(f"progress must be an int from 0 to 100, got {progress!r}")
        # Checked here, in the handler: the worker sends every job's progress in one
        # statement, which a bad stage would make fail for all of them.
        if stage is not None and not isinstance(stage, str):
            raise TypeError(f"stage must be a str or None, got {type(stage).__name__}")
        if stage is not None and ("\x00" in stage or not _is_utf8(stage)):
            raise ValueError("stage cannot contain NUL characters or lone surrogates")
        if stage is not None and len(stage) > MAX_STAGE_LENGTH:
            raise ValueError(
                f"stage must be at most {MAX_STAGE_LENGTH} characters, got {len(stage)}")
        self.control.report_progress(progress, stage)

    def describe(self) -> str:
        return f"{self.task_identifier}#{self.id} attempt {self.attempts}/{self.max_attempts}"


# The columns of sql.CLAIM_JOBS, in order.
_ROW_FIELDS = ("id", "task_identifier", "queue_name", "payload", "priority", "run_at",
               "attempts", "max_attempts", "key", "database_id", "created_at", "timeout")


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
