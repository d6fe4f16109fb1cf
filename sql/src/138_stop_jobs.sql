-- End jobs by hand (admin functions): p_status completed or cancelled deletes them,
-- failed keeps them with their attempts used up; each goes through job_stopped
-- (history, events, dependents, bundle). Jobs a live worker holds are skipped; a job
-- that had already failed for good stopped once already: it is only deleted, or (failed
-- again) given the new last_error and returned, as the original permanently_fail_jobs.
CREATE FUNCTION app_jobs._stop_jobs(
    p_job_ids bigint[],
    p_status text,
    p_error text DEFAULT NULL
) RETURNS SETOF app_jobs.jobs
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_locked bigint[];
    v_job app_jobs.jobs;
    v_stopped_before boolean;
BEGIN
    -- Every row the loop writes, locked in the shared order (see _lock_jobs).
    v_locked := app_jobs._lock_jobs(p_job_ids);
    FOR v_job IN
        SELECT * FROM app_jobs.jobs AS j
        WHERE j.id = ANY(v_locked)
            AND app_jobs._lock_is_free(j.locked_at, j.locked_by, app_jobs._job_expiry())
        ORDER BY j.queue_name NULLS FIRST, j.id
    LOOP
        v_stopped_before := v_job.locked_at IS NULL AND v_job.attempts >= v_job.max_attempts;
        IF p_status = 'failed' THEN
            UPDATE app_jobs.jobs AS j
            SET
                last_error = p_error,
                attempts = greatest(j.attempts, j.max_attempts),
                locked_at = NULL,
                locked_by = NULL
            WHERE j.id = v_job.id
            RETURNING * INTO v_job;
        ELSE
            DELETE FROM app_jobs.job_dependencies AS d WHERE d.job_id = v_job.id;
            DELETE FROM app_jobs.jobs AS j WHERE j.id = v_job.id RETURNING * INTO v_job;
            v_job.last_error := coalesce(p_error, v_job.last_error);
        END IF;
        IF NOT v_stopped_before THEN
            PERFORM app_jobs._job_stopped(v_job, p_status, NULL, NULL);
        END IF;
        RETURN NEXT v_job;
    END LOOP;
END;
$$;
