"""Statistics are counted once, when the database answered for an outcome: a handler's
return counts nothing yet; finish_jobs taking the outcome counts it (summary and
Prometheus alike); finish_jobs answering 'fenced' counts a fenced attempt and nothing
else; 'busy' counts nothing and keeps the outcome owed. A buffered job the heartbeat
finds rescued elsewhere is fenced; one asked to cancel counts once its outcome is taken.
No server: the worker is driven through the calls its runners and tasks make."""

from __future__ import annotations

from pgjobs.outcome import Outcome
from pgjobs.worker import Worker, WorkerOptions


def counts(w: Worker) -> dict[str, int]:
    return {k: v for k, v in w.stats.summary().items() if v}


def metric(w: Worker, line: str) -> bool:
    return line in w.metrics.text()


def worker() -> Worker:
    # metrics_port set: the registry exists (nothing is served until run()).
    return Worker("", {"t": lambda payload, job: None},
                  WorkerOptions(worker_id="w", metrics_port=0))


def owed(w: Worker) -> list:
    return list(w.delivery.owed.values())


def test_a_fenced_outcome_is_not_counted_as_completed(make_job):
    w = worker()
    job = make_job(1)
    w._finished(job, Outcome(job, "completed"), 0.01)
    assert counts(w) == {}, "counted before the database answered"
    assert w.delivery.settle(owed(w), [(1, 1, "fenced")]) == 1
    assert counts(w) == {"fenced": 1}
    assert metric(w, "pgjobs_worker_jobs_fenced_total 1.0")
    assert not metric(w, 'pgjobs_worker_jobs_completed_total{task="t"} 1.0')
    assert not w.delivery


def test_taken_outcomes_count_once_busy_ones_not_yet(make_job):
    w = worker()
    ok, bad = make_job(1), make_job(2, attempts=3)
    w._finished(ok, Outcome(ok, "completed"), 0.01)
    w._finished(bad, Outcome(bad, "failed", error="boom"), 0.01)
    assert w.delivery.settle(owed(w), [(1, 1, "busy"), (2, 3, "retrying")]) == 1
    assert counts(w) == {"failed": 1}
    assert len(w.delivery) == 1  # the busy one stays owed
    assert w.delivery.settle(owed(w), [(1, 1, "completed")]) == 1
    assert counts(w) == {"completed": 1, "failed": 1}
    assert metric(w, 'pgjobs_worker_jobs_completed_total{task="t"} 1.0')
    assert metric(w, 'pgjobs_worker_jobs_failed_total{task="t"} 1.0')


def test_heartbeat_verdicts_on_buffered_jobs(make_job):
    w = worker()
    rescued, cancelled = make_job(1), make_job(2)
    w.prefetch.fetching(2)
    w.prefetch.fetched([rescued, cancelled])
    w._judge([rescued, cancelled],
             {2: {"job_id": 2, "attempt": 1, "cancel_requested": True}})
    assert counts(w) == {"fenced": 1}
    assert len(w.prefetch) == 0
    assert w.delivery.settle(owed(w), [(2, 1, "cancelled")]) == 1
    assert counts(w) == {"fenced": 1, "cancelled": 1}
