-- Hand back the jobs (all, or only job_ids) and queues a worker holds, refunding the attempt.
CREATE FUNCTION app_jobs.release_jobs(
    worker_id text,
    job_ids bigint[] DEFAULT NULL
) RETURNS void
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
BEGIN
    PERFORM app_jobs._check_worker_id(worker_id);
    PERFORM app_jobs._end_cancelled_claims(ARRAY(
        SELECT j.id FROM app_jobs.jobs AS j
        WHERE j.locked_by = release_jobs.worker_id
            AND j.cancel_requested_at IS NOT NULL
            AND (release_jobs.job_ids IS NULL OR j.id = ANY(release_jobs.job_ids))
    ));

    WITH released AS (
        UPDATE app_jobs.jobs AS j
        SET
            locked_at = NULL,
            locked_by = NULL,
            attempts = greatest(j.attempts - 1, 0)
        WHERE j.locked_by = release_jobs.worker_id
            AND (release_jobs.job_ids IS NULL OR j.id = ANY(release_jobs.job_ids))
        RETURNING j.queue_name
    )

    UPDATE app_jobs.job_queues AS q
    SET locked_at = NULL, locked_by = NULL
    WHERE q.locked_by = release_jobs.worker_id
        AND (
            release_jobs.job_ids IS NULL
            OR q.queue_name IN (SELECT r.queue_name FROM released AS r)
        );
END;
$$;

COMMENT ON FUNCTION app_jobs.release_jobs IS
'Unlock a stopping worker''s jobs (all, or job_ids) and queues; the attempt does not count';
