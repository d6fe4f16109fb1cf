"""metrics.py without a server: two workers' registries side by side (each counts its own,
labelled by task), and a gauge callback that raises does not break a scrape."""

from __future__ import annotations

from pgjobs.metrics import WorkerMetrics


def test_two_workers_registries_side_by_side():
    a, b = WorkerMetrics(running=lambda: 2), WorkerMetrics(running=lambda: 5)
    a.job_started("x")
    a.job_recorded("x", "completed")
    a.job_ran("x", 0.5)
    b.job_recorded("x", "retrying")
    b.job_recorded("y", "failed")
    b.job_recorded("y", "cancelled")
    b.job_fenced()
    ta, tb = a.text(), b.text()
    assert 'pgjobs_worker_jobs_completed_total{task="x"} 1.0' in ta
    assert 'pgjobs_worker_job_duration_seconds_count{task="x"} 1.0' in ta
    assert "pgjobs_worker_running 2.0" in ta
    assert 'pgjobs_worker_jobs_completed_total{task="x"} 0.0' in tb
    assert 'pgjobs_worker_jobs_failed_total{task="x"} 1.0' in tb
    assert 'pgjobs_worker_jobs_failed_total{task="y"} 1.0' in tb
    assert "pgjobs_worker_jobs_cancelled_total 1.0" in tb
    assert "pgjobs_worker_jobs_fenced_total 1.0" in tb
    assert "pgjobs_worker_running 5.0" in tb
    # A gauge callback that raises does not break the scrape.
    c = WorkerMetrics(running=lambda: 1 / 0)
    assert "pgjobs_worker_running NaN" in c.text()
