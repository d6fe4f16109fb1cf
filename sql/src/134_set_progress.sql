-- Store a running job's progress (0-100) and stage (at most 1000 characters, so the
-- jobs:progress notification stays far below NOTIFY's 8000-byte limit) and announce it;
-- false when the worker no longer holds the claim, NULL (nothing stored, never waited
-- for) while another session has the job's row locked: progress is a hint, report again.
CREATE FUNCTION app_jobs.set_progress(
    worker_id text,
    job_id bigint,
    progress integer,
    stage text DEFAULT NULL,
    attempt integer DEFAULT NULL
) RETURNS boolean
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
BEGIN
    PERFORM app_jobs._check_worker_id(worker_id);
    IF progress IS NULL OR progress NOT BETWEEN 0 AND 100 THEN
        RAISE EXCEPTION 'progress must be 0 to 100, got %', coalesce(progress::text, 'NULL')
            USING ERRCODE = 'PJ015';
    END IF;
    IF length(stage) > 1000 THEN
        RAISE EXCEPTION 'stage must be at most 1000 characters, got %', length(stage)
            USING ERRCODE = 'PJ039';
    END IF;
    UPDATE app_jobs.jobs AS j
    SET progress = set_progress.progress, stage = set_progress.stage
    WHERE j.id = (
        SELECT h.id FROM app_jobs.jobs AS h
        WHERE h.id = set_progress.job_id
            AND h.locked_by = set_progress.worker_id
            AND (set_progress.attempt IS NULL OR h.attempts = set_progress.attempt)
        FOR UPDATE SKIP LOCKED
    );
    IF NOT FOUND THEN
        -- Busy (its row locked elsewhere) while still this worker's claim: NULL.
        RETURN CASE WHEN EXISTS (
            SELECT 1 FROM app_jobs.jobs AS h
            WHERE h.id = set_progress.job_id
                AND h.locked_by = set_progress.worker_id
                AND (set_progress.attempt IS NULL OR h.attempts = set_progress.attempt)
        ) THEN NULL ELSE FALSE END;
    END IF;
    PERFORM app_jobs._notify(
        'jobs:progress',
        json_build_object(
            'id', set_progress.job_id, 'progress', set_progress.progress,
            'stage', set_progress.stage
        )::text
    );
    RETURN TRUE;
END;
$$;

COMMENT ON FUNCTION app_jobs.set_progress IS
'Running job reports progress 0-100 and a stage; notifies jobs:progress';
