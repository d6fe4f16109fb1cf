-- Remove jobs by id as done, skipping jobs a live worker holds.
CREATE FUNCTION app_jobs.complete_jobs(job_ids bigint[]) RETURNS SETOF app_jobs.jobs
LANGUAGE sql VOLATILE
AS $$
    SELECT * FROM app_jobs.stop_jobs(job_ids, 'completed');
$$;

COMMENT ON FUNCTION app_jobs.complete_jobs IS
'Admin: delete jobs by id unless a worker holds them';
