-- Keep a job that reached a final state in job_history, unless history is off.
CREATE FUNCTION app_jobs.record_history(
    p_job app_jobs.jobs,
    p_status text,
    p_worker_id text,
    p_started_at timestamptz,
    p_result jsonb DEFAULT NULL,
    p_error_data jsonb DEFAULT NULL
) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    IF app_jobs.setting('history') = 'off' THEN
        RETURN;
    END IF;
    INSERT INTO app_jobs.job_history (
        job_id, database_id, task_identifier, queue_name, key, payload, priority,
        status, attempts, max_attempts, result, last_error, error_data, worker_id,
        created_at, started_at
    ) VALUES (
        p_job.id, p_job.database_id, p_job.task_identifier, p_job.queue_name, p_job.key,
        p_job.payload, p_job.priority, p_status, p_job.attempts, p_job.max_attempts,
        p_result, p_job.last_error, p_error_data, p_worker_id,
        p_job.created_at, p_started_at
    );
END;
$$;
