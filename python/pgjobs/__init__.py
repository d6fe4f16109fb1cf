"""pgjobs: a job queue that lives inside PostgreSQL.

    import pgjobs

    @pgjobs.task("send_email")
    def send_email(payload, job): ...

    pgjobs.add_job(conn, "send_email", {"to": "a@example.com"})
"""

from . import testing
from .client import add_bundle, add_job, add_job_async, add_jobs, add_jobs_async
from .events import Event, JobFailed, listen, listen_async, wait_for_job
from .job import Job
from .tasks import registered, task

__version__ = "0.10.0"

__all__ = [
    "Event",
    "Job",
    "JobFailed",
    "add_bundle",
    "add_job",
    "add_job_async",
    "add_jobs",
    "add_jobs_async",
    "listen",
    "listen_async",
    "registered",
    "task",
    "testing",
    "wait_for_job",
]
