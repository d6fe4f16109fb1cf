-- End jobs by hand (admin functions): p_status completed or cancelled deletes them,
-- failed keeps them with their attempts used up; each goes through job_stopped
-- (history, events, dependents, bundle). Jobs a live worker holds are skipped; a job
-- that had already failed for good stopped once already: it is only deleted, or (failed
-- again) given the new last_error and returned, as the original permanently_fail_jobs.
CREATE FUNCTION app_jobs.stop_jobs(
    p_job_ids bigint[],
    p_status text,
    p_error text DEFAULT NULL
) RETURNS SETOF app_jobs.jobs
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_job app_jobs.jobs;
    v_stopped_before boolean;
BEGIN
    -- Job rows first, then bundles, then queues in name order (as everywhere).
    PERFORM 1 FROM app_jobs.jobs AS j
    WHERE j.id = ANY(p_job_ids)
    ORDER BY j.id
    FOR UPDATE;
    PERFORM app_jobs.lock_bundles(ARRAY(
        SELECT j.bundle_id FROM app_jobs.jobs AS j WHERE j.id = ANY(p_job_ids)
    ));
    FOR v_job IN
        SELECT * FROM app_jobs.jobs AS j
        WHERE j.id = ANY(p_job_ids)
            AND app_jobs.lock_is_free(j.locked_at, j.locked_by, interval '4 hours')
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
            PERFORM app_jobs.job_stopped(v_job, p_status, NULL, NULL);
        END IF;
        RETURN NEXT v_job;
    END LOOP;
END;
$$;
