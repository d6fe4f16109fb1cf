-- pgjobs 0.2.1 -> 0.3.0: crash-proof execution. Workers register and heartbeat;
-- reap_dead_workers rescues the jobs of silent ones; claims are fenced by (job, worker,
-- attempt); finish_jobs takes jsonb outcomes (results, error data, cancellation);
-- job_history with retention; progress; timeouts; cancel_job; the job_status view.

ALTER TABLE app_jobs.jobs
ADD COLUMN progress integer,
ADD COLUMN stage text,
ADD COLUMN cancel_requested_at timestamptz,
ADD COLUMN timeout interval,
ADD CONSTRAINT jobs_progress_check CHECK (progress BETWEEN 0 AND 100),
ADD CONSTRAINT jobs_timeout_check CHECK (timeout > interval '0');

COMMENT ON COLUMN app_jobs.jobs.progress IS 'Percent done (0-100) reported by the running handler';
COMMENT ON COLUMN app_jobs.jobs.stage IS 'What the running handler says it is doing';
COMMENT ON COLUMN app_jobs.jobs.cancel_requested_at IS
'Set by cancel_job on a running job: its worker cancels the handler; never retried';
COMMENT ON COLUMN app_jobs.jobs.timeout IS
'Longest an attempt may run before the worker cancels it (NULL: the task default)';

-- sql/src/040_workers_table.sql
-- Live worker processes: a worker silent for longer than dead_for is presumed dead.
CREATE TABLE app_jobs.workers (
    id text PRIMARY KEY,
    host text,
    pid integer,
    tasks text[],
    heartbeat_interval interval NOT NULL DEFAULT interval '5 seconds',
    started_at timestamptz NOT NULL DEFAULT now(),
    last_heartbeat timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT workers_id_check CHECK (length(id) BETWEEN 1 AND 256),
    CONSTRAINT workers_heartbeat_interval_check CHECK (
        heartbeat_interval > interval '0'
    )
);

COMMENT ON TABLE app_jobs.workers IS
'Registered workers and their heartbeats; reap_dead_workers frees the silent ones';

-- Silent workers first, for the reaper.
CREATE INDEX workers_last_heartbeat_idx ON app_jobs.workers (last_heartbeat);

-- sql/src/050_job_history_table.sql
-- Finished jobs (completed, permanently failed, cancelled), kept for history_retention.
CREATE TABLE app_jobs.job_history (
    id bigserial PRIMARY KEY,
    job_id bigint NOT NULL,
    database_id uuid,
    task_identifier text NOT NULL,
    queue_name text,
    key text,
    payload json NOT NULL,
    priority integer NOT NULL,
    status text NOT NULL,
    attempts integer NOT NULL,
    max_attempts integer NOT NULL,
    result jsonb,
    last_error text,
    error_data jsonb,
    worker_id text,
    created_at timestamptz NOT NULL,
    started_at timestamptz,
    finished_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT job_history_status_check CHECK (
        status IN ('completed', 'failed', 'cancelled')
    )
);

COMMENT ON TABLE app_jobs.job_history IS
'One row per job that reached a final state; purged by purge_job_history';
COMMENT ON COLUMN app_jobs.job_history.result IS 'What the handler returned (completed jobs)';
COMMENT ON COLUMN app_jobs.job_history.error_data IS
'Structured detail of the last error (exception type, traceback)';

-- Oldest first, for purging.
CREATE INDEX job_history_finished_at_idx ON app_jobs.job_history (finished_at);

-- A job's records, for lookups by job id.
CREATE INDEX job_history_job_id_idx ON app_jobs.job_history (job_id);

-- sql/src/060_settings_table.sql
-- Instance-wide settings; a missing row means the default (see app_jobs.setting).
CREATE TABLE app_jobs.settings (
    name text PRIMARY KEY,
    value text NOT NULL,
    CONSTRAINT settings_name_check CHECK (name IN ('history', 'history_retention'))
);

COMMENT ON TABLE app_jobs.settings IS
'history (on/off, default on), history_retention (interval, default 7 days)';

-- sql/src/102_settings.sql
-- The value of a setting, or its default when it was never set.
CREATE FUNCTION app_jobs.setting(p_name text) RETURNS text
LANGUAGE sql STABLE
AS $$
    SELECT coalesce(
        (SELECT s.value FROM app_jobs.settings AS s WHERE s.name = p_name),
        CASE p_name WHEN 'history' THEN 'on' WHEN 'history_retention' THEN '7 days' END
    );
$$;

-- Change a setting, refusing unknown names and values that do not parse (PJ014).
CREATE FUNCTION app_jobs.set_setting(name text, value text) RETURNS text
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_value text := value;
BEGIN
    IF name = 'history' AND lower(v_value) IN ('on', 'off') THEN
        v_value := lower(v_value);
    ELSIF name = 'history_retention' AND v_value IS NOT NULL THEN
        BEGIN
            IF v_value::interval < interval '0' THEN
                RAISE EXCEPTION USING ERRCODE = 'invalid_datetime_format';
            END IF;
        EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow
            OR interval_field_overflow THEN
            RAISE EXCEPTION 'history_retention must be an interval of zero or more, got "%"',
                v_value
                USING ERRCODE = 'PJ014';
        END;
    ELSE
        RAISE EXCEPTION 'unknown setting % or bad value "%"', coalesce(name, 'NULL'), v_value
            USING HINT = 'history takes on or off; history_retention an interval',
            ERRCODE = 'PJ014';
    END IF;
    INSERT INTO app_jobs.settings AS s (name, value)
    VALUES (set_setting.name, v_value)
    ON CONFLICT ON CONSTRAINT settings_pkey DO UPDATE SET value = excluded.value;
    RETURN v_value;
