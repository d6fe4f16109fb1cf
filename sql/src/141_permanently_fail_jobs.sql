-- Mark jobs by id as failed for good, skipping jobs a live worker holds.
CREATE FUNCTION app_jobs.permanently_fail_jobs(
    job_ids bigint[],
    error_message text DEFAULT NULL
) RETURNS SETOF app_jobs.jobs
LANGUAGE sql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
    SELECT * FROM app_jobs._stop_jobs(
        job_ids, 'failed', coalesce(error_message, 'Manually marked as failed')
    );
$$;

COMMENT ON FUNCTION app_jobs.permanently_fail_jobs IS
'Admin: stop jobs from ever running again, keeping them for inspection';
