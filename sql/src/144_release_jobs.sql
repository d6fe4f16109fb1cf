-- Hand back every job and queue a worker holds, refunding the attempt.
CREATE FUNCTION app_jobs.release_jobs(worker_id text) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    PERFORM app_jobs.check_worker_id(worker_id);

    UPDATE app_jobs.jobs AS j
    SET locked_at = NULL, locked_by = NULL, attempts = greatest(j.attempts - 1, 0)
    WHERE j.locked_by = release_jobs.worker_id;

    UPDATE app_jobs.job_queues AS q
    SET locked_at = NULL, locked_by = NULL
    WHERE q.locked_by = release_jobs.worker_id;
END;
$$;

COMMENT ON FUNCTION app_jobs.release_jobs IS
'Unlock all jobs and queues of a stopping worker; their attempt does not count';