END;
$$;

COMMENT ON FUNCTION app_jobs.set_setting IS
'Set history (on/off) or history_retention (interval); PJ014 on anything else';

-- sql/src/103_lock_is_free.sql
-- True when nobody live holds a lock: never taken, or older than p_expiry and held by
-- a session that never registered (registered workers are judged by their heartbeat).
CREATE FUNCTION app_jobs.lock_is_free(
    p_locked_at timestamptz,
    p_locked_by text,
    p_expiry interval
) RETURNS boolean
LANGUAGE sql STABLE
AS $$
    SELECT p_locked_at IS NULL
        OR p_locked_at < now() - p_expiry
        AND NOT EXISTS (SELECT 1 FROM app_jobs.workers AS w WHERE w.id = p_locked_by);
$$;

DROP FUNCTION app_jobs.add_job(uuid, text, json, text, text, timestamptz, integer, integer);

-- sql/src/110_add_job.sql
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

-- sql/src/120_get_jobs.sql
-- Claim up to batch_size available jobs for a worker, at most one per named queue.
CREATE OR REPLACE FUNCTION app_jobs.get_jobs(
    worker_id text,
    task_identifiers text[] DEFAULT NULL,
    job_expiry interval DEFAULT '4 hours',
    batch_size integer DEFAULT 1
) RETURNS SETOF app_jobs.jobs
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_now timestamptz := now();
    v_expiry interval := coalesce(job_expiry, interval '4 hours');
    v_expired timestamptz := now() - v_expiry;
BEGIN
    PERFORM app_jobs.check_worker_id(worker_id);
    IF batch_size IS NULL OR batch_size NOT BETWEEN 1 AND 10000 THEN
        RAISE EXCEPTION 'batch_size must be 1 to 10000, got %',
            coalesce(batch_size::text, 'NULL')
            USING ERRCODE = 'PJ006';
    END IF;

    PERFORM app_jobs.end_cancelled_claims(ARRAY(
        SELECT e.id FROM app_jobs.jobs AS e
        WHERE e.locked_at < v_expired AND e.cancel_requested_at IS NOT NULL
            AND app_jobs.lock_is_free(e.locked_at, e.locked_by, v_expiry)
    ));
    -- Locks older than job_expiry whose holder never registered (no heartbeat to go
    -- by) belong to workers presumed dead: free them. Registered workers' jobs are
    -- freed by reap_dead_workers when their heartbeat stops.
    UPDATE app_jobs.jobs AS j
    SET locked_at = NULL, locked_by = NULL
    WHERE j.id IN (
        SELECT e.id FROM app_jobs.jobs AS e
        WHERE e.locked_at < v_expired AND e.attempts < e.max_attempts
            AND app_jobs.lock_is_free(e.locked_at, e.locked_by, v_expiry)
        FOR UPDATE SKIP LOCKED
    );

    -- Lock order, shared by every function here: job rows first, then queue rows in
    -- name order. Locking a queue row before its jobs could deadlock with add_job,
    -- which holds a job row when its trigger counts the job into the queue.
    RETURN QUERY
    WITH candidates AS (
        SELECT j.id, j.queue_name, j.priority, j.run_at
        FROM app_jobs.jobs AS j
        WHERE j.is_available
            AND j.run_at <= v_now
            AND (task_identifiers IS NULL OR j.task_identifier = ANY(task_identifiers))
            AND (
                j.queue_name IS NULL
                OR EXISTS (
                    SELECT 1 FROM app_jobs.job_queues AS q
                    WHERE q.queue_name = j.queue_name
                        AND app_jobs.lock_is_free(q.locked_at, q.locked_by, v_expiry)
                )
                -- Only the head of a named queue: never overtake an earlier job
                -- whose row another session happens to hold for a moment.
                AND NOT EXISTS (
                    SELECT 1 FROM app_jobs.jobs AS e
                    WHERE e.queue_name = j.queue_name
                        AND e.is_available
                        AND e.run_at <= v_now
                        AND (e.priority, e.run_at, e.id) < (j.priority, j.run_at, j.id)
                )
            )
        ORDER BY j.priority, j.run_at, j.id
        LIMIT batch_size
        FOR UPDATE OF j SKIP LOCKED
    ),

    first_per_queue AS (
        SELECT DISTINCT ON (c.queue_name) c.id, c.queue_name
        FROM candidates AS c
        WHERE c.queue_name IS NOT NULL
        ORDER BY c.queue_name, c.priority, c.run_at, c.id
    ),

    -- The queues still free once locked (the lock re-reads the newest row version).
    free_queues AS (
        SELECT q.queue_name
        FROM app_jobs.job_queues AS q
        WHERE q.queue_name IN (SELECT f.queue_name FROM first_per_queue AS f)
            AND app_jobs.lock_is_free(q.locked_at, q.locked_by, v_expiry)
        ORDER BY q.queue_name
        FOR UPDATE SKIP LOCKED
    ),

    chosen AS (
        SELECT c.id, c.queue_name FROM candidates AS c WHERE c.queue_name IS NULL
        UNION ALL
        SELECT f.id, f.queue_name
        FROM first_per_queue AS f
        INNER JOIN free_queues AS fq ON f.queue_name = fq.queue_name
    ),

    locked_queues AS (
        UPDATE app_jobs.job_queues AS q
        SET locked_by = worker_id, locked_at = v_now
        FROM free_queues AS fq
        WHERE q.queue_name = fq.queue_name
        RETURNING q.queue_name
    ),

    claimed AS (
        UPDATE app_jobs.jobs AS j
        SET
            attempts = j.attempts + 1, locked_by = worker_id, locked_at = v_now,
            progress = NULL, stage = NULL
        FROM chosen AS c
        WHERE j.id = c.id
        RETURNING j.*
    )

    -- locked_queues runs to completion although nothing reads it.
    SELECT cl.*
    FROM claimed AS cl
    ORDER BY cl.priority, cl.run_at, cl.id;
