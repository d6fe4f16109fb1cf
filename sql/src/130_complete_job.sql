-- Finish a job successfully: only the worker holding its lock may do so.
CREATE FUNCTION app_jobs.complete_job(
    worker_id text,
    job_id bigint
) RETURNS app_jobs.jobs
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_job app_jobs.jobs;
BEGIN
    PERFORM app_jobs.check_worker_id(worker_id);

    DELETE FROM app_jobs.jobs AS j
    WHERE j.id = job_id AND j.locked_by = worker_id
    RETURNING * INTO v_job;

    IF v_job.queue_name IS NOT NULL THEN
        UPDATE app_jobs.job_queues AS q
        SET locked_by = NULL, locked_at = NULL
        WHERE q.queue_name = v_job.queue_name AND q.locked_by = worker_id;
    END IF;
    RETURN v_job;
END;
$$;

COMMENT ON FUNCTION app_jobs.complete_job IS
'Remove a finished job held by worker_id and release its queue';
