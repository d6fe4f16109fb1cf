-- Cancel a job: a waiting one ends now; a running one gets a cancel request its worker
-- acts on. Returns the job's status afterwards, NULL when there is no such job.
CREATE FUNCTION app_jobs.cancel_job(job_id bigint) RETURNS text
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
DECLARE
    v_job app_jobs.jobs;
BEGIN
    -- Another tenant's job looks missing to a caller held to its own tenant.
    SELECT * INTO v_job FROM app_jobs.jobs AS j
    WHERE j.id = cancel_job.job_id AND app_jobs._tenant_allowed(j.database_id)
    FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF v_job.locked_at IS NOT NULL THEN
        UPDATE app_jobs.jobs AS j
        SET cancel_requested_at = coalesce(j.cancel_requested_at, now())
        WHERE j.id = v_job.id;
        PERFORM app_jobs._notify('jobs:cancel', v_job.id::text);
        RETURN 'cancelling';
    END IF;
    IF v_job.attempts >= v_job.max_attempts THEN
        RETURN 'failed';
    END IF;
    PERFORM app_jobs._lock_bundles(ARRAY[v_job.bundle_id]);
    DELETE FROM app_jobs.job_dependencies AS d WHERE d.job_id = v_job.id;
    DELETE FROM app_jobs.jobs AS j WHERE j.id = v_job.id RETURNING * INTO v_job;
    v_job.last_error := 'cancelled';
    PERFORM app_jobs._job_stopped(v_job, 'cancelled', NULL, NULL);
    RETURN 'cancelled';
END;
$$;

COMMENT ON FUNCTION app_jobs.cancel_job IS
'Cancel a waiting job now, or ask the worker running it to stop; never retried';
