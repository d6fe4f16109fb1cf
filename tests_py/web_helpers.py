"""Helpers for the dashboard tests: jobs in known states, the CSRF field, a live server."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Callable

CSRF_RE = re.compile(r'name="csrf" value="([0-9a-f]{64})"')
WORKER = "web-test-worker"


def add_job(sql: Callable, task: str, payload: str = "{}", **opts: object) -> int:
    """Enqueue one job through app_jobs.add_job; its id."""
    names = "".join(f", {k} := %({k})s" for k in opts)
    return sql(f"SELECT (app_jobs.add_job(identifier := %(task)s, payload := %(payload)s::json"
               f"{names})).id", {"task": task, "payload": payload, **opts})[0][0]


def claim(sql: Callable, task: str) -> int:
    """Claim the next job of `task` as WORKER (registered on first use); its id."""
    sql("SELECT app_jobs.register_worker(%s, 'testhost', 4242) "
        "WHERE NOT EXISTS (SELECT 1 FROM app_jobs.workers WHERE id = %s)", (WORKER, WORKER))
    return sql("SELECT id FROM app_jobs.get_jobs(%s, ARRAY[%s])", (WORKER, task))[0][0]


def failed_job(sql: Callable, task: str, error: str = "boom", payload: str = "{}",
               error_data: str | None = None, **opts: object) -> int:
    """A job that failed for good (max_attempts 1), with its error (and error data)."""
    job_id = add_job(sql, task, payload, max_attempts=1, **opts)
    assert claim(sql, task) == job_id
    sql("SELECT app_jobs.finish_jobs(%s, ARRAY[%s]::bigint[], ARRAY[1], ARRAY['failed'], "
        "ARRAY[%s], ARRAY[%s::jsonb])", (WORKER, job_id, error, error_data))
    return job_id


def completed_job(sql: Callable, task: str, result: str = '{"ok": true}') -> int:
    """A job that completed with `result`."""
    job_id = add_job(sql, task)
    assert claim(sql, task) == job_id
    sql("SELECT app_jobs.finish_jobs(%s, ARRAY[%s]::bigint[], ARRAY[1], ARRAY['completed'], "
        "NULL, NULL, ARRAY[%s::jsonb])", (WORKER, job_id, result))
    return job_id


def status_of(sql: Callable, job_id: int) -> str | None:
    """The job's status in app_jobs.job_status (None when unknown)."""
    rows = sql("SELECT status FROM app_jobs.job_status WHERE id = %s", (job_id,))
    return rows[0][0] if rows else None


def csrf(html: str) -> str:
    """The CSRF field of a rendered page."""
    match = CSRF_RE.search(html)
    assert match, "no CSRF field on the page"
    return match.group(1)


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """uvicorn serving an ASGI app in a thread, on a free port."""

    def __init__(self, app):
        """Start serving `app`; wait until it accepts connections."""
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning",
            timeout_graceful_shutdown=1))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)

    def stop(self) -> None:
        """Shut the server down."""
        self.server.should_exit = True
        self.thread.join(10)
