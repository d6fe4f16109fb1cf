-- Claim up to batch_size available jobs for a worker, at most one per named queue.
CREATE FUNCTION app_jobs.get_jobs(
    worker_id text,
    task_identifiers text[] DEFAULT NULL,
    job_expiry interval DEFAULT '4 hours',
    batch_size integer DEFAULT 1
) RETURNS SETOF app_jobs.jobs
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_now timestamptz := now();
    v_expiry interval := coalesce(job_expiry, interval '4 hours');
    v_expired timestamptz := now() - v_expiry;
BEGIN
    PERFORM app_jobs.check_worker_id(worker_id);
    IF batch_size IS NULL OR batch_size NOT BETWEEN 1 AND 10000 THEN
        RAISE EXCEPTION 'batch_size must be 1 to 10000, got %',
            coalesce(batch_size::text, 'NULL')
            USING ERRCODE = 'PJ006';
    END IF;

    PERFORM app_jobs.end_cancelled_claims(ARRAY(
        SELECT e.id FROM app_jobs.jobs AS e
        WHERE e.locked_at < v_expired AND e.cancel_requested_at IS NOT NULL
            AND app_jobs.lock_is_free(e.locked_at, e.locked_by, v_expiry)
    ));
    -- Locks older than job_expiry whose holder never registered (no heartbeat to go
    -- by) belong to workers presumed dead: free them. Registered workers' jobs are
    -- freed by reap_dead_workers when their heartbeat stops.
    UPDATE app_jobs.jobs AS j
    SET locked_at = NULL, locked_by = NULL
    WHERE j.id IN (
        SELECT e.id FROM app_jobs.jobs AS e
        WHERE e.locked_at < v_expired AND e.attempts < e.max_attempts
            AND app_jobs.lock_is_free(e.locked_at, e.locked_by, v_expiry)
        FOR UPDATE SKIP LOCKED
    );

    -- Lock order, shared by every function here: job rows first, then queue rows in
    -- name order. Locking a queue row before its jobs could deadlock with add_job,
    -- which holds a job row when its trigger counts the job into the queue.
    RETURN QUERY
    WITH candidates AS (
        SELECT j.id, j.queue_name, j.priority, j.run_at
        FROM app_jobs.jobs AS j
        WHERE j.is_available
            AND j.run_at <= v_now
            AND (task_identifiers IS NULL OR j.task_identifier = ANY(task_identifiers))
            AND (
                j.queue_name IS NULL
                OR EXISTS (
                    SELECT 1 FROM app_jobs.job_queues AS q
                    WHERE q.queue_name = j.queue_name
                        AND app_jobs.lock_is_free(q.locked_at, q.locked_by, v_expiry)
                )
                -- Only the head of a named queue: never overtake an earlier job
                -- whose row another session happens to hold for a moment.
                AND NOT EXISTS (
                    SELECT 1 FROM app_jobs.jobs AS e
                    WHERE e.queue_name = j.queue_name
                        AND e.is_available
                        AND e.run_at <= v_now
                        AND (e.priority, e.run_at, e.id) < (j.priority, j.run_at, j.id)
                )
            )
        ORDER BY j.priority, j.run_at, j.id
        LIMIT batch_size
        FOR UPDATE OF j SKIP LOCKED
    ),

    first_per_queue AS (
        SELECT DISTINCT ON (c.queue_name) c.id, c.queue_name
        FROM candidates AS c
        WHERE c.queue_name IS NOT NULL
        ORDER BY c.queue_name, c.priority, c.run_at, c.id
    ),

    -- The queues still free once locked (the lock re-reads the newest row version).
    free_queues AS (
        SELECT q.queue_name
        FROM app_jobs.job_queues AS q
        WHERE q.queue_name IN (SELECT f.queue_name FROM first_per_queue AS f)
            AND app_jobs.lock_is_free(q.locked_at, q.locked_by, v_expiry)
        ORDER BY q.queue_name
        FOR UPDATE SKIP LOCKED
    ),

    chosen AS (
        SELECT c.id, c.queue_name FROM candidates AS c WHERE c.queue_name IS NULL
        UNION ALL
        SELECT f.id, f.queue_name
        FROM first_per_queue AS f
        INNER JOIN free_queues AS fq ON f.queue_name = fq.queue_name
    ),

    locked_queues AS (
        UPDATE app_jobs.job_queues AS q
        SET locked_by = worker_id, locked_at = v_now
        FROM free_queues AS fq
        WHERE q.queue_name = fq.queue_name
        RETURNING q.queue_name
    ),

    claimed AS (
        UPDATE app_jobs.jobs AS j
        SET
            attempts = j.attempts + 1, locked_by = worker_id, locked_at = v_now,
            progress = NULL, stage = NULL
        FROM chosen AS c
        WHERE j.id = c.id
        RETURNING j.*
    )

    -- locked_queues runs to completion although nothing reads it.
    SELECT cl.*
    FROM claimed AS cl
    ORDER BY cl.priority, cl.run_at, cl.id;
END;
$$;

COMMENT ON FUNCTION app_jobs.get_jobs IS
'Claim up to batch_size jobs (one per named queue) for worker_id';
