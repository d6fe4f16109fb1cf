-- Remove jobs by id as done, skipping jobs a live worker holds.
CREATE FUNCTION app_jobs.complete_jobs(job_ids bigint[]) RETURNS SETOF app_jobs.jobs
LANGUAGE sql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
    SELECT * FROM app_jobs._stop_jobs(job_ids, 'completed');
$$;

COMMENT ON FUNCTION app_jobs.complete_jobs IS
'Admin: delete jobs by id unless a worker holds them';
