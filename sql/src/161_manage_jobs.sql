-- Jobs waiting to run (now or later), in claim order.
CREATE FUNCTION app_jobs.waiting_jobs(
    task_identifiers text[] DEFAULT NULL,
    max_rows integer DEFAULT 100
) RETURNS SETOF app_jobs.jobs
LANGUAGE sql STABLE
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
    SELECT j.*
    FROM app_jobs.jobs AS j
    WHERE j.is_available
        AND (task_identifiers IS NULL OR j.task_identifier = ANY(task_identifiers))
    ORDER BY j.priority, j.run_at, j.id
    LIMIT max_rows;
$$;

COMMENT ON FUNCTION app_jobs.waiting_jobs IS 'Admin: jobs waiting to run, in claim order';

-- Jobs that failed for good (attempts used up), newest first.
CREATE FUNCTION app_jobs.failed_jobs(
    task_identifiers text[] DEFAULT NULL,
    max_rows integer DEFAULT 100
) RETURNS SETOF app_jobs.jobs
LANGUAGE sql STABLE
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
    SELECT j.*
    FROM app_jobs.jobs AS j
    WHERE j.locked_at IS NULL AND j.attempts >= j.max_attempts
        AND (task_identifiers IS NULL OR j.task_identifier = ANY(task_identifiers))
    ORDER BY j.updated_at DESC, j.id DESC
    LIMIT max_rows;
$$;

COMMENT ON FUNCTION app_jobs.failed_jobs IS 'Admin: permanently failed jobs, newest first';

-- Raise PJ020 when a job is running: management functions leave those to their worker.
CREATE FUNCTION app_jobs._check_not_running(p_job app_jobs.jobs) RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF p_job.locked_at IS NOT NULL THEN
        RAISE EXCEPTION 'job % is running (held by %); cancel it instead',
            p_job.id, p_job.locked_by
            USING ERRCODE = 'PJ020';
    END IF;
END;
$$;

-- Give a failed or retrying job a fresh set of attempts, to run now (its past errors
-- stay in job_history).
CREATE FUNCTION app_jobs.retry_job(job_id bigint) RETURNS app_jobs.jobs
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
DECLARE
    v_job app_jobs.jobs;
BEGIN
    SELECT * INTO v_job FROM app_jobs.jobs AS j WHERE j.id = retry_job.job_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    PERFORM app_jobs._check_not_running(v_job);
    UPDATE app_jobs.jobs AS j
    SET attempts = 0, run_at = now(), last_error = NULL
    WHERE j.id = v_job.id
    RETURNING * INTO v_job;
    RETURN v_job;
END;
$$;

COMMENT ON FUNCTION app_jobs.retry_job IS
'Admin: reset a failed or retrying job (attempts 0, run now); PJ020 if it is running';

-- Delete one job that is not running; returns it (NULL when there is none).
CREATE FUNCTION app_jobs.delete_job(job_id bigint) RETURNS app_jobs.jobs
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
DECLARE
    v_job app_jobs.jobs;
BEGIN
    SELECT * INTO v_job FROM app_jobs.jobs AS j WHERE j.id = delete_job.job_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    PERFORM app_jobs._check_not_running(v_job);
    SELECT * INTO v_job FROM app_jobs._stop_jobs(ARRAY[v_job.id], 'cancelled', 'deleted');
    RETURN v_job;
END;
$$;

COMMENT ON FUNCTION app_jobs.delete_job IS
'Admin: delete one job unless it is running (PJ020); it counts as cancelled';

-- Delete finished work older than older_than: history rows and permanently failed jobs.
CREATE FUNCTION app_jobs.delete_finished_jobs(
    older_than interval DEFAULT '0'
) RETURNS integer
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
DECLARE
    v_history integer;
    v_failed integer;
BEGIN
    DELETE FROM app_jobs.job_history AS h
    WHERE h.finished_at <= now() - coalesce(older_than, interval '0');
    GET DIAGNOSTICS v_history = ROW_COUNT;
    DELETE FROM app_jobs.jobs AS j
    WHERE j.locked_at IS NULL AND j.attempts >= j.max_attempts
        AND j.updated_at <= now() - coalesce(older_than, interval '0');
    GET DIAGNOSTICS v_failed = ROW_COUNT;
    RETURN v_history + v_failed;
END;
$$;

COMMENT ON FUNCTION app_jobs.delete_finished_jobs IS
'Admin: delete history and permanently failed jobs finished before now() - older_than';
