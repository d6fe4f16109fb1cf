-- Claims being handed back whose job was asked to cancel end cancelled instead of
-- returning to the queue (a cancelled job never runs again). Returns how many ended.
CREATE FUNCTION app_jobs._end_cancelled_claims(p_job_ids bigint[]) RETURNS integer
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_locked bigint[];
    v_job app_jobs.jobs;
    v_count integer := 0;
BEGIN
    IF cardinality(p_job_ids) IS NULL OR cardinality(p_job_ids) = 0 THEN
        RETURN 0;
    END IF;
    -- Every row the loop writes, locked in the shared order (see _lock_jobs).
    v_locked := app_jobs._lock_jobs(p_job_ids);
    FOR v_job IN
        SELECT * FROM app_jobs.jobs AS j
        WHERE j.id = ANY(v_locked)
            AND j.locked_by IS NOT NULL
            AND j.cancel_requested_at IS NOT NULL
        ORDER BY j.queue_name NULLS FIRST, j.id
    LOOP
        PERFORM app_jobs._finish_claim(v_job.locked_by, v_job.id, NULL, 'cancelled');
        v_count := v_count + 1;
    END LOOP;
    RETURN v_count;
END;
$$;
