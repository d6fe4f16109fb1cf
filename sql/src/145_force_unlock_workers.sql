-- Unlock the jobs and queues of workers known to be dead.
CREATE FUNCTION app_jobs.force_unlock_workers(worker_ids text[]) RETURNS void
LANGUAGE sql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
    SELECT app_jobs._end_cancelled_claims(ARRAY(
        SELECT j.id FROM app_jobs.jobs AS j
        WHERE j.locked_by = ANY(worker_ids) AND j.cancel_requested_at IS NOT NULL
    ));

    UPDATE app_jobs.jobs AS j
    SET locked_at = NULL, locked_by = NULL
    WHERE j.locked_by = ANY(worker_ids);

    UPDATE app_jobs.job_queues AS q
    SET locked_at = NULL, locked_by = NULL
    WHERE q.locked_by = ANY(worker_ids);
$$;

COMMENT ON FUNCTION app_jobs.force_unlock_workers IS
'Admin: free everything the given (dead) workers hold, attempts unchanged';
