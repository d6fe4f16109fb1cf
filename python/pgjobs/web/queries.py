"""Every statement the dashboard sends, as constants (like pgjobs.sql).

Reads go to the public tables and views (jobs, job_history, job_queues, job_bundles,
job_dependencies, scheduled_jobs, workers, settings, pg_class); actions go through the admin
functions (retry_job, cancel_job, delete_job, run_scheduled_job, pause_scheduled_job,
resume_scheduled_job) only. Parameters are
named; %(db)s is the tenant filter (NULL: every tenant).
"""

from __future__ import annotations

# A live job's status, exactly as app_jobs.job_status (and queue_stats) spell it.
_LIVE_STATUS = """CASE
        WHEN j.locked_at IS NOT NULL THEN 'running'
        WHEN j.attempts >= j.max_attempts THEN 'failed'
        WHEN j.attempts > 0 OR j.last_error IS NOT NULL THEN 'retrying'
        WHEN j.blocked_by > 0 THEN 'blocked'
        WHEN j.run_at > now() THEN 'scheduled'
        ELSE 'waiting'
    END"""

LIVE_STATUSES = ("waiting", "scheduled", "blocked", "running", "retrying", "failed")
FINISHED_STATUSES = ("completed", "cancelled", "failed")
STATUSES = ("waiting", "scheduled", "blocked", "running", "retrying", "failed", "cancelled",
            "completed")

_TENANT_J = "(%(db)s::uuid IS NULL OR j.database_id = %(db)s::uuid)"
_TENANT_H = "(%(db)s::uuid IS NULL OR h.database_id = %(db)s::uuid)"

# `pgjobs web` before it serves: the database, the installed version, and that the role
# may read jobs (one row at most).
PREFLIGHT = """
SELECT
    current_database(),
    app_jobs.pgjobs_version(),
    (SELECT count(*) FROM (SELECT 1 FROM app_jobs.jobs LIMIT 1) AS one) AS readable
"""

# --- overview ----------------------------------------------------------------------------

# The planner's row estimate of jobs (-1 before the first VACUUM/ANALYZE): decides
# between exact counts and a sample.
JOBS_ESTIMATE = """
SELECT c.reltuples::bigint AS rows, c.relpages::bigint AS pages
FROM pg_catalog.pg_class AS c
WHERE c.oid = 'app_jobs.jobs'::regclass
"""

# A time budget for the statement that follows in the same transaction.
BUDGET = "SELECT set_config('statement_timeout', %s, true)"

# Exact: one pass over jobs, grouped as app_jobs.queue_stats groups (which has no
# database_id, so the tenant filter needs this copy of its CASE).
COUNTS_EXACT = f"""
SELECT
    j.task_identifier,
    j.queue_name,
    {_LIVE_STATUS} AS status,
    count(*) AS n,
    now() - min(j.run_at) FILTER (WHERE j.is_available AND j.run_at <= now()) AS oldest
FROM app_jobs.jobs AS j
WHERE {_TENANT_J}
GROUP BY 1, 2, 3
"""

# Estimated: the same grouping over a block sample (TABLESAMPLE SYSTEM, percent given);
# `sampled` counts every sampled row (any tenant) to scale by reltuples.
COUNTS_SAMPLE = f"""
SELECT
    j.task_identifier,
    j.queue_name,
    {_LIVE_STATUS} AS status,
    count(*) FILTER (WHERE {_TENANT_J}) AS n,
    sum(count(*)) OVER () AS sampled
FROM app_jobs.jobs AS j TABLESAMPLE SYSTEM (%(percent)s)
GROUP BY 1, 2, 3
"""

# Running jobs are few (at most what the workers hold): exact through jobs_locked_at_idx.
COUNTS_RUNNING = f"""
SELECT j.task_identifier, j.queue_name, count(*) AS n
FROM app_jobs.jobs AS j
WHERE j.locked_at IS NOT NULL AND {_TENANT_J}
GROUP BY 1, 2
"""

