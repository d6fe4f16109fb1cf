-- Enqueue a job, or replace the waiting job that has the same key.
CREATE FUNCTION app_jobs.add_job(
    db_id uuid DEFAULT nullif(
        current_setting('jwt.claims.database_id', TRUE), ''
    )::uuid,
    identifier text DEFAULT NULL,
    payload json DEFAULT '{}'::json,
    job_key text DEFAULT NULL,
    queue_name text DEFAULT NULL,
    run_at timestamptz DEFAULT now(),
    max_attempts integer DEFAULT 25,
    priority integer DEFAULT 0,
    timeout interval DEFAULT NULL
) RETURNS app_jobs.jobs
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_job app_jobs.jobs;
BEGIN
    PERFORM app_jobs.check_job_spec(identifier, queue_name, job_key, max_attempts);
    IF timeout <= interval '0' THEN
        RAISE EXCEPTION 'timeout must be positive, got %', timeout
            USING ERRCODE = 'PJ017';
    END IF;

    IF job_key IS NULL THEN
        INSERT INTO app_jobs.jobs (
            database_id, task_identifier, payload, queue_name, run_at,
            max_attempts, priority, timeout
        ) VALUES (
            db_id, identifier, coalesce(payload, '{}'::json), queue_name,
            coalesce(run_at, now()), coalesce(max_attempts, 25),
            coalesce(priority, 0), add_job.timeout
        ) RETURNING * INTO v_job;
        RETURN v_job;
    END IF;

    -- A waiting job with this key is replaced; a running one keeps running
    -- without its key (and without retries) while a new job takes the key.
    -- The loop covers the races where another session moves the key between
    -- our statements: every pass either returns or strips a running job.
    LOOP
        INSERT INTO app_jobs.jobs AS j (
            database_id, task_identifier, payload, queue_name, run_at,
            max_attempts, priority, key, timeout
        ) VALUES (
            db_id, identifier, coalesce(payload, '{}'::json), queue_name,
            coalesce(run_at, now()), coalesce(max_attempts, 25),
            coalesce(priority, 0), job_key, add_job.timeout
        )
        ON CONFLICT (key) DO UPDATE SET
            database_id = excluded.database_id,
            task_identifier = excluded.task_identifier,
            payload = excluded.payload,
            queue_name = excluded.queue_name,
            run_at = excluded.run_at,
            max_attempts = excluded.max_attempts,
            priority = excluded.priority,
            timeout = excluded.timeout,
            attempts = 0,
            last_error = NULL,
            progress = NULL,
            stage = NULL
        WHERE j.locked_at IS NULL
        RETURNING * INTO v_job;

        IF FOUND THEN
            RETURN v_job;
        END IF;

        UPDATE app_jobs.jobs AS j
        SET key = NULL, attempts = j.max_attempts
        WHERE j.key = job_key AND j.locked_at IS NOT NULL;
    END LOOP;
END;
$$;

COMMENT ON FUNCTION app_jobs.add_job IS
'Enqueue a job; with job_key, replace the waiting job that has that key';
