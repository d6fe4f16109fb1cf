-- Lock the next unlocked recurring job that is not paused for a scheduler worker.
CREATE FUNCTION app_jobs.get_scheduled_job(
    worker_id text,
    task_identifiers text[] DEFAULT NULL
) RETURNS app_jobs.scheduled_jobs
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
DECLARE
    v_row app_jobs.scheduled_jobs;
BEGIN
    PERFORM app_jobs._check_worker_id(worker_id);

    UPDATE app_jobs.scheduled_jobs AS s
    SET locked_by = worker_id, locked_at = now()
    WHERE s.id = (
        SELECT n.id FROM app_jobs.scheduled_jobs AS n
        WHERE n.locked_at IS NULL AND n.paused_at IS NULL
            AND (task_identifiers IS NULL OR n.task_identifier = ANY(task_identifiers))
        ORDER BY n.priority, n.id
        LIMIT 1
        FOR UPDATE SKIP LOCKED
    )
    RETURNING * INTO v_row;
    RETURN v_row;
END;
$$;

COMMENT ON FUNCTION app_jobs.get_scheduled_job IS
'Lock the next unlocked, unpaused scheduled job for worker_id; NULLs when none';

-- Unlock the recurring jobs a scheduler worker holds (all, or the given ids).
CREATE FUNCTION app_jobs.release_scheduled_jobs(
    worker_id text,
    ids bigint[] DEFAULT NULL
) RETURNS void
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
BEGIN
    PERFORM app_jobs._check_worker_id(worker_id);

    UPDATE app_jobs.scheduled_jobs AS s
    SET locked_by = NULL, locked_at = NULL
    WHERE s.locked_by = release_scheduled_jobs.worker_id
        AND (ids IS NULL OR s.id = ANY(ids));
END;
$$;

COMMENT ON FUNCTION app_jobs.release_scheduled_jobs IS
'Unlock scheduled jobs held by worker_id (all, or only ids)';
