-- Per task and queue: live jobs by status (as in job_status), how long the longest-due
-- runnable job has waited, and what finished in the last 5 minutes (from job_history; 0
-- when history is off). One pass over jobs and one finished_at index range of history.
CREATE VIEW app_jobs.queue_stats AS
SELECT
    s.task_identifier,
    s.queue_name,
    count(*) FILTER (WHERE s.state = 'waiting') AS waiting,
    count(*) FILTER (WHERE s.state = 'scheduled') AS scheduled,
    count(*) FILTER (WHERE s.state = 'running') AS running,
    count(*) FILTER (WHERE s.state = 'retrying') AS retrying,
    count(*) FILTER (WHERE s.state = 'failed') AS failed,
    count(*) FILTER (WHERE s.state = 'blocked') AS blocked,
    now() - min(s.due_at) AS oldest_waiting,
    count(*) FILTER (WHERE s.state = 'completed_5m') AS completed_last_5m,
    count(*) FILTER (WHERE s.state = 'failed_5m') AS failed_last_5m,
    count(*) FILTER (WHERE s.state = 'cancelled_5m') AS cancelled_last_5m,
    round(count(*) FILTER (WHERE s.state = 'completed_5m') / 5.0, 2) AS completed_per_minute,
    round(count(*) FILTER (WHERE s.state = 'failed_5m') / 5.0, 2) AS failed_per_minute
FROM (
    SELECT
        j.task_identifier,
        j.queue_name,
        CASE
            WHEN j.locked_at IS NOT NULL THEN 'running'
            WHEN j.attempts >= j.max_attempts THEN 'failed'
            WHEN j.attempts > 0 OR j.last_error IS NOT NULL THEN 'retrying'
            WHEN j.blocked_by > 0 THEN 'blocked'
            WHEN j.run_at > now() THEN 'scheduled'
            ELSE 'waiting'
        END AS state,
        -- Runnable now (waiting, or retrying and due): how long since it became due.
        CASE WHEN j.is_available AND j.run_at <= now() THEN j.run_at END AS due_at
    FROM app_jobs.jobs AS j
    UNION ALL
    SELECT
        h.task_identifier,
        h.queue_name,
        h.status || '_5m' AS state,
        NULL::timestamptz AS due_at
    FROM app_jobs.job_history AS h
    WHERE h.finished_at >= now() - interval '5 minutes'
) AS s
GROUP BY s.task_identifier, s.queue_name;

COMMENT ON VIEW app_jobs.queue_stats IS
'Per task and queue: jobs by status, oldest_waiting, what finished in the last 5 minutes';
