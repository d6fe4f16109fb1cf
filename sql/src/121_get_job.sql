-- Claim the next available job for a worker; a row of NULLs when there is none.
-- job_expiry NULL (the default) means the job_expiry setting.
CREATE FUNCTION app_jobs.get_job(
    worker_id text,
    task_identifiers text[] DEFAULT NULL,
    job_expiry interval DEFAULT NULL
) RETURNS app_jobs.jobs
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
DECLARE
    v_job app_jobs.jobs;
BEGIN
    SELECT * INTO v_job
    FROM app_jobs.get_jobs(worker_id, task_identifiers, job_expiry, 1);
    RETURN v_job;
END;
$$;

COMMENT ON FUNCTION app_jobs.get_job IS
'Claim the next job: priority ascending, then run_at, then id';
