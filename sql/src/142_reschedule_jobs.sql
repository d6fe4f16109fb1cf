-- Change when and how jobs run, skipping jobs a live worker holds.
CREATE FUNCTION app_jobs.reschedule_jobs(
    job_ids bigint[],
    run_at timestamptz DEFAULT NULL,
    priority integer DEFAULT NULL,
    attempts integer DEFAULT NULL,
    max_attempts integer DEFAULT NULL
) RETURNS SETOF app_jobs.jobs
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
BEGIN
    IF reschedule_jobs.max_attempts IS NOT NULL THEN
        PERFORM app_jobs._check_job_spec('-', NULL, NULL, reschedule_jobs.max_attempts);
    END IF;
    RETURN QUERY
    UPDATE app_jobs.jobs AS j
    SET
        run_at = coalesce(reschedule_jobs.run_at, j.run_at),
        priority = coalesce(reschedule_jobs.priority, j.priority),
        attempts = coalesce(reschedule_jobs.attempts, j.attempts),
        max_attempts = coalesce(reschedule_jobs.max_attempts, j.max_attempts)
    WHERE j.id = ANY(job_ids)
        AND app_jobs._lock_is_free(j.locked_at, j.locked_by, app_jobs._job_expiry())
    RETURNING j.*;
END;
$$;

COMMENT ON FUNCTION app_jobs.reschedule_jobs IS
'Admin: set run_at, priority, attempts or max_attempts of jobs (NULL keeps)';