END;
$$;

COMMENT ON FUNCTION app_jobs.get_jobs IS
'Claim up to batch_size jobs (one per named queue) for worker_id';

-- sql/src/125_record_history.sql
-- Keep a job that reached a final state in job_history, unless history is off.
CREATE FUNCTION app_jobs.record_history(
    p_job app_jobs.jobs,
    p_status text,
    p_worker_id text,
    p_started_at timestamptz,
    p_result jsonb DEFAULT NULL,
    p_error_data jsonb DEFAULT NULL
) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    IF app_jobs.setting('history') = 'off' THEN
        RETURN;
    END IF;
    INSERT INTO app_jobs.job_history (
        job_id, database_id, task_identifier, queue_name, key, payload, priority,
        status, attempts, max_attempts, result, last_error, error_data, worker_id,
        created_at, started_at
    ) VALUES (
        p_job.id, p_job.database_id, p_job.task_identifier, p_job.queue_name, p_job.key,
        p_job.payload, p_job.priority, p_status, p_job.attempts, p_job.max_attempts,
        p_result, p_job.last_error, p_error_data, p_worker_id,
        p_job.created_at, p_started_at
    );
END;
$$;

-- sql/src/130_finish_claim.sql
-- End one claim, fenced by (job id, worker, attempt): completed or cancelled jobs leave
-- the table, failed ones retry with backoff (from p_failed_at) until max_attempts. A
-- worker that no longer holds the claim changes nothing and gets NULL.
CREATE FUNCTION app_jobs.finish_claim(
    p_worker_id text,
    p_job_id bigint,
    p_attempt integer,
    p_outcome text,
    p_error text DEFAULT NULL,
    p_error_data jsonb DEFAULT NULL,
    p_result jsonb DEFAULT NULL,
    p_failed_at timestamptz DEFAULT now()
) RETURNS app_jobs.jobs
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_job app_jobs.jobs;
    v_started_at timestamptz;
BEGIN
    SELECT * INTO v_job
    FROM app_jobs.jobs AS j
    WHERE j.id = p_job_id
        AND j.locked_by = p_worker_id
        AND (p_attempt IS NULL OR j.attempts = p_attempt)
    FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    v_started_at := v_job.locked_at;

    IF p_outcome = 'completed' THEN
        DELETE FROM app_jobs.jobs AS j WHERE j.id = p_job_id RETURNING * INTO v_job;
        PERFORM app_jobs.record_history(
            v_job, 'completed', p_worker_id, v_started_at, p_result
        );
    ELSIF p_outcome = 'cancelled' OR v_job.cancel_requested_at IS NOT NULL THEN
        -- A cancelled job is never retried, whatever its handler did.
        DELETE FROM app_jobs.jobs AS j WHERE j.id = p_job_id RETURNING * INTO v_job;
        v_job.last_error := coalesce(p_error, 'cancelled');
        PERFORM app_jobs.record_history(
            v_job, 'cancelled', p_worker_id, v_started_at, NULL, p_error_data
        );
    ELSE
        UPDATE app_jobs.jobs AS j
        SET
            last_error = p_error,
            run_at = greatest(p_failed_at, j.run_at)
            + exp(least(j.attempts, 10)) * interval '1 second',
            locked_by = NULL,
            locked_at = NULL
        WHERE j.id = p_job_id
        RETURNING * INTO v_job;
        IF v_job.attempts >= v_job.max_attempts THEN
            PERFORM app_jobs.record_history(
                v_job, 'failed', p_worker_id, v_started_at, NULL, p_error_data
            );
        END IF;
    END IF;

    IF v_job.queue_name IS NOT NULL THEN
        UPDATE app_jobs.job_queues AS q
        SET locked_by = NULL, locked_at = NULL
        WHERE q.queue_name = v_job.queue_name AND q.locked_by = p_worker_id;
    END IF;
    RETURN v_job;
END;
$$;

