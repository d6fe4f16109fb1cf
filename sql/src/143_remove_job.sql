-- Delete the job with a key, or strip the key from it if a worker holds it.
CREATE FUNCTION app_jobs.remove_job(job_key text) RETURNS app_jobs.jobs
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_job app_jobs.jobs;
BEGIN
    DELETE FROM app_jobs.jobs AS j
    WHERE j.key = job_key
        AND app_jobs.lock_is_free(j.locked_at, j.locked_by, interval '4 hours')
    RETURNING * INTO v_job;
    IF FOUND THEN
        RETURN v_job;
    END IF;

    -- Running: let it finish, but never retry it and free its key.
    UPDATE app_jobs.jobs AS j
    SET key = NULL, attempts = j.max_attempts
    WHERE j.key = job_key
    RETURNING * INTO v_job;
    RETURN v_job;
END;
$$;

COMMENT ON FUNCTION app_jobs.remove_job IS
'Remove the job that has job_key; a running one is only stopped from retrying';
