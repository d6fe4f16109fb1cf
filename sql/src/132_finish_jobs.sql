-- Record a worker's batch of outcomes in one transaction: a NULL error completes the job,
-- any other fails it. Returns the jobs the worker still held, as complete_job/fail_job do.
CREATE FUNCTION app_jobs.finish_jobs(
    worker_id text,
    job_ids bigint[],
    error_messages text[]
) RETURNS SETOF app_jobs.jobs
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_outcome record;
    v_job app_jobs.jobs;
BEGIN
    PERFORM app_jobs.check_worker_id(worker_id);
    IF cardinality(job_ids) IS DISTINCT FROM cardinality(error_messages) THEN
        RAISE EXCEPTION 'job_ids and error_messages must have the same length (% and %)',
            coalesce(cardinality(job_ids)::text, 'NULL'),
            coalesce(cardinality(error_messages)::text, 'NULL')
            USING ERRCODE = 'PJ012';
    END IF;

    -- Lock order shared with get_jobs and add_job: every job row first, then queue
    -- rows in name order, so a batch cannot deadlock with either.
    PERFORM 1
    FROM app_jobs.jobs AS j
    WHERE j.id = ANY(job_ids) AND j.locked_by = finish_jobs.worker_id
    ORDER BY j.id
    FOR UPDATE;

    FOR v_outcome IN
        SELECT o.job_id, o.error_message
        FROM unnest(job_ids, error_messages) AS o (job_id, error_message)
        INNER JOIN app_jobs.jobs AS j ON o.job_id = j.id
        WHERE j.locked_by = finish_jobs.worker_id
        ORDER BY j.queue_name NULLS FIRST, j.id
    LOOP
        IF v_outcome.error_message IS NULL THEN
            v_job := app_jobs.complete_job(worker_id, v_outcome.job_id);
        ELSE
            v_job := app_jobs.fail_job(worker_id, v_outcome.job_id, v_outcome.error_message);
        END IF;
        -- A job listed twice is finished once.
        IF v_job.id IS NOT NULL THEN
            RETURN NEXT v_job;
        END IF;
    END LOOP;
    RETURN;
END;
$$;

COMMENT ON FUNCTION app_jobs.finish_jobs IS
'Worker batch: complete (NULL error) or fail each listed job the worker still holds';