# How long the job at the head of the claim order has been due (jobs_claim_idx).
HEAD_OF_QUEUE = f"""
SELECT now() - j.run_at AS due_for
FROM app_jobs.jobs AS j
WHERE j.is_available AND j.run_at <= now() AND {_TENANT_J}
ORDER BY j.priority, j.run_at, j.id
LIMIT 1
"""

# Named queues: the counters the queue triggers keep (exact, no scan).
QUEUES = """
SELECT q.queue_name, q.job_count, q.running_count, q.locked_by
FROM app_jobs.job_queues AS q
ORDER BY q.queue_name
LIMIT 200
"""

# What finished in the last hour, per minute and outcome (job_history_finished_at_idx).
THROUGHPUT = f"""
SELECT
    least(59, floor(extract(EPOCH FROM now() - h.finished_at) / 60))::integer AS minutes_ago,
    h.status,
    count(*) AS n
FROM app_jobs.job_history AS h
WHERE h.finished_at >= now() - interval '1 hour' AND {_TENANT_H}
GROUP BY 1, 2
"""

HISTORY_SETTING = """
SELECT coalesce((SELECT s.value FROM app_jobs.settings AS s WHERE s.name = 'history'), 'on')
"""

WORKERS_SUMMARY = """
SELECT
    count(*) AS registered,
    count(*) FILTER (WHERE w.last_heartbeat < now() - 3 * w.heartbeat_interval) AS stale
FROM app_jobs.workers AS w
"""

SCHEDULES_SUMMARY = """
SELECT
    count(*) AS total,
    count(*) FILTER (WHERE s.last_error IS NOT NULL) AS failing,
    count(*) FILTER (WHERE s.paused_at IS NOT NULL) AS paused
FROM app_jobs.scheduled_jobs AS s
WHERE (%(db)s::uuid IS NULL OR s.database_id = %(db)s::uuid)
"""

NOTIFICATION_QUEUE = "SELECT pg_catalog.pg_notification_queue_usage() AS usage"

# --- job list (keyset pagination on id, newest first) ------------------------------------

_LIVE_FILTERS = f"""
    (%(after)s::bigint IS NULL OR j.id < %(after)s::bigint)
    AND (%(before)s::bigint IS NULL OR j.id > %(before)s::bigint)
    AND (%(task)s::text IS NULL OR j.task_identifier = %(task)s::text)
    AND (%(queue)s::text IS NULL OR j.queue_name = %(queue)s::text)
    AND {_TENANT_J}
    AND (%(q)s::text IS NULL
         OR strpos(lower(j.payload::text), lower(%(q)s::text)) > 0
         OR strpos(lower(j.last_error), lower(%(q)s::text)) > 0)
    AND (%(status)s::text IS NULL OR {_LIVE_STATUS} = %(status)s::text)"""

_LIVE_LIST = f"""
SELECT
    j.id, j.task_identifier, j.queue_name, {_LIVE_STATUS} AS status, j.attempts,
    j.max_attempts, j.priority, j.run_at, j.created_at, j.locked_at AS started_at,
    NULL::timestamptz AS finished_at, j.last_error, j.locked_by AS worker_id, j.progress
FROM app_jobs.jobs AS j
WHERE {_LIVE_FILTERS}
ORDER BY j.id {{order}}
LIMIT %(limit)s
"""

