"""The job a handler receives: its row from app_jobs.jobs, read-only."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID


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

    @classmethod
    def from_row(cls, row: dict[str, Any], worker_id: str) -> Job:
        return cls(worker_id=worker_id, **row)

    @property
    def is_last_attempt(self) -> bool:
        """True when a failure now would fail the job permanently."""
        return self.attempts >= self.max_attempts

    def describe(self) -> str:
        return f"{self.task_identifier}#{self.id} attempt {self.attempts}/{self.max_attempts}"
