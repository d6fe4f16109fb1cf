-- Remove jobs by id as done, skipping jobs a live worker holds.
CREATE FUNCTION app_jobs.complete_jobs(job_ids bigint[]) RETURNS SETOF app_jobs.jobs
LANGUAGE sql VOLATILE
AS $$
    DELETE FROM app_jobs.jobs AS j
    WHERE j.id = ANY(job_ids)
        AND app_jobs.lock_is_free(j.locked_at, j.locked_by, interval '4 hours')
    RETURNING *;
$$;

COMMENT ON FUNCTION app_jobs.complete_jobs IS
'Admin: delete jobs by id unless a worker holds them';
