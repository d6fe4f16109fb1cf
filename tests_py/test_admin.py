"""The `pgjobs` admin command: install into an empty database, upgrade as a no-op, add and
status (schedules and the failing ones too), retry (afresh: job_status says waiting) and
remove of permanently failed jobs, run as the installed console script.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg
from pgjobs import installer

PGJOBS = str(Path(sys.executable).parent / "pgjobs")


def pgjobs(conninfo: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PGJOBS, "--database-url", conninfo, *args],
                          capture_output=True, text=True, timeout=30)


def test_install_into_empty_database_then_upgrade_is_noop(empty_db):
    conninfo = empty_db()
    version = installer.latest_version()

    res = pgjobs(conninfo, "install")
    assert res.returncode == 0, res.stderr
    assert f"installed pgjobs {version}" in res.stdout
    with psycopg.connect(conninfo, autocommit=True) as conn:
        assert conn.execute("SELECT app_jobs.pgjobs_version()").fetchone()[0] == version
        assert conn.execute(
            "SELECT count(*) FROM pg_extension WHERE extname = 'pgjobs'").fetchone()[0] == 0
        before = conn.execute(
            "SELECT count(*) FROM pg_proc WHERE pronamespace = 'app_jobs'::regnamespace"
        ).fetchone()[0]

    res = pgjobs(conninfo, "upgrade")
    assert res.returncode == 0, res.stderr
    assert "up to date" in res.stdout
    res = pgjobs(conninfo, "install")
    assert res.returncode == 0, res.stderr
    assert "already installed" in res.stdout
    with psycopg.connect(conninfo, autocommit=True) as conn:
        assert conn.execute("SELECT app_jobs.pgjobs_version()").fetchone()[0] == version
        assert conn.execute(
            "SELECT count(*) FROM pg_proc WHERE pronamespace = 'app_jobs'::regnamespace"
        ).fetchone()[0] == before
        # the plain install works: a job can be added
        conn.execute("SELECT app_jobs.add_job(identifier := 'smoke')")


def test_upgrade_without_install_fails_with_one_line(empty_db):
    res = pgjobs(empty_db(), "upgrade")
    assert res.returncode != 0
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "pgjobs install" in res.stderr


def test_add_then_status(db, sql):
    conninfo = db.info.dsn
    res = pgjobs(conninfo, "add", "send_email", '{"to": "a@example.com"}', "--queue", "mail",
                 "--priority", "3")
    assert res.returncode == 0, res.stderr
    assert "added job" in res.stdout
    res = pgjobs(conninfo, "add", "later_task", "--delay", "3600")
    assert res.returncode == 0, res.stderr
    rows = sql("SELECT task_identifier, queue_name, priority, payload::text, run_at > now() "
               "FROM app_jobs.jobs ORDER BY id")
    assert rows == [("send_email", "mail", 3, '{"to": "a@example.com"}', False),
                    ("later_task", None, 0, "{}", True)]

    res = pgjobs(conninfo, "status")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].split()[:2] == ["task", "queue"]
    email = next(ln for ln in lines if ln.startswith("send_email")).split()
    assert email[1:7] == ["mail", "1", "0", "0", "0", "0"]
    later = next(ln for ln in lines if ln.startswith("later_task")).split()
    assert later[1:7] == ["-", "0", "1", "0", "0", "0"]


def test_bad_payload_is_one_line(db):
    res = pgjobs(db.info.dsn, "add", "x", "{not json")
    assert res.returncode != 0
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr


def make_failed(sql, identifier: str) -> int:
    (job_id,) = sql("SELECT id FROM app_jobs.add_job(identifier := %s, max_attempts := 1)",
                    (identifier,))[0]
    claimed = sql("SELECT id FROM app_jobs.get_jobs('w1', ARRAY[%s], interval '1 hour', 10)",
                  (identifier,))
    assert [r[0] for r in claimed] == [job_id]
    sql("SELECT app_jobs.fail_job('w1', %s, 'it broke')", (job_id,))
    assert sql("SELECT attempts, is_available FROM app_jobs.jobs WHERE id = %s",
               (job_id,)) == [(1, False)]
    return job_id


def test_retry_all_failed(db, sql):
    conninfo = db.info.dsn
    failed = make_failed(sql, "flaky")
    (waiting,) = sql("SELECT id FROM app_jobs.add_job(identifier := 'other')")[0]

    res = pgjobs(conninfo, "status")
    assert next(ln for ln in res.stdout.splitlines() if ln.startswith("flaky")).split()[6] == "1"

    res = pgjobs(conninfo, "retry", "--all-failed")
    assert res.returncode == 0, res.stderr
    assert f"retrying 1 job(s): [{failed}]" in res.stdout
    assert sql("SELECT attempts, is_available, run_at <= now() FROM app_jobs.jobs "
               "WHERE id = %s", (failed,)) == [(0, True, True)]
    assert sql("SELECT attempts FROM app_jobs.jobs WHERE id = %s", (waiting,)) == [(0,)]
    # Afresh, as a new job: waiting (not retrying), the old error gone.
    assert sql("SELECT status, last_error FROM app_jobs.job_status WHERE id = %s",
               (failed,)) == [("waiting", None)]
    res = pgjobs(conninfo, "status")
    flaky = next(ln for ln in res.stdout.splitlines() if ln.startswith("flaky")).split()
    assert flaky[1:7] == ["-", "1", "0", "0", "0", "0"]  # waiting 1, retrying 0, failed 0

    res = pgjobs(conninfo, "retry", "--all-failed")
    assert res.returncode == 0, res.stderr
    assert "retrying 0 job(s)" in res.stdout


def test_remove_failed(db, sql):
    conninfo = db.info.dsn
    failed = make_failed(sql, "doomed")
    (waiting,) = sql("SELECT id FROM app_jobs.add_job(identifier := 'other')")[0]

    # a job that is not permanently failed is skipped, not removed
    res = pgjobs(conninfo, "remove", str(waiting))
    assert res.returncode == 0, res.stderr
    assert "removed 0 job(s)" in res.stdout
    assert "not permanently failed" in res.stderr

    res = pgjobs(conninfo, "remove", str(failed))
    assert res.returncode == 0, res.stderr
    assert f"removed 1 job(s): [{failed}]" in res.stdout
    assert [r[0] for r in sql("SELECT id FROM app_jobs.jobs")] == [waiting]

    again = make_failed(sql, "doomed")
    res = pgjobs(conninfo, "remove", "--all-failed")
    assert res.returncode == 0, res.stderr
    assert f"[{again}]" in res.stdout
    assert [r[0] for r in sql("SELECT id FROM app_jobs.jobs")] == [waiting]


def test_status_shows_schedules_and_the_failing_ones(db, sql):
    conninfo = db.info.dsn
    res = pgjobs(conninfo, "status")
    assert res.returncode == 0, res.stderr
    assert "schedules: 0 (0 failing)" in res.stdout.splitlines()

    ids = [sql("SELECT (app_jobs.add_scheduled_job(identifier := %s, "
               "schedule_info := '{\"rule\": \"* * * * *\"}')).id", (task,))[0][0]
           for task in ("nightly", "hourly", "broken")]
    res = pgjobs(conninfo, "status")
    assert res.returncode == 0, res.stderr
    assert "schedules: 3 (0 failing)" in res.stdout.splitlines()
    assert "last error" not in res.stdout

    sql("UPDATE app_jobs.scheduled_jobs SET last_error = %s, "
        "last_error_at = now() - interval '10 minutes' WHERE id = %s",
        ("payload too large\nDETAIL: more lines", ids[2]))
    res = pgjobs(conninfo, "status")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    at = lines.index("schedules: 3 (1 failing)")
    assert lines[at + 1].split() == ["schedule", "task", "last", "error", "when"]
    row = lines[at + 3]
    assert row.split()[:2] == [str(ids[2]), "broken"]
    assert "payload too large" in row and "DETAIL" not in row
    assert row.endswith("10.0m ago")
    assert lines[at + 4] == ""  # the table holds the failing schedule only
