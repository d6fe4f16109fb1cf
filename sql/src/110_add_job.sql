-- Enqueue a job; with job_key, job_key_mode says what happens to a job holding the key:
-- replace (default) updates a waiting one, preserve_run_at does so but keeps its run_at,
-- unsafe_dedupe leaves it untouched and returns it. depends_on: ids of jobs that must
-- complete first (a failed or cancelled one cancels this job).
CREATE FUNCTION app_jobs.add_job(
    db_id uuid DEFAULT nullif(
        current_setting('jwt.claims.database_id', TRUE), ''
    )::uuid,
    identifier text DEFAULT NULL,
    payload json DEFAULT '{}'::json,
    job_key text DEFAULT NULL,
    queue_name text DEFAULT NULL,
    run_at timestamptz DEFAULT now(),
    max_attempts integer DEFAULT NULL,
    priority integer DEFAULT 0,
    timeout interval DEFAULT NULL,
    job_key_mode text DEFAULT 'replace',
    origin text DEFAULT NULL,
    depends_on bigint[] DEFAULT NULL
) RETURNS app_jobs.jobs
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
DECLARE
    v_job app_jobs.jobs;
    v_mode text := coalesce(job_key_mode, 'replace');
    v_task app_jobs.task_settings;
    v_max_attempts integer;
    v_timeout interval;
    v_deps bigint[];
    v_pending bigint[];
    v_failed bigint;
    v_failed_status text;
    v_missing bigint;
    v_own bigint[];
