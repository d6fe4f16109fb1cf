-- Record a worker's batch of outcomes in one transaction. Each element of outcomes is
-- {"id", "attempt", "outcome": completed|failed|cancelled (default: failed when there is
-- an error), "error", "error_data", "result"}; id and attempt are required. A claim the
-- worker no longer holds (job id, worker, attempt) is 'fenced'; one it holds whose row (or
-- queue's row) another session has locked right now is 'busy' (left unchanged: deliver
-- it again later).
CREATE FUNCTION app_jobs.finish_jobs(
    worker_id text,
    outcomes jsonb
) RETURNS TABLE (job_id bigint, attempt integer, status text)
LANGUAGE plpgsql VOLATILE
-- JIT only slows these short queries down (and the planner's row guesses invite it);
-- a generic plan cannot know the batch size and turns key lookups into table scans.
SET jit = off
SET plan_cache_mode = force_custom_plan
AS $$
DECLARE
    v_bad jsonb;
    v_held bigint[];
    v_queue record;
    v_item record;
    v_job app_jobs.jobs;
    v_ids bigint[];
    v_attempts integer[];
    v_tasks text[];
    v_origins text[];
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
        OR coalesce(e ->> 'attempt', '') !~ '^\d{1,9}$'
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

    -- Lock order shared with get_jobs and add_job: every job row first, then bundle
    -- rows, then queue rows in name order, so a batch cannot deadlock with either.
    -- A claim is held when the job is locked by this worker at the reported attempt;
    -- an id listed twice is finished once (its later entries are fenced). A row another
    -- session holds (an enqueuer's depends_on share lock, an admin) is skipped, never
    -- waited for: one busy job must not hold up the rest of the batch.
    -- (Joins to the outcomes are LATERAL primary-key lookups, kept apart by LIMIT 1: the
    -- planner cannot size a JSON array, and a misjudged join would scan the jobs table
    -- once per outcome.)
    v_held := ARRAY(
        SELECT j.id
        FROM (
            SELECT DISTINCT ON ((x.e ->> 'id')::bigint)
                (x.e ->> 'id')::bigint AS id,
                (x.e ->> 'attempt')::integer AS attempt
            FROM jsonb_array_elements(outcomes) WITH ORDINALITY AS x (e, n)
            ORDER BY (x.e ->> 'id')::bigint, x.n
        ) AS o
        CROSS JOIN LATERAL (
            SELECT j.id FROM app_jobs.jobs AS j
            WHERE j.id = o.id
                -- coalesce keeps the planner on the primary key (not jobs_locked_by_idx).
                AND coalesce(j.locked_by, '') = finish_jobs.worker_id
                AND j.attempts = o.attempt
            FOR UPDATE SKIP LOCKED
        ) AS j
        ORDER BY j.id
    );
    PERFORM app_jobs.lock_bundles(ARRAY(
        SELECT j.bundle_id FROM app_jobs.jobs AS j
        WHERE j.id = ANY(v_held) AND j.bundle_id IS NOT NULL
    ));
    -- Queue rows likewise: one an open enqueue transaction holds (it counts its job in
    -- until it commits) makes that queue's jobs busy, not the whole batch wait.
    v_held := ARRAY(
        SELECT j.id FROM app_jobs.jobs AS j
        WHERE j.id = ANY(v_held)
            AND (j.queue_name IS NULL OR j.queue_name = ANY(ARRAY(
                SELECT q.queue_name FROM app_jobs.job_queues AS q
                WHERE q.queue_name IN (
                    SELECT h.queue_name FROM app_jobs.jobs AS h WHERE h.id = ANY(v_held)
                )
                ORDER BY q.queue_name
                FOR UPDATE SKIP LOCKED
            )))
        ORDER BY j.id
    );

    -- Queue by queue in name order (jobs without a queue first). Plain completions
    -- (no bundle, no dependents, no cancel request) go in one set-based statement;
    -- everything else through finish_claim, one job at a time.
    FOR v_queue IN
        SELECT DISTINCT j.queue_name FROM app_jobs.jobs AS j
        WHERE j.id = ANY(v_held)
        ORDER BY j.queue_name NULLS FIRST
    LOOP
        WITH plain AS (
            SELECT DISTINCT ON (o.id) o.id, o.attempt, o.result
            FROM (
                SELECT
                    (x.e ->> 'id')::bigint AS id,
                    (x.e ->> 'attempt')::integer AS attempt,
                    nullif(x.e -> 'result', 'null'::jsonb) AS result,
                    x.n
                FROM jsonb_array_elements(outcomes) WITH ORDINALITY AS x (e, n)
                WHERE coalesce(x.e ->> 'outcome', CASE
                    WHEN x.e ->> 'error' IS NULL THEN 'completed' ELSE 'failed'
                END) = 'completed'
            ) AS o
            CROSS JOIN LATERAL (
                SELECT j.id FROM app_jobs.jobs AS j
                WHERE j.id = o.id
                    AND j.queue_name IS NOT DISTINCT FROM v_queue.queue_name
                    AND j.bundle_id IS NULL
                    AND j.cancel_requested_at IS NULL
                    AND NOT EXISTS (
                        SELECT 1 FROM app_jobs.job_dependencies AS d WHERE d.depends_on = j.id
                    )
                LIMIT 1
            ) AS j
            WHERE o.id = ANY(v_held)
            ORDER BY o.id, o.n
        ),

        done AS (
            DELETE FROM app_jobs.jobs AS j
            USING plain AS p
            WHERE j.id = p.id
            RETURNING j.*, p.attempt AS reported_attempt, p.result
        ),

        kept AS (
            INSERT INTO app_jobs.job_history (
                job_id, database_id, task_identifier, queue_name, key, payload, priority,
                status, attempts, max_attempts, result, last_error, worker_id, created_at,
                started_at, origin, bundle_id
            )
            SELECT
                d.id, d.database_id, d.task_identifier, d.queue_name, d.key, d.payload,
                d.priority, 'completed', d.attempts, d.max_attempts, d.result, d.last_error,
                finish_jobs.worker_id, d.created_at, d.locked_at, d.origin, d.bundle_id
            FROM done AS d
            WHERE app_jobs.setting('history') <> 'off'
        )

        SELECT
            coalesce(array_agg(d.id), '{}'),
            coalesce(array_agg(d.reported_attempt), '{}'),
            coalesce(array_agg(d.task_identifier), '{}'),
            coalesce(array_agg(d.origin), '{}')
        INTO v_ids, v_attempts, v_tasks, v_origins
        FROM done AS d;

        PERFORM app_jobs.notify_chunks('jobs:stopped', ARRAY(
            SELECT app_jobs.stopped_event(c.id, c.task, 'completed', FALSE, NULL, c.origin)
            FROM unnest(v_ids, v_tasks, v_origins) WITH ORDINALITY AS c (id, task, origin, n)
            ORDER BY c.n
        ));
        RETURN QUERY
        SELECT c.id, c.attempt, 'completed'::text
        FROM unnest(v_ids, v_attempts) AS c (id, attempt);

        FOR v_item IN
            SELECT DISTINCT ON (o.id)
                o.id,
                o.attempt,
                o.outcome,
                o.error,
                o.error_data,
                o.result
            FROM (
                SELECT
                    (x.e ->> 'id')::bigint AS id,
                    (x.e ->> 'attempt')::integer AS attempt,
                    coalesce(
                        x.e ->> 'outcome',
                        CASE WHEN x.e ->> 'error' IS NULL THEN 'completed' ELSE 'failed' END
                    ) AS outcome,
                    x.e ->> 'error' AS error,
                    nullif(x.e -> 'error_data', 'null'::jsonb) AS error_data,
                    nullif(x.e -> 'result', 'null'::jsonb) AS result,
                    x.n
                FROM jsonb_array_elements(outcomes) WITH ORDINALITY AS x (e, n)
            ) AS o
            CROSS JOIN LATERAL (
                SELECT j.id FROM app_jobs.jobs AS j
                WHERE j.id = o.id AND j.queue_name IS NOT DISTINCT FROM v_queue.queue_name
                LIMIT 1
            ) AS j
            WHERE o.id = ANY(v_held)
            ORDER BY o.id, o.n
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
    END LOOP;

    -- Everything not held: busy when the row was skipped while locked elsewhere but is
    -- still this worker's claim; fenced otherwise (another worker's, a stale attempt,
    -- gone, or a repeat).
    RETURN QUERY
    SELECT
        f.id,
        f.attempt,
        CASE
            WHEN f.repeat = 1 AND EXISTS (
                SELECT 1 FROM app_jobs.jobs AS j
                WHERE j.id = f.id
                    AND j.locked_by = finish_jobs.worker_id
                    AND j.attempts = f.attempt
            ) THEN 'busy'
            ELSE 'fenced'
        END
    FROM (
        SELECT
            (x.e ->> 'id')::bigint AS id,
            (x.e ->> 'attempt')::integer AS attempt,
            x.n,
            row_number() OVER (PARTITION BY x.e ->> 'id' ORDER BY x.n) AS repeat
        FROM jsonb_array_elements(outcomes) WITH ORDINALITY AS x (e, n)
    ) AS f
    WHERE f.repeat > 1 OR NOT f.id = ANY(v_held)
    ORDER BY f.n;
END;
$$;

COMMENT ON FUNCTION app_jobs.finish_jobs IS
'Worker batch: complete, fail or cancel each claim the worker still holds; others are fenced';
