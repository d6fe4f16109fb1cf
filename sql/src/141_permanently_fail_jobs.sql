-- Mark jobs by id as failed for good, skipping jobs a live worker holds.
CREATE FUNCTION app_jobs.permanently_fail_jobs(
    job_ids bigint[],
    error_message text DEFAULT NULL
) RETURNS SETOF app_jobs.jobs
LANGUAGE sql VOLATILE
AS $$
    UPDATE app_jobs.jobs AS j
    SET
        last_error = coalesce(error_message, 'Manually marked as failed'),
        attempts = j.max_attempts
    WHERE j.id = ANY(job_ids)
        AND app_jobs.lock_is_free(j.locked_at, j.locked_by, interval '4 hours')
    RETURNING *;
$$;

COMMENT ON FUNCTION app_jobs.permanently_fail_jobs IS
'Admin: stop jobs from ever running again, keeping them for inspection';
