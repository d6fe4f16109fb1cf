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
    """The worker's side of a running job: why it must stop, and where progress goes."""

    def __init__(self, report_progress: Callable[[int, str | None], None] | None = None):
        self.stop_reason: str | None = None  # "cancel", "timeout" or "fenced"
        self.stop_event = threading.Event()
        self.on_stop: Callable[[], object] | None = None
        self._report_progress = report_progress

    def request_stop(self, reason: str) -> None:
        """Called on the worker's event loop; wakes the task waiting on the handler."""
        if self.stop_reason is None:
            self.stop_reason = reason
        self.stop_event.set()
        if self.on_stop is not None:
            self.on_stop()

    def report_progress(self, progress: int, stage: str | None) -> None:
        if self._report_progress is not None:
            self._report_progress(progress, stage)


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
        return self.control.stop_event.is_set()

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


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
