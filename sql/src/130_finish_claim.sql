-- End one claim, fenced by (job id, worker, attempt): completed or cancelled jobs leave
-- the table, failed ones retry after retry_delay (from p_failed_at) until max_attempts. A
-- worker that no longer holds the claim changes nothing and gets NULL.
CREATE FUNCTION app_jobs._finish_claim(
    p_worker_id text,
    p_job_id bigint,
    p_attempt integer,
    p_outcome text,
    p_error text DEFAULT NULL,
    p_error_data jsonb DEFAULT NULL,
    p_result jsonb DEFAULT NULL,
    p_failed_at timestamptz DEFAULT now()
) RETURNS app_jobs.jobs
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_job app_jobs.jobs;
    v_started_at timestamptz;
BEGIN
    SELECT * INTO v_job
    FROM app_jobs.jobs AS j
    WHERE j.id = p_job_id
        AND j.locked_by = p_worker_id
        AND (p_attempt IS NULL OR j.attempts = p_attempt)
    FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    v_started_at := v_job.locked_at;
    PERFORM app_jobs._lock_bundles(ARRAY[v_job.bundle_id]);

    IF p_outcome = 'completed' THEN
        DELETE FROM app_jobs.jobs AS j WHERE j.id = p_job_id RETURNING * INTO v_job;
        PERFORM app_jobs._job_stopped(
            v_job, 'completed', p_worker_id, v_started_at, p_result
        );
    ELSIF p_outcome = 'cancelled' OR v_job.cancel_requested_at IS NOT NULL THEN
        -- A cancelled job is never retried, whatever its handler did.
        DELETE FROM app_jobs.jobs AS j WHERE j.id = p_job_id RETURNING * INTO v_job;
        v_job.last_error := coalesce(p_error, 'cancelled');
        PERFORM app_jobs._job_stopped(
            v_job, 'cancelled', p_worker_id, v_started_at, NULL, p_error_data
        );
    ELSE
        UPDATE app_jobs.jobs AS j
        SET
            last_error = p_error,
            run_at = greatest(p_failed_at, j.run_at)
            + app_jobs._retry_delay(j.task_identifier, j.attempts),
            locked_by = NULL,
            locked_at = NULL
        WHERE j.id = p_job_id
        RETURNING * INTO v_job;
        IF v_job.attempts >= v_job.max_attempts THEN
            PERFORM app_jobs._job_stopped(
                v_job, 'failed', p_worker_id, v_started_at, NULL, p_error_data
            );
        ELSE
            PERFORM app_jobs._notify_job_stopped(v_job, 'failed', TRUE);
        END IF;
    END IF;
    -- The queue's running count (and its lock holder, once none runs) follows the job
    -- row through the _500_move_job_queue_count trigger.
    RETURN v_job;
END;
$$;

-- What a finished claim's row says happened: completed, retrying, failed or cancelled.
CREATE FUNCTION app_jobs._claim_status(p_job app_jobs.jobs, p_outcome text) RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
    SELECT CASE
        WHEN p_job.id IS NULL THEN 'fenced'
        WHEN p_outcome = 'completed' THEN 'completed'
        WHEN p_outcome = 'cancelled' OR p_job.cancel_requested_at IS NOT NULL THEN 'cancelled'
        WHEN p_job.attempts >= p_job.max_attempts THEN 'failed'
        ELSE 'retrying'
    END;
$$;