BEGIN
    PERFORM app_jobs._check_tenant(db_id);
    IF app_jobs._enqueue_ignored(identifier) THEN
        RETURN NULL;
    END IF;
    IF v_mode NOT IN ('replace', 'preserve_run_at', 'unsafe_dedupe') THEN
        RAISE EXCEPTION 'job_key_mode must be replace, preserve_run_at or unsafe_dedupe, got %',
            v_mode
            USING ERRCODE = 'PJ021';
    END IF;
    -- The task's defaults count: a default max_attempts or timeout is held to the bounds.
    SELECT * INTO v_task FROM app_jobs.task_settings AS ts
    WHERE ts.task_identifier = add_job.identifier;
    v_max_attempts := coalesce(max_attempts, v_task.max_attempts, 25);
    v_timeout := coalesce(timeout, v_task.timeout);
    PERFORM app_jobs._check_job(
        identifier, queue_name, job_key, v_max_attempts, payload, run_at, v_timeout,
        add_job.origin
    );

    IF cardinality(depends_on) > 0 THEN
        IF job_key IS NOT NULL THEN
            RAISE EXCEPTION 'depends_on cannot be combined with job_key'
                USING ERRCODE = 'PJ023';
        END IF;
        v_deps := ARRAY(SELECT DISTINCT d FROM unnest(depends_on) AS d WHERE d IS NOT NULL);
        -- Hold the dependencies until commit: one finishing now waits for this job to
        -- exist, so it either counts here as finished or finds this job to unblock. A job
        -- depends only on jobs of its own tenant, and only those rows are locked (the
        -- condition is part of the locking statement): another tenant's running job is
        -- never held up.
        v_own := ARRAY(
            SELECT j.id FROM app_jobs.jobs AS j
            WHERE j.id = ANY(v_deps) AND j.database_id IS NOT DISTINCT FROM add_job.db_id
            ORDER BY j.id
            FOR SHARE
        );
        SELECT d INTO v_missing FROM unnest(v_deps) AS d
        WHERE NOT d = ANY(v_own)
            AND NOT EXISTS (
                SELECT 1 FROM app_jobs.job_history AS h
                WHERE h.job_id = d AND h.database_id IS NOT DISTINCT FROM add_job.db_id
            )
        ORDER BY d
        LIMIT 1;
        IF v_missing IS NOT NULL THEN
            IF EXISTS (SELECT 1 FROM app_jobs.jobs AS j WHERE j.id = v_missing)
                OR EXISTS (SELECT 1 FROM app_jobs.job_history AS h WHERE h.job_id = v_missing) THEN
                RAISE EXCEPTION 'depends_on names job %, which belongs to another tenant',
                    v_missing
                    USING ERRCODE = 'PJ030',
                    HINT = 'A job may depend only on jobs of its own tenant (db_id).';
            END IF;
            RAISE EXCEPTION 'depends_on names job %, which does not exist', v_missing
                USING ERRCODE = 'PJ023',
                HINT = 'A dependency must be a live job or one kept in job_history.';
        END IF;
        v_pending := ARRAY(
            SELECT j.id FROM app_jobs.jobs AS j
            WHERE j.id = ANY(v_own) AND (j.locked_at IS NOT NULL OR j.attempts < j.max_attempts)
        );
        -- A dependency that already stopped without completing: failed for good (still
        -- in jobs), or failed / cancelled according to its latest history record.
        SELECT f.id, f.status INTO v_failed, v_failed_status
        FROM (
            SELECT
                d AS id,
                CASE
                    WHEN d = ANY(v_own) THEN 'failed'
                    ELSE (
                        SELECT h.status FROM app_jobs.job_history AS h
                        WHERE h.job_id = d ORDER BY h.finished_at DESC, h.id DESC LIMIT 1
                    )
                END AS status
            FROM unnest(v_deps) AS d
            WHERE NOT d = ANY(v_pending)
        ) AS f
        WHERE f.status <> 'completed'
        ORDER BY f.id
        LIMIT 1;

        INSERT INTO app_jobs.jobs AS j (
            database_id, task_identifier, payload, queue_name, run_at,
            max_attempts, priority, timeout, origin, blocked_by
        ) VALUES (
            db_id, identifier, coalesce(payload, '{}'::json), queue_name,
            coalesce(run_at, now()), v_max_attempts, coalesce(priority, 0), v_timeout,
            add_job.origin, cardinality(v_pending)
        ) RETURNING * INTO v_job;
        INSERT INTO app_jobs.job_dependencies (job_id, depends_on)
        SELECT v_job.id, d FROM unnest(v_pending) AS d;
        IF v_failed IS NOT NULL THEN
            PERFORM app_jobs._cancel_dependents(ARRAY[v_job.id], v_failed, v_failed_status);
            v_job.last_error := format('dependency %s %s', v_failed, v_failed_status);
        END IF;
        RETURN v_job;
    END IF;

    IF job_key IS NULL THEN
        INSERT INTO app_jobs.jobs (
            database_id, task_identifier, payload, queue_name, run_at,
            max_attempts, priority, timeout, origin
        ) VALUES (
            db_id, identifier, coalesce(payload, '{}'::json), queue_name,
            coalesce(run_at, now()), v_max_attempts, coalesce(priority, 0), v_timeout,
            add_job.origin
        ) RETURNING * INTO v_job;
        RETURN v_job;
    END IF;

    -- Keys are one namespace, and a key belongs to the tenant of the job holding it: a
    -- job for another db_id may not take it over, whoever calls (PJ030). The tenant
    -- condition is part of each statement that reads or changes the job holding the
    -- key, so no interleaving lets one act on another tenant's job: when a statement
    -- finds nothing it may act on, the key is checked for another tenant's job (PJ030),
    -- else the loop tries again (the key moved meanwhile).
    LOOP
        IF v_mode = 'unsafe_dedupe' THEN
            -- Whatever job of ours holds the key (waiting or running) is the answer.
            INSERT INTO app_jobs.jobs AS j (
                database_id, task_identifier, payload, queue_name, run_at,
                max_attempts, priority, key, timeout, origin
            ) VALUES (
                db_id, identifier, coalesce(payload, '{}'::json), queue_name,
                coalesce(run_at, now()), v_max_attempts, coalesce(priority, 0), job_key,
                v_timeout, add_job.origin
            )
            ON CONFLICT (key) WHERE key IS NOT NULL DO NOTHING
            RETURNING * INTO v_job;
            IF FOUND THEN
                RETURN v_job;
            END IF;
            SELECT * INTO v_job FROM app_jobs.jobs AS j
            WHERE j.key = job_key AND j.database_id IS NOT DISTINCT FROM add_job.db_id;
            IF FOUND THEN
                RETURN v_job;
            END IF;
        ELSE
            -- A waiting job with this key is replaced; a running one keeps running
            -- without its key (and without retries) while a new job takes the key.
            INSERT INTO app_jobs.jobs AS j (
                database_id, task_identifier, payload, queue_name, run_at,
                max_attempts, priority, key, timeout, origin
            ) VALUES (
                db_id, identifier, coalesce(payload, '{}'::json), queue_name,
                coalesce(run_at, now()), v_max_attempts, coalesce(priority, 0), job_key,
                v_timeout, add_job.origin
            )
            ON CONFLICT (key) WHERE key IS NOT NULL DO UPDATE SET
                database_id = excluded.database_id,
                task_identifier = excluded.task_identifier,
                payload = excluded.payload,
                queue_name = excluded.queue_name,
                run_at = CASE
                    WHEN v_mode = 'preserve_run_at' THEN j.run_at ELSE excluded.run_at
                END,
                max_attempts = excluded.max_attempts,
                priority = excluded.priority,
                timeout = excluded.timeout,
                origin = excluded.origin,
                attempts = 0,
                last_error = NULL,
                progress = NULL,
                stage = NULL
            WHERE j.locked_at IS NULL AND j.database_id IS NOT DISTINCT FROM add_job.db_id
            RETURNING * INTO v_job;
            IF FOUND THEN
                RETURN v_job;
            END IF;
            -- Its attempts stay as they are (the worker's claim is fenced by them); no
            -- attempt is left after this one.
            UPDATE app_jobs.jobs AS j
            SET key = NULL, max_attempts = j.attempts
            WHERE j.key = job_key AND j.locked_at IS NOT NULL
                AND j.database_id IS NOT DISTINCT FROM add_job.db_id;
            CONTINUE WHEN FOUND;
        END IF;
        IF EXISTS (
            SELECT 1 FROM app_jobs.jobs AS j
            WHERE j.key = job_key AND j.database_id IS DISTINCT FROM add_job.db_id
        ) THEN
            RAISE EXCEPTION 'job key % belongs to another tenant''s job', job_key
                USING ERRCODE = 'PJ030';
        END IF;
    END LOOP;
END;
$$;

COMMENT ON FUNCTION app_jobs.add_job IS
'Enqueue a job; with job_key, replace (or keep, per job_key_mode) the job holding the key';