-- What a finished claim's row says happened: completed, retrying, failed or cancelled.
CREATE FUNCTION app_jobs.claim_status(p_job app_jobs.jobs, p_outcome text) RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
    SELECT CASE
        WHEN p_job.id IS NULL THEN 'fenced'
        WHEN p_outcome = 'completed' THEN 'completed'
        WHEN p_outcome = 'cancelled' OR p_job.cancel_requested_at IS NOT NULL THEN 'cancelled'
        WHEN p_job.attempts >= p_job.max_attempts THEN 'failed'
        ELSE 'retrying'
    END;
$$;

-- sql/src/131_complete_job.sql
-- Finish a job successfully: only the worker holding its lock may do so.
CREATE OR REPLACE FUNCTION app_jobs.complete_job(
    worker_id text,
    job_id bigint
) RETURNS app_jobs.jobs
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    PERFORM app_jobs.check_worker_id(worker_id);
    RETURN app_jobs.finish_claim(worker_id, job_id, NULL, 'completed');
END;
$$;

COMMENT ON FUNCTION app_jobs.complete_job IS
'Remove a finished job held by worker_id and release its queue';

-- sql/src/132_fail_job.sql
-- Record a failed attempt: unlock the job and push run_at back exponentially.
CREATE OR REPLACE FUNCTION app_jobs.fail_job(
    worker_id text,
    job_id bigint,
    error_message text DEFAULT NULL
) RETURNS app_jobs.jobs
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    PERFORM app_jobs.check_worker_id(worker_id);
    RETURN app_jobs.finish_claim(worker_id, job_id, NULL, 'failed', error_message);
END;
$$;

COMMENT ON FUNCTION app_jobs.fail_job IS
'Record a failed attempt; retried with backoff until max_attempts';

DROP FUNCTION app_jobs.finish_jobs(text, bigint[], text[]);

-- sql/src/133_finish_jobs.sql
-- Record a worker's batch of outcomes in one transaction. Each element of outcomes is
-- {"id", "attempt", "outcome": completed|failed|cancelled (default: failed when there is
-- an error), "error", "error_data", "result"}; a claim the worker no longer holds (job
-- id, worker, attempt) is 'fenced'.
CREATE FUNCTION app_jobs.finish_jobs(
    worker_id text,
    outcomes jsonb
) RETURNS TABLE (job_id bigint, attempt integer, status text)
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_bad jsonb;
    v_item record;
    v_job app_jobs.jobs;
BEGIN
    PERFORM app_jobs.check_worker_id(worker_id);
    IF jsonb_typeof(outcomes) IS DISTINCT FROM 'array' THEN
        RAISE EXCEPTION 'outcomes must be a JSON array, got %',
            coalesce(jsonb_typeof(outcomes), 'NULL')
            USING ERRCODE = 'PJ016';
    END IF;
    SELECT e INTO v_bad
    FROM jsonb_array_elements(outcomes) AS e
    WHERE jsonb_typeof(e) IS DISTINCT FROM 'object'
        OR coalesce(e ->> 'id', '') !~ '^\d{1,18}$'
        OR coalesce(e ->> 'attempt', '0') !~ '^\d{1,9}$'
        OR coalesce(e ->> 'outcome', 'completed') NOT IN ('completed', 'failed', 'cancelled')
        OR (e ? 'error' AND jsonb_typeof(e -> 'error') NOT IN ('string', 'null'))
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'bad outcome %', v_bad
            USING ERRCODE = 'PJ016',
            HINT = 'each outcome is {"id": number, "attempt": number, "outcome": '
            || '"completed"|"failed"|"cancelled", "error": text, "error_data": json, '
            || '"result": json}';
    END IF;

    -- Lock order shared with get_jobs and add_job: every job row first, then queue
    -- rows in name order, so a batch cannot deadlock with either.
    PERFORM 1
    FROM app_jobs.jobs AS j
    WHERE j.id IN (SELECT (e ->> 'id')::bigint FROM jsonb_array_elements(outcomes) AS e)
        AND j.locked_by = finish_jobs.worker_id
    ORDER BY j.id
    FOR UPDATE;

    FOR v_item IN
        SELECT
            (o.e ->> 'id')::bigint AS id,
            (o.e ->> 'attempt')::integer AS attempt,
            coalesce(
                o.e ->> 'outcome',
                CASE WHEN o.e ->> 'error' IS NULL THEN 'completed' ELSE 'failed' END
            ) AS outcome,
            o.e ->> 'error' AS error,
            nullif(o.e -> 'error_data', 'null'::jsonb) AS error_data,
            nullif(o.e -> 'result', 'null'::jsonb) AS result
        FROM jsonb_array_elements(outcomes) WITH ORDINALITY AS o (e, n)
        LEFT JOIN app_jobs.jobs AS j ON (o.e ->> 'id')::bigint = j.id
        ORDER BY j.queue_name NULLS FIRST, o.n
    LOOP
        v_job := app_jobs.finish_claim(
            worker_id, v_item.id, v_item.attempt, v_item.outcome,
            v_item.error, v_item.error_data, v_item.result
        );
        job_id := v_item.id;
        attempt := v_item.attempt;
        status := app_jobs.claim_status(v_job, v_item.outcome);
        RETURN NEXT;
    END LOOP;
END;
$$;

COMMENT ON FUNCTION app_jobs.finish_jobs IS
'Worker batch: complete, fail or cancel each claim the worker still holds; others are fenced';

