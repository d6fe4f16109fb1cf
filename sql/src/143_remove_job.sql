-- Delete the job with a key, or strip the key from it if a worker holds it.
CREATE FUNCTION app_jobs.remove_job(job_key text) RETURNS app_jobs.jobs
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
DECLARE
    v_job app_jobs.jobs;
BEGIN
    SELECT * INTO v_job FROM app_jobs._stop_jobs(
        ARRAY(SELECT j.id FROM app_jobs.jobs AS j WHERE j.key = job_key), 'cancelled', 'removed'
    );
    IF v_job.id IS NOT NULL THEN
        RETURN v_job;
    END IF;

    -- Running: let it finish, but never retry it and free its key.
    UPDATE app_jobs.jobs AS j
    SET key = NULL, max_attempts = greatest(j.attempts, 1)
    WHERE j.key = job_key
    RETURNING * INTO v_job;
    RETURN v_job;
END;
$$;

COMMENT ON FUNCTION app_jobs.remove_job IS
'Remove the job that has job_key; a running one is only stopped from retrying';
