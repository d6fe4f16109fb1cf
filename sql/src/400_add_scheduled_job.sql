-- Create a recurring job, or update the one that has the same key; a key belongs to the
-- tenant of the schedule holding it (PJ030 for another tenant's key, whoever calls).
CREATE FUNCTION app_jobs.add_scheduled_job(
    db_id uuid DEFAULT nullif(
        current_setting('jwt.claims.database_id', TRUE), ''
    )::uuid,
    identifier text DEFAULT NULL,
    payload json DEFAULT '{}'::json,
    schedule_info json DEFAULT NULL,
    job_key text DEFAULT NULL,
    queue_name text DEFAULT NULL,
    max_attempts integer DEFAULT 25,
    priority integer DEFAULT 0
) RETURNS app_jobs.scheduled_jobs
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
DECLARE
    v_row app_jobs.scheduled_jobs;
BEGIN
    PERFORM app_jobs._check_tenant(db_id);
    PERFORM app_jobs._check_job_spec(identifier, queue_name, job_key, max_attempts);
    -- Checked here too, so that a schedule cannot hold a payload its jobs would be
    -- refused for.
    PERFORM app_jobs._check_payload(payload);
    -- The rest of schedule_info is checked when the row is written (the
    -- _200_next_run_at trigger), for direct INSERTs too.
    IF schedule_info IS NULL OR json_typeof(schedule_info) <> 'object' THEN
        RAISE EXCEPTION 'schedule_info must be a JSON object'
            USING ERRCODE = 'PJ008';
    END IF;

    INSERT INTO app_jobs.scheduled_jobs AS s (
        database_id, task_identifier, payload, schedule_info, key, queue_name,
        max_attempts, priority
    ) VALUES (
        db_id, identifier, coalesce(payload, '{}'::json), schedule_info, job_key,
        queue_name, coalesce(max_attempts, 25), coalesce(priority, 0)
    )
    ON CONFLICT (key) DO UPDATE SET
        database_id = excluded.database_id,
        task_identifier = excluded.task_identifier,
        payload = excluded.payload,
        schedule_info = excluded.schedule_info,
        queue_name = excluded.queue_name,
        max_attempts = excluded.max_attempts,
        priority = excluded.priority
    -- Part of the upsert itself, so no interleaving lets it update another tenant's row.
    WHERE s.database_id IS NOT DISTINCT FROM excluded.database_id
    RETURNING * INTO v_row;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'schedule key % belongs to another tenant''s schedule', job_key
            USING ERRCODE = 'PJ030';
    END IF;
    RETURN v_row;
END;
$$;

COMMENT ON FUNCTION app_jobs.add_scheduled_job IS
'Create a recurring job; with job_key, update the schedule that has that key';