-- sql/src/134_set_progress.sql
-- Store a running job's progress (0-100) and stage and announce it on jobs:progress;
-- false when the worker no longer holds the claim.
CREATE FUNCTION app_jobs.set_progress(
    worker_id text,
    job_id bigint,
    progress integer,
    stage text DEFAULT NULL,
    attempt integer DEFAULT NULL
) RETURNS boolean
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    PERFORM app_jobs.check_worker_id(worker_id);
    IF progress IS NULL OR progress NOT BETWEEN 0 AND 100 THEN
        RAISE EXCEPTION 'progress must be 0 to 100, got %', coalesce(progress::text, 'NULL')
            USING ERRCODE = 'PJ015';
    END IF;
    UPDATE app_jobs.jobs AS j
    SET progress = set_progress.progress, stage = set_progress.stage
    WHERE j.id = set_progress.job_id
        AND j.locked_by = set_progress.worker_id
        AND (set_progress.attempt IS NULL OR j.attempts = set_progress.attempt);
    IF NOT FOUND THEN
        RETURN FALSE;
    END IF;
    PERFORM pg_catalog.pg_notify(
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

-- sql/src/135_cancel_job.sql
-- Cancel a job: a waiting one ends now; a running one gets a cancel request its worker
-- acts on. Returns the job's status afterwards, NULL when there is no such job.
CREATE FUNCTION app_jobs.cancel_job(job_id bigint) RETURNS text
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_job app_jobs.jobs;
BEGIN
    SELECT * INTO v_job FROM app_jobs.jobs AS j WHERE j.id = cancel_job.job_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF v_job.locked_at IS NOT NULL THEN
        UPDATE app_jobs.jobs AS j
        SET cancel_requested_at = coalesce(j.cancel_requested_at, now())
        WHERE j.id = v_job.id;
        PERFORM pg_catalog.pg_notify('jobs:cancel', v_job.id::text);
        RETURN 'cancelling';
    END IF;
    IF v_job.attempts >= v_job.max_attempts THEN
        RETURN 'failed';
    END IF;
    DELETE FROM app_jobs.jobs AS j WHERE j.id = v_job.id RETURNING * INTO v_job;
    v_job.last_error := 'cancelled';
    PERFORM app_jobs.record_history(v_job, 'cancelled', NULL, NULL);
    RETURN 'cancelled';
END;
$$;

COMMENT ON FUNCTION app_jobs.cancel_job IS
'Cancel a waiting job now, or ask the worker running it to stop; never retried';

-- sql/src/136_end_cancelled_claims.sql
-- Claims being handed back whose job was asked to cancel end cancelled instead of
-- returning to the queue (a cancelled job never runs again). Returns how many ended.
CREATE FUNCTION app_jobs.end_cancelled_claims(p_job_ids bigint[]) RETURNS integer
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_job app_jobs.jobs;
    v_count integer := 0;
BEGIN
    IF cardinality(p_job_ids) IS NULL OR cardinality(p_job_ids) = 0 THEN
        RETURN 0;
    END IF;
    -- Job rows first, then queues in name order (as everywhere).
    PERFORM 1 FROM app_jobs.jobs AS j
    WHERE j.id = ANY(p_job_ids)
    ORDER BY j.id
    FOR UPDATE;
    FOR v_job IN
        SELECT * FROM app_jobs.jobs AS j
        WHERE j.id = ANY(p_job_ids)
            AND j.locked_by IS NOT NULL
            AND j.cancel_requested_at IS NOT NULL
        ORDER BY j.queue_name NULLS FIRST, j.id
    LOOP
        PERFORM app_jobs.finish_claim(v_job.locked_by, v_job.id, NULL, 'cancelled');
        v_count := v_count + 1;
    END LOOP;
    RETURN v_count;
END;
$$;

-- sql/src/140_complete_jobs.sql
-- Remove jobs by id as done, skipping jobs a live worker holds.
CREATE OR REPLACE FUNCTION app_jobs.complete_jobs(job_ids bigint[]) RETURNS SETOF app_jobs.jobs
LANGUAGE sql VOLATILE
AS $$
    DELETE FROM app_jobs.jobs AS j
    WHERE j.id = ANY(job_ids)
        AND app_jobs.lock_is_free(j.locked_at, j.locked_by, interval '4 hours')
    RETURNING *;
$$;

COMMENT ON FUNCTION app_jobs.complete_jobs IS
'Admin: delete jobs by id unless a worker holds them';

-- sql/src/141_permanently_fail_jobs.sql
-- Mark jobs by id as failed for good, skipping jobs a live worker holds.
CREATE OR REPLACE FUNCTION app_jobs.permanently_fail_jobs(
    job_ids bigint[],
    error_message text DEFAULT NULL
) RETURNS SETOF app_jobs.jobs
LANGUAGE sql VOLATILE
AS $$
    UPDATE app_jobs.jobs AS j
    SET
        last_error = coalesce(error_message, 'Manually marked as failed'),
        attempts = j.max_attempts
    WHERE j.id = ANY(job_ids)
        AND app_jobs.lock_is_free(j.locked_at, j.locked_by, interval '4 hours')
    RETURNING *;
$$;

COMMENT ON FUNCTION app_jobs.permanently_fail_jobs IS
'Admin: stop jobs from ever running again, keeping them for inspection';

-- sql/src/142_reschedule_jobs.sql
-- Change when and how jobs run, skipping jobs a live worker holds.
CREATE OR REPLACE FUNCTION app_jobs.reschedule_jobs(
    job_ids bigint[],
    run_at timestamptz DEFAULT NULL,
    priority integer DEFAULT NULL,
    attempts integer DEFAULT NULL,
    max_attempts integer DEFAULT NULL
) RETURNS SETOF app_jobs.jobs
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    IF reschedule_jobs.max_attempts IS NOT NULL THEN
        PERFORM app_jobs.check_job_spec('-', NULL, NULL, reschedule_jobs.max_attempts);
    END IF;
    RETURN QUERY
    UPDATE app_jobs.jobs AS j
    SET
        run_at = coalesce(reschedule_jobs.run_at, j.run_at),
        priority = coalesce(reschedule_jobs.priority, j.priority),
        attempts = coalesce(reschedule_jobs.attempts, j.attempts),
        max_attempts = coalesce(reschedule_jobs.max_attempts, j.max_attempts)
    WHERE j.id = ANY(job_ids)
        AND app_jobs.lock_is_free(j.locked_at, j.locked_by, interval '4 hours')
    RETURNING j.*;
END;
$$;

COMMENT ON FUNCTION app_jobs.reschedule_jobs IS
'Admin: set run_at, priority, attempts or max_attempts of jobs (NULL keeps)';

-- sql/src/143_remove_job.sql
-- Delete the job with a key, or strip the key from it if a worker holds it.
CREATE OR REPLACE FUNCTION app_jobs.remove_job(job_key text) RETURNS app_jobs.jobs
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_job app_jobs.jobs;
BEGIN
    DELETE FROM app_jobs.jobs AS j
    WHERE j.key = job_key
        AND app_jobs.lock_is_free(j.locked_at, j.locked_by, interval '4 hours')
    RETURNING * INTO v_job;
    IF FOUND THEN
        RETURN v_job;
    END IF;

    -- Running: let it finish, but never retry it and free its key.
    UPDATE app_jobs.jobs AS j
    SET key = NULL, attempts = j.max_attempts
    WHERE j.key = job_key
    RETURNING * INTO v_job;
    RETURN v_job;
END;
$$;

COMMENT ON FUNCTION app_jobs.remove_job IS
'Remove the job that has job_key; a running one is only stopped from retrying';

-- sql/src/144_release_jobs.sql
-- Hand back the jobs (all, or only job_ids) and queues a worker holds, refunding the attempt.
CREATE OR REPLACE FUNCTION app_jobs.release_jobs(
    worker_id text,
    job_ids bigint[] DEFAULT NULL
) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    PERFORM app_jobs.check_worker_id(worker_id);
    PERFORM app_jobs.end_cancelled_claims(ARRAY(
        SELECT j.id FROM app_jobs.jobs AS j
        WHERE j.locked_by = release_jobs.worker_id
            AND j.cancel_requested_at IS NOT NULL
            AND (release_jobs.job_ids IS NULL OR j.id = ANY(release_jobs.job_ids))
    ));

    WITH released AS (
        UPDATE app_jobs.jobs AS j
        SET
            locked_at = NULL,
            locked_by = NULL,
            attempts = greatest(j.attempts - 1, 0)
        WHERE j.locked_by = release_jobs.worker_id
            AND (release_jobs.job_ids IS NULL OR j.id = ANY(release_jobs.job_ids))
        RETURNING j.queue_name
    )

    UPDATE app_jobs.job_queues AS q
    SET locked_at = NULL, locked_by = NULL
    WHERE q.locked_by = release_jobs.worker_id
        AND (
            release_jobs.job_ids IS NULL
            OR q.queue_name IN (SELECT r.queue_name FROM released AS r)
        );
END;
$$;

COMMENT ON FUNCTION app_jobs.release_jobs IS
'Unlock a stopping worker''s jobs (all, or job_ids) and queues; the attempt does not count';

-- sql/src/145_force_unlock_workers.sql
-- Unlock the jobs and queues of workers known to be dead.
CREATE OR REPLACE FUNCTION app_jobs.force_unlock_workers(worker_ids text[]) RETURNS void
LANGUAGE sql VOLATILE
AS $$
    SELECT app_jobs.end_cancelled_claims(ARRAY(
        SELECT j.id FROM app_jobs.jobs AS j
        WHERE j.locked_by = ANY(worker_ids) AND j.cancel_requested_at IS NOT NULL
    ));

    UPDATE app_jobs.jobs AS j
    SET locked_at = NULL, locked_by = NULL
    WHERE j.locked_by = ANY(worker_ids);

    UPDATE app_jobs.job_queues AS q
    SET locked_at = NULL, locked_by = NULL
    WHERE q.locked_by = ANY(worker_ids);
$$;

COMMENT ON FUNCTION app_jobs.force_unlock_workers IS
'Admin: free everything the given (dead) workers hold, attempts unchanged';

-- sql/src/150_workers.sql
-- Register (or re-register) a worker process; it must then heartbeat every interval.
CREATE FUNCTION app_jobs.register_worker(
    worker_id text,
    host text DEFAULT NULL,
    pid integer DEFAULT NULL,
    tasks text[] DEFAULT NULL,
    heartbeat_interval interval DEFAULT '5 seconds'
) RETURNS app_jobs.workers
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_worker app_jobs.workers;
BEGIN
    PERFORM app_jobs.check_worker_id(worker_id);
    IF length(worker_id) > 256 THEN
        RAISE EXCEPTION 'worker_id must be at most 256 characters, got %', length(worker_id)
            USING ERRCODE = 'PJ005';
    END IF;
    IF heartbeat_interval IS NULL OR heartbeat_interval <= interval '0' THEN
        RAISE EXCEPTION 'heartbeat_interval must be positive, got %',
            coalesce(heartbeat_interval::text, 'NULL')
            USING ERRCODE = 'PJ018';
    END IF;
    INSERT INTO app_jobs.workers AS w (id, host, pid, tasks, heartbeat_interval)
    VALUES (worker_id, host, pid, tasks, heartbeat_interval)
    ON CONFLICT (id) DO UPDATE SET
        host = excluded.host,
        pid = excluded.pid,
        tasks = excluded.tasks,
        heartbeat_interval = excluded.heartbeat_interval,
        last_heartbeat = now()
    RETURNING * INTO v_worker;
    RETURN v_worker;
END;
$$;

COMMENT ON FUNCTION app_jobs.register_worker IS
'Register a worker process (id, host, pid, tasks) and the interval it heartbeats at';

-- A worker's sign of life; returns the claims it still holds and which must stop.
-- PJ019 when the worker is not registered (it was presumed dead and reaped).
CREATE FUNCTION app_jobs.worker_heartbeat(worker_id text)
RETURNS TABLE (job_id bigint, attempt integer, cancel_requested boolean)
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    PERFORM app_jobs.check_worker_id(worker_id);
    UPDATE app_jobs.workers AS w SET last_heartbeat = now()
    WHERE w.id = worker_heartbeat.worker_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'worker % is not registered (presumed dead and reaped?)', worker_id
            USING ERRCODE = 'PJ019';
    END IF;
    RETURN QUERY
    SELECT j.id, j.attempts, j.cancel_requested_at IS NOT NULL
    FROM app_jobs.jobs AS j
    WHERE j.locked_by = worker_heartbeat.worker_id
    ORDER BY j.id;
END;
$$;

COMMENT ON FUNCTION app_jobs.worker_heartbeat IS
'Heartbeat: returns the jobs the worker holds and whether each was asked to cancel';

-- A worker leaving cleanly: hand back what it holds and forget it.
CREATE FUNCTION app_jobs.unregister_worker(worker_id text) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    PERFORM app_jobs.release_jobs(worker_id);
    DELETE FROM app_jobs.workers AS w WHERE w.id = unregister_worker.worker_id;
END;
$$;

COMMENT ON FUNCTION app_jobs.unregister_worker IS
'Release everything a stopping worker holds and remove its registration';

-- Free the jobs of workers silent for dead_for: each running job counts a failed attempt
-- (backoff from the last heartbeat), a cancel-requested one ends cancelled. Safe to run
-- from every worker at once. PJ013 when dead_for is under 3 heartbeat intervals.
CREATE FUNCTION app_jobs.reap_dead_workers(dead_for interval DEFAULT '20 seconds')
RETURNS TABLE (worker_id text, job_id bigint, status text)
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_longest interval;
    v_worker app_jobs.workers;
    v_job app_jobs.jobs;
    v_done app_jobs.jobs;
    v_error text;
BEGIN
    SELECT max(w.heartbeat_interval) INTO v_longest FROM app_jobs.workers AS w;
    IF dead_for IS NULL OR dead_for < 3 * coalesce(v_longest, interval '0')
        OR dead_for <= interval '0' THEN
        RAISE EXCEPTION 'dead_for must be positive and at least 3 heartbeat intervals, got %',
            coalesce(dead_for::text, 'NULL')
            USING ERRCODE = 'PJ013',
            DETAIL = format(
                'The longest heartbeat interval of a registered worker is %s.',
                coalesce(v_longest::text, 'none')
            );
    END IF;

    FOR v_worker IN
        SELECT * FROM app_jobs.workers AS w
        WHERE w.last_heartbeat < now() - dead_for
        ORDER BY w.id
        FOR UPDATE SKIP LOCKED
    LOOP
        v_error := format(
            'worker %s stopped heartbeating at %s (presumed dead)',
            v_worker.id, v_worker.last_heartbeat
        );
        -- Job rows first, then queues in name order (as everywhere).
        PERFORM 1 FROM app_jobs.jobs AS j
        WHERE j.locked_by = v_worker.id
        ORDER BY j.id
        FOR UPDATE;
        FOR v_job IN
            SELECT * FROM app_jobs.jobs AS j
            WHERE j.locked_by = v_worker.id
            ORDER BY j.queue_name NULLS FIRST, j.id
        LOOP
            v_done := app_jobs.finish_claim(
                v_worker.id, v_job.id, NULL, 'failed', v_error,
                jsonb_build_object(
                    'reason', 'worker_dead', 'worker_id', v_worker.id,
                    'last_heartbeat', v_worker.last_heartbeat
                ),
                NULL, v_worker.last_heartbeat
            );
            worker_id := v_worker.id;
            job_id := v_job.id;
            status := app_jobs.claim_status(v_done, 'failed');
            RETURN NEXT;
        END LOOP;
        UPDATE app_jobs.job_queues AS q
        SET locked_by = NULL, locked_at = NULL
        WHERE q.locked_by = v_worker.id;
        DELETE FROM app_jobs.workers AS w WHERE w.id = v_worker.id;
    END LOOP;
END;
$$;

COMMENT ON FUNCTION app_jobs.reap_dead_workers IS
'Rescue the jobs of workers silent for dead_for (>= 3 heartbeat intervals)';

-- sql/src/160_job_history.sql
-- Drop history older than the history_retention setting; returns how many rows went.
CREATE FUNCTION app_jobs.purge_job_history() RETURNS integer
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_count integer;
BEGIN
    DELETE FROM app_jobs.job_history AS h
    WHERE h.finished_at < now() - app_jobs.setting('history_retention')::interval;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END;
$$;

COMMENT ON FUNCTION app_jobs.purge_job_history IS
'Delete job_history rows older than history_retention (workers call this periodically)';

-- sql/src/161_manage_jobs.sql
-- Jobs waiting to run (now or later), in claim order.
CREATE FUNCTION app_jobs.waiting_jobs(
    task_identifiers text[] DEFAULT NULL,
    max_rows integer DEFAULT 100
) RETURNS SETOF app_jobs.jobs
LANGUAGE sql STABLE
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
CREATE FUNCTION app_jobs.check_not_running(p_job app_jobs.jobs) RETURNS void
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
AS $$
DECLARE
    v_job app_jobs.jobs;
BEGIN
    SELECT * INTO v_job FROM app_jobs.jobs AS j WHERE j.id = retry_job.job_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    PERFORM app_jobs.check_not_running(v_job);
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
AS $$
DECLARE
    v_job app_jobs.jobs;
BEGIN
    SELECT * INTO v_job FROM app_jobs.jobs AS j WHERE j.id = delete_job.job_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    PERFORM app_jobs.check_not_running(v_job);
    DELETE FROM app_jobs.jobs AS j WHERE j.id = v_job.id;
    RETURN v_job;
END;
$$;

COMMENT ON FUNCTION app_jobs.delete_job IS
'Admin: delete one job unless it is running (PJ020)';

-- Delete finished work older than older_than: history rows and permanently failed jobs.
CREATE FUNCTION app_jobs.delete_finished_jobs(older_than interval DEFAULT '0') RETURNS integer
LANGUAGE plpgsql VOLATILE
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

-- sql/src/170_job_status_view.sql
-- Every job with its lifecycle status: live jobs from app_jobs.jobs, finished ones from
-- app_jobs.job_history (the latest record of each job no longer live).
CREATE VIEW app_jobs.job_status AS
SELECT
    j.id,
    j.task_identifier,
    j.queue_name,
    j.key,
    CASE
        WHEN j.locked_at IS NOT NULL THEN 'running'
        WHEN j.attempts >= j.max_attempts THEN 'failed'
        WHEN j.attempts > 0 OR j.last_error IS NOT NULL THEN 'retrying'
        WHEN j.run_at > now() THEN 'scheduled'
        ELSE 'waiting'
    END AS status,
    j.attempts,
    j.max_attempts,
    j.priority,
    j.run_at,
    j.progress,
    j.stage,
    j.cancel_requested_at IS NOT NULL AS cancel_requested,
    j.last_error,
    NULL::jsonb AS result,
    j.locked_by AS worker_id,
    j.created_at,
    j.locked_at AS started_at,
    NULL::timestamptz AS finished_at
FROM app_jobs.jobs AS j
UNION ALL
SELECT f.*
FROM (
    SELECT DISTINCT ON (h.job_id)
        h.job_id AS id,
        h.task_identifier,
        h.queue_name,
        h.key,
        h.status,
        h.attempts,
        h.max_attempts,
        h.priority,
        NULL::timestamptz AS run_at,
        NULL::integer AS progress,
        NULL::text AS stage,
        FALSE AS cancel_requested,
        h.last_error,
        h.result,
        h.worker_id,
        h.created_at,
        h.started_at,
        h.finished_at
    FROM app_jobs.job_history AS h
    LEFT JOIN app_jobs.jobs AS live ON h.job_id = live.id
    WHERE live.id IS NULL
    ORDER BY h.job_id ASC, h.finished_at DESC, h.id DESC
) AS f;

COMMENT ON VIEW app_jobs.job_status IS
'Each job once: waiting, scheduled, running, retrying, failed, cancelled or completed';

-- Have pg_dump keep the new tables' contents.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'pgjobs') THEN
        PERFORM pg_catalog.pg_extension_config_dump('app_jobs.workers', '');
        PERFORM pg_catalog.pg_extension_config_dump('app_jobs.job_history', '');
        PERFORM pg_catalog.pg_extension_config_dump('app_jobs.job_history_id_seq', '');
        PERFORM pg_catalog.pg_extension_config_dump('app_jobs.settings', '');
    END IF;
END;
$$;

-- The version of the app_jobs objects, for installs without CREATE EXTENSION.
CREATE OR REPLACE FUNCTION app_jobs.pgjobs_version() RETURNS text
LANGUAGE sql IMMUTABLE
AS $$ SELECT '0.3.0'::text $$;