# Finished jobs: the latest history record of each job that is no longer live (as
# job_status has it), walking job_history_job_id_idx.
_FINISHED_LIST = f"""
SELECT f.*
FROM (
    SELECT DISTINCT ON (h.job_id)
        h.job_id AS id, h.task_identifier, h.queue_name, h.status, h.attempts,
        h.max_attempts, h.priority, NULL::timestamptz AS run_at, h.created_at, h.started_at,
        h.finished_at, h.last_error, h.worker_id, NULL::integer AS progress
    FROM app_jobs.job_history AS h
    WHERE (%(after)s::bigint IS NULL OR h.job_id < %(after)s::bigint)
        AND (%(before)s::bigint IS NULL OR h.job_id > %(before)s::bigint)
        AND (%(task)s::text IS NULL OR h.task_identifier = %(task)s::text)
        AND (%(queue)s::text IS NULL OR h.queue_name = %(queue)s::text)
        AND {_TENANT_H}
        AND (%(q)s::text IS NULL
             OR strpos(lower(h.payload::text), lower(%(q)s::text)) > 0
             OR strpos(lower(h.last_error), lower(%(q)s::text)) > 0)
        AND NOT EXISTS (SELECT 1 FROM app_jobs.jobs AS l WHERE l.id = h.job_id)
    ORDER BY h.job_id {{order}}, h.finished_at DESC, h.id DESC
) AS f
WHERE %(status)s::text IS NULL OR f.status = %(status)s::text
ORDER BY f.id {{order}}
LIMIT %(limit)s
"""

LIVE_OLDER = _LIVE_LIST.format(order="DESC")
LIVE_NEWER = _LIVE_LIST.format(order="ASC")
FINISHED_OLDER = _FINISHED_LIST.format(order="DESC")
FINISHED_NEWER = _FINISHED_LIST.format(order="ASC")

# --- one job -------------------------------------------------------------------------------

JOB_LIVE = f"""
SELECT
    j.id, j.database_id, j.task_identifier, j.queue_name, {_LIVE_STATUS} AS status,
    j.payload::text AS payload, j.priority, j.run_at, j.attempts, j.max_attempts, j.key,
    j.last_error, j.locked_at, j.locked_by, j.created_at, j.updated_at, j.progress, j.stage,
    j.cancel_requested_at, j.timeout, j.origin, j.bundle_id, j.blocked_by
FROM app_jobs.jobs AS j
WHERE j.id = %(id)s AND {_TENANT_J}
"""

# Every final record of the job, oldest first (a job retried after failing has several).
JOB_HISTORY = f"""
SELECT
    h.id AS history_id, h.status, h.attempts, h.max_attempts, h.result::text AS result,
    h.last_error, h.error_data::text AS error_data, h.worker_id, h.created_at, h.started_at,
    h.finished_at, h.payload::text AS payload, h.task_identifier, h.queue_name, h.key,
    h.priority, h.origin, h.bundle_id, h.database_id
FROM app_jobs.job_history AS h
WHERE h.job_id = %(id)s AND {_TENANT_H}
ORDER BY h.finished_at, h.id
"""

# Unfinished jobs this one waits for, and jobs waiting for it.
JOB_DEPENDS_ON = """
SELECT d.depends_on AS id, j.task_identifier
FROM app_jobs.job_dependencies AS d
LEFT JOIN app_jobs.jobs AS j ON d.depends_on = j.id
WHERE d.job_id = %(id)s
ORDER BY d.depends_on
LIMIT 200
"""

JOB_DEPENDENTS = """
SELECT d.job_id AS id, j.task_identifier
FROM app_jobs.job_dependencies AS d
LEFT JOIN app_jobs.jobs AS j ON d.job_id = j.id
WHERE d.depends_on = %(id)s
ORDER BY d.job_id
LIMIT 200
"""

JOB_BUNDLE = """
SELECT
    b.id, b.bundle_type, b.origin, b.job_count, b.completed_count, b.failed_count,
    b.cancelled_count, b.followup_job_id, b.outcome, b.created_at, b.stopped_at
FROM app_jobs.job_bundles AS b
WHERE b.id = %(id)s
"""

JOB_WORKER = """
SELECT w.id, w.host, w.pid, now() - w.last_heartbeat AS heartbeat_age, w.wakeup
FROM app_jobs.workers AS w
WHERE w.id = %(id)s
"""

# --- actions (admin functions only) --------------------------------------------------------

