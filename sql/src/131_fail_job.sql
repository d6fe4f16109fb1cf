-- Record a failed attempt: unlock the job and push run_at back exponentially.
CREATE FUNCTION app_jobs.fail_job(
    worker_id text,
    job_id bigint,
    error_message text DEFAULT NULL
) RETURNS app_jobs.jobs
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_job app_jobs.jobs;
BEGIN
    PERFORM app_jobs.check_worker_id(worker_id);

    UPDATE app_jobs.jobs AS j
    SET
        last_error = error_message,
        run_at = greatest(now(), j.run_at)
        + exp(least(j.attempts, 10)) * interval '1 second',
        locked_by = NULL,
        locked_at = NULL
    WHERE j.id = job_id AND j.locked_by = worker_id
    RETURNING * INTO v_job;

    IF v_job.queue_name IS NOT NULL THEN
        UPDATE app_jobs.job_queues AS q
        SET locked_by = NULL, locked_at = NULL
        WHERE q.queue_name = v_job.queue_name AND q.locked_by = worker_id;
    END IF;
    RETURN v_job;
END;
$$;

COMMENT ON FUNCTION app_jobs.fail_job IS
'Record a failed attempt; retried with backoff until max_attempts';
