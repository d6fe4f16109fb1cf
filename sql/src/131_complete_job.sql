-- Finish a job successfully: only the worker holding its lock may do so.
CREATE FUNCTION app_jobs.complete_job(
    worker_id text,
    job_id bigint
) RETURNS app_jobs.jobs
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
BEGIN
    PERFORM app_jobs._check_worker_id(worker_id);
    RETURN app_jobs._finish_claim(worker_id, job_id, NULL, 'completed');
END;
$$;

COMMENT ON FUNCTION app_jobs.complete_job IS
'Remove a finished job held by worker_id and release its queue';