# Which of these ids are live jobs of the tenant (actions never reach another tenant's).
TENANT_JOB_IDS = f"""
SELECT j.id FROM app_jobs.jobs AS j
WHERE j.id = ANY(%(ids)s::bigint[]) AND {_TENANT_J}
ORDER BY j.id
"""

RETRY_JOB = "SELECT (app_jobs.retry_job(%(id)s::bigint)).id"
CANCEL_JOB = "SELECT app_jobs.cancel_job(%(id)s::bigint)"
DELETE_JOB = "SELECT (app_jobs.delete_job(%(id)s::bigint)).id"

TENANT_SCHEDULE = """
SELECT s.id FROM app_jobs.scheduled_jobs AS s
WHERE s.id = %(id)s AND (%(db)s::uuid IS NULL OR s.database_id = %(db)s::uuid)
"""

RUN_SCHEDULE_NOW = "SELECT (app_jobs.run_scheduled_job(%(id)s::bigint)).id"
PAUSE_SCHEDULE = "SELECT (app_jobs.pause_scheduled_job(%(id)s::bigint)).paused_at"
RESUME_SCHEDULE = "SELECT (app_jobs.resume_scheduled_job(%(id)s::bigint)).next_run_at"

# --- schedules and workers -----------------------------------------------------------------

SCHEDULES = """
SELECT
    s.id, s.database_id, s.task_identifier, s.queue_name, s.key, s.priority,
    s.schedule_info::text AS schedule_info, z.tz, s.next_run_at,
    s.next_run_at AT TIME ZONE z.tz AS next_run_local, s.last_scheduled, s.last_scheduled_id,
    s.last_error, s.last_error_at, s.paused_at
FROM app_jobs.scheduled_jobs AS s
CROSS JOIN LATERAL (
    SELECT coalesce(
        CASE WHEN json_typeof(s.schedule_info) = 'object' THEN s.schedule_info ->> 'tz' END,
        'UTC'
    ) AS tz
) AS z
WHERE (%(db)s::uuid IS NULL OR s.database_id = %(db)s::uuid)
ORDER BY s.id
LIMIT 1000
"""

WORKERS = """
SELECT
    w.id, w.host, w.pid, w.tasks, w.started_at, w.last_heartbeat,
    now() - w.last_heartbeat AS heartbeat_age, w.heartbeat_interval,
    w.last_heartbeat < now() - 3 * w.heartbeat_interval AS stale, w.wakeup
FROM app_jobs.workers AS w
ORDER BY w.id
LIMIT 1000
"""

HELD_JOBS = f"""
SELECT j.id, j.locked_by, j.task_identifier, j.queue_name, now() - j.locked_at AS running_for,
       j.progress, j.stage, j.cancel_requested_at IS NOT NULL AS cancel_requested
FROM app_jobs.jobs AS j
WHERE j.locked_by IS NOT NULL AND {_TENANT_J}
ORDER BY j.locked_by, j.id
LIMIT 5000
"""

# --- live updates --------------------------------------------------------------------------

LISTEN = tuple(f'LISTEN "{channel}"' for channel in (
    "jobs:insert", "jobs:stopped", "jobs:progress", "jobs:cancel", "jobs:bundle_stopped"))

# Changes to look for when notifications do not arrive (or as a backstop for changes that
# send none, such as a claim): each an index lookup.
FINGERPRINT = """
SELECT
    (SELECT max(j.id) FROM app_jobs.jobs AS j) AS max_job,
    (SELECT max(h.id) FROM app_jobs.job_history AS h) AS max_history,
    (SELECT max(j.locked_at) FROM app_jobs.jobs AS j) AS last_claim,
    (SELECT count(*) FROM app_jobs.jobs AS j WHERE j.locked_at IS NOT NULL) AS running,
    (SELECT max(s.last_scheduled) FROM app_jobs.scheduled_jobs AS s) AS last_scheduled,
    (SELECT max(s.updated_at) FROM app_jobs.scheduled_jobs AS s) AS schedule_changed,
    (SELECT count(*) FROM app_jobs.workers) AS workers
"""
