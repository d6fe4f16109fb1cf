-- Record a failed attempt: unlock the job and push run_at back exponentially.
CREATE FUNCTION app_jobs.fail_job(
    worker_id text,
    job_id bigint,
    error_message text DEFAULT NULL
) RETURNS app_jobs.jobs
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
BEGIN
    PERFORM app_jobs._check_worker_id(worker_id);
    RETURN app_jobs._finish_claim(worker_id, job_id, NULL, 'failed', error_message);
END;
$$;

COMMENT ON FUNCTION app_jobs.fail_job IS
'Record a failed attempt; retried with backoff until max_attempts';
