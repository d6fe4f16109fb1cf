"""Fixtures of the unit tests: tests of pure Python code that need no PostgreSQL server
(`.venv/bin/pytest tests_py/unit` runs them anywhere; `make test` runs them with the rest).

Fixtures:
    make_job    builds a claimed Job as the worker would get it from get_jobs
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone

import pytest
from pgjobs.job import Job, JobControl


@pytest.fixture
def make_job() -> Callable[..., Job]:
    def _make(job_id: int = 1, attempts: int = 1, task: str = "t",
              max_attempts: int = 25) -> Job:
        return Job(id=job_id, task_identifier=task, queue_name=None, payload={},
                   priority=0, run_at=datetime.now(timezone.utc), attempts=attempts,
                   max_attempts=max_attempts, key=None, database_id=None,
                   created_at=datetime.now(timezone.utc), worker_id="w",
                   control=JobControl())

    return _make
