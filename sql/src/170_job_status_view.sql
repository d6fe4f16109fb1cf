-- Every job with its lifecycle status: live jobs from app_jobs.jobs, finished ones from
-- app_jobs.job_history (the latest record of each job no longer live).
CREATE VIEW app_jobs.job_status AS
SELECT
    j.id,
    j.task_identifier,
    j.queue_name,
    j.key,
    CASE
        WHEN j.locked_at IS NOT NULL THEN 'running'
        WHEN j.attempts >= j.max_attempts THEN 'failed'
        WHEN j.attempts > 0 OR j.last_error IS NOT NULL THEN 'retrying'
        WHEN j.blocked_by > 0 THEN 'blocked'
        WHEN j.run_at > now() THEN 'scheduled'
        ELSE 'waiting'
    END AS status,
    j.attempts,
    j.max_attempts,
    j.priority,
    j.run_at,
    j.progress,
    j.stage,
    j.cancel_requested_at IS NOT NULL AS cancel_requested,
    j.last_error,
    NULL::jsonb AS result,
    j.locked_by AS worker_id,
    j.created_at,
    j.locked_at AS started_at,
    NULL::timestamptz AS finished_at,
    j.origin,
    j.bundle_id
FROM app_jobs.jobs AS j
UNION ALL
SELECT f.*
FROM (
    SELECT DISTINCT ON (h.job_id)
        h.job_id AS id,
        h.task_identifier,
        h.queue_name,
        h.key,
        h.status,
        h.attempts,
        h.max_attempts,
        h.priority,
        NULL::timestamptz AS run_at,
        NULL::integer AS progress,
        NULL::text AS stage,
        FALSE AS cancel_requested,
        h.last_error,
        h.result,
        h.worker_id,
        h.created_at,
        h.started_at,
        h.finished_at,
        h.origin,
        h.bundle_id
    FROM app_jobs.job_history AS h
    LEFT JOIN app_jobs.jobs AS live ON h.job_id = live.id
    WHERE live.id IS NULL
    ORDER BY h.job_id ASC, h.finished_at DESC, h.id DESC
) AS f;

COMMENT ON VIEW app_jobs.job_status IS
'Each job once: waiting, scheduled, blocked, running, retrying, failed, cancelled, completed';
