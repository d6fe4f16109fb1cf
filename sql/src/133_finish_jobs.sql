-- Record a worker's batch of outcomes in one transaction, as parallel arrays: element i
-- of each belongs to outcome i (ids and attempts required; an outcome NULL means failed
-- when there is an error, else completed; a JSON null result or error_data is NULL;
-- PJ016 for arrays of other lengths, a missing id or attempt, an unknown outcome). A
-- claim the worker no longer holds (job id, worker, attempt) is 'fenced'; one it holds
-- whose row (or queue's row) another session has locked right now is 'busy' (left
-- unchanged: deliver it again later); an id listed twice is finished once (its later
-- entries are fenced).
CREATE FUNCTION app_jobs.finish_jobs(
    worker_id text,
    ids bigint[],
    attempts integer[],
    outcomes text[] DEFAULT NULL,
    errors text[] DEFAULT NULL,
    error_data jsonb[] DEFAULT NULL,
    results jsonb[] DEFAULT NULL
) RETURNS TABLE (job_id bigint, attempt integer, status text)
LANGUAGE plpgsql VOLATILE
-- JIT only slows these short queries down. Every lookup goes through an id array and
-- the primary key, which a cached generic plan does well: no planning per call.
SET jit = off
SET plan_cache_mode = force_generic_plan
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
DECLARE
    v_n integer := coalesce(cardinality(ids), 0);
    -- The outcomes as arrays: element i of each is outcome number i.
    v_ids bigint[];
    v_attempts integer[];
    v_outcomes text[];
    v_errors text[];
    v_error_data jsonb[];
    v_results jsonb[];
    v_first boolean[];
    -- The claims this worker holds, and where their outcomes are in the arrays.
    v_held bigint[];
    v_held_at integer[];
    v_held_plain boolean[];
    v_claims bigint[];
    v_locked bigint[];
    v_busy bigint[] := '{}';
    v_plain integer[];
    v_other integer[];
    v_done_ids bigint[];
    v_done_tasks text[];
    v_done_origins text[];
    v_item record;
    v_job app_jobs.jobs;
    v_bad bigint;
BEGIN
    PERFORM app_jobs._check_worker_id(worker_id);
    IF EXISTS (
        SELECT 1
        FROM unnest(ARRAY[
            cardinality(attempts), cardinality(outcomes), cardinality(errors),
            cardinality(error_data), cardinality(results)
        ]) AS c (n)
        WHERE c.n <> v_n
    ) OR cardinality(attempts) IS NULL AND v_n > 0 THEN
        RAISE EXCEPTION 'finish_jobs arrays must each have % elements, one per id', v_n
            USING ERRCODE = 'PJ016';
    END IF;
    -- One pass: each outcome checked, its defaults filled in, repeats of an id marked.
    SELECT
        min(o.n) FILTER (WHERE o.bad),
        coalesce(array_agg(o.id ORDER BY o.n), '{}'),
        coalesce(array_agg(o.attempt ORDER BY o.n), '{}'),
        coalesce(array_agg(o.outcome ORDER BY o.n), '{}'),
        coalesce(array_agg(o.error ORDER BY o.n), '{}'),
        coalesce(array_agg(o.error_data ORDER BY o.n), '{}'),
        coalesce(array_agg(o.result ORDER BY o.n), '{}'),
        coalesce(array_agg(o.first ORDER BY o.n), '{}')
    INTO v_bad, v_ids, v_attempts, v_outcomes, v_errors, v_error_data, v_results, v_first
    FROM (
        SELECT
            x.n,
            x.id IS NULL OR x.attempt IS NULL OR x.attempt < 0
            OR coalesce(x.outcome, 'completed') NOT IN ('completed', 'failed', 'cancelled')
            AS bad,
            x.id,
            x.attempt,
            coalesce(
                x.outcome, CASE WHEN x.error IS NULL THEN 'completed' ELSE 'failed' END
            ) AS outcome,
            x.error,
            nullif(x.error_data, 'null'::jsonb) AS error_data,
            nullif(x.result, 'null'::jsonb) AS result,
            row_number() OVER (PARTITION BY x.id ORDER BY x.n) = 1 AS first
        FROM unnest(ids, attempts, outcomes, errors, error_data, results)
            WITH ORDINALITY AS x (id, attempt, outcome, error, error_data, result, n)
    ) AS o;
    IF v_bad IS NOT NULL THEN
        RAISE EXCEPTION 'bad outcome number %: id and attempt are required, outcome is '
            'completed, failed or cancelled', v_bad
            USING ERRCODE = 'PJ016';
    END IF;

    -- The claims this worker holds (the job locked by it at the reported attempt), locked
    -- in the shared order (see _lock_jobs). A job row another session holds (an
    -- enqueuer's depends_on share lock, an admin), or whose queue row it holds (an open
    -- enqueue counting its job in), is skipped, never waited for: one busy job must not
    -- hold up the rest of the batch. (Primary-key lookups, one per outcome: the planner
    -- cannot size an array, and a misjudged join would scan the jobs table. The
    -- outcomes' texts and JSON are joined by their number, never subscripted: a
    -- subscript walks such an array from its start.)
    v_claims := ARRAY(
        SELECT o.id
        FROM unnest(v_ids, v_attempts, v_first) AS o (id, attempt, first)
        WHERE o.first AND EXISTS (
            SELECT 1 FROM app_jobs.jobs AS j
            WHERE j.id = o.id
                -- coalesce keeps the planner on the primary key (not jobs_locked_by_idx).
                AND coalesce(j.locked_by, '') = finish_jobs.worker_id
                AND j.attempts = o.attempt
        )
    );
    -- The claims left out because busy (rarely any), to skip below: cheaper than joining
    -- the whole batch with the locked ones.
    v_locked := app_jobs._lock_jobs(v_claims, TRUE);
    IF cardinality(v_locked) < cardinality(v_claims) THEN
        v_busy := ARRAY(SELECT unnest(v_claims) EXCEPT SELECT unnest(v_locked));
    END IF;
    -- Which are still held now that they are locked, and how each ends: plain
    -- completions (completed, no bundle, no dependents, no cancel request) go set-based,
    -- the others one by one.
    SELECT
        coalesce(array_agg(h.id ORDER BY h.id), '{}'),
        coalesce(array_agg(h.n ORDER BY h.id), '{}'),
        coalesce(array_agg(h.plain ORDER BY h.id), '{}')
    INTO v_held, v_held_at, v_held_plain
    FROM (
        SELECT
            j.id,
            o.n,
            o.outcome = 'completed' AND j.bundle_id IS NULL AND j.cancel_requested_at IS NULL
            AND NOT EXISTS (
                SELECT 1 FROM app_jobs.job_dependencies AS d WHERE d.depends_on = j.id
            ) AS plain
        FROM unnest(v_ids, v_attempts, v_outcomes, v_first)
            WITH ORDINALITY AS o (id, attempt, outcome, first, n)
        CROSS JOIN LATERAL (
            SELECT j.id, j.bundle_id, j.cancel_requested_at
            FROM app_jobs.jobs AS j
            WHERE j.id = o.id
                AND coalesce(j.locked_by, '') = finish_jobs.worker_id
                AND j.attempts = o.attempt
        ) AS j
        WHERE o.first AND o.id <> ALL(v_busy)
    ) AS h;
    SELECT
        coalesce(array_agg(h.n ORDER BY h.n) FILTER (WHERE h.plain), '{}'),
        coalesce(array_agg(h.n ORDER BY h.id) FILTER (WHERE NOT h.plain), '{}')
    INTO v_plain, v_other
    FROM unnest(v_held, v_held_at, v_held_plain) AS h (id, n, plain);

    -- The plain completions: one statement deletes them all and writes their history
    -- (every queue row they touch is held already).
    WITH plain AS (
        SELECT o.id, o.result
        FROM unnest(v_ids, v_results) WITH ORDINALITY AS o (id, result, n)
        INNER JOIN unnest(v_plain) AS p (n) ON o.n = p.n
    ),

    done AS (
        DELETE FROM app_jobs.jobs AS j
        WHERE j.id = ANY(ARRAY(SELECT p.id FROM plain AS p))
        RETURNING j.*
    ),

    kept AS (
        INSERT INTO app_jobs.job_history (
            job_id, database_id, task_identifier, queue_name, key, payload, priority,
            status, attempts, max_attempts, result, last_error, worker_id, created_at,
            started_at, origin, bundle_id
        )
        SELECT
            d.id, d.database_id, d.task_identifier, d.queue_name, d.key, d.payload,
            d.priority, 'completed', d.attempts, d.max_attempts, p.result, d.last_error,
            finish_jobs.worker_id, d.created_at, d.locked_at, d.origin, d.bundle_id
        FROM done AS d
        INNER JOIN plain AS p ON d.id = p.id
        WHERE app_jobs.setting('history') <> 'off'
    )

    SELECT
        coalesce(array_agg(d.id ORDER BY d.id), '{}'),
        coalesce(array_agg(d.task_identifier ORDER BY d.id), '{}'),
        coalesce(array_agg(d.origin ORDER BY d.id), '{}')
    INTO v_done_ids, v_done_tasks, v_done_origins
    FROM done AS d;
    PERFORM app_jobs._notify_chunks('jobs:stopped', ARRAY(
        SELECT app_jobs._stopped_event(e.id, e.task, 'completed', FALSE, NULL, e.origin)
        FROM unnest(v_done_ids, v_done_tasks, v_done_origins) AS e (id, task, origin)
    ));
    RETURN QUERY
    SELECT o.id, o.attempt, 'completed'::text
    FROM unnest(v_ids, v_attempts) WITH ORDINALITY AS o (id, attempt, n)
    INNER JOIN unnest(v_plain) AS p (n) ON o.n = p.n
    ORDER BY o.n;

    -- The others, one at a time.
    FOR v_item IN
        SELECT o.*
        FROM unnest(v_ids, v_attempts, v_outcomes, v_errors, v_error_data, v_results)
            WITH ORDINALITY AS o (id, attempt, outcome, error, error_data, result, n)
        INNER JOIN unnest(v_other) WITH ORDINALITY AS x (n, k) ON o.n = x.n
        ORDER BY x.k
    LOOP
        v_job := app_jobs._finish_claim(
            worker_id, v_item.id, v_item.attempt, v_item.outcome, v_item.error,
            v_item.error_data, v_item.result
        );
        job_id := v_item.id;
        attempt := v_item.attempt;
        status := app_jobs._claim_status(v_job, v_item.outcome);
        RETURN NEXT;
    END LOOP;

    -- Everything not held: busy when the row was skipped while locked elsewhere but is
    -- still this worker's claim; fenced otherwise (another worker's, a stale attempt,
    -- gone, or a repeat).
    RETURN QUERY
    SELECT
        o.id,
        o.attempt,
        CASE
            WHEN o.first AND EXISTS (
                SELECT 1 FROM app_jobs.jobs AS j
                WHERE j.id = o.id
                    AND coalesce(j.locked_by, '') = finish_jobs.worker_id
                    AND j.attempts = o.attempt
            ) THEN 'busy'
            ELSE 'fenced'
        END
    FROM unnest(v_ids, v_attempts, v_first) WITH ORDINALITY AS o (id, attempt, first, n)
    LEFT JOIN unnest(v_held_at) AS h (n) ON o.n = h.n
    WHERE h.n IS NULL
    ORDER BY o.n;
END;
$$;

COMMENT ON FUNCTION app_jobs.finish_jobs(
    text, bigint[], integer[], text[], text[], jsonb[], jsonb[]
) IS
'Worker batch: complete, fail or cancel each claim the worker still holds; others are fenced';


-- The same, with the outcomes as one JSON array (the original form): each element is
-- {"id", "attempt", "outcome": completed|failed|cancelled (default: failed when there is
-- an error), "error", "error_data", "result"}; id and attempt are required (numbers, or
-- strings of digits). PJ016 for anything else.
CREATE FUNCTION app_jobs.finish_jobs(
    worker_id text,
    outcomes jsonb
) RETURNS TABLE (job_id bigint, attempt integer, status text)
LANGUAGE plpgsql VOLATILE
SET jit = off
SET plan_cache_mode = force_generic_plan
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
DECLARE
    v_bad jsonb;
    v_ids bigint[];
    v_attempts integer[];
    v_outcomes text[];
    v_errors text[];
    v_error_data jsonb[];
    v_results jsonb[];
BEGIN
    PERFORM app_jobs._check_worker_id(worker_id);
    IF jsonb_typeof(outcomes) IS DISTINCT FROM 'array' THEN
        RAISE EXCEPTION 'outcomes must be a JSON array, got %',
            coalesce(jsonb_typeof(outcomes), 'NULL')
            USING ERRCODE = 'PJ016';
    END IF;
    SELECT
        (array_agg(c.e ORDER BY c.n) FILTER (WHERE c.bad))[1],
        coalesce(array_agg(
            CASE WHEN NOT c.bad THEN (c.e ->> 'id')::bigint END ORDER BY c.n
        ), '{}'),
        coalesce(array_agg(
            CASE WHEN NOT c.bad THEN (c.e ->> 'attempt')::integer END ORDER BY c.n
        ), '{}'),
        coalesce(array_agg(c.e ->> 'outcome' ORDER BY c.n), '{}'),
        coalesce(array_agg(c.e ->> 'error' ORDER BY c.n), '{}'),
        coalesce(array_agg(c.e -> 'error_data' ORDER BY c.n), '{}'),
        coalesce(array_agg(c.e -> 'result' ORDER BY c.n), '{}')
    INTO v_bad, v_ids, v_attempts, v_outcomes, v_errors, v_error_data, v_results
    FROM (
        SELECT
            x.e,
            x.n,
            jsonb_typeof(x.e) IS DISTINCT FROM 'object'
            OR coalesce(x.e ->> 'id', '') !~ '^\d{1,18}$'
            OR coalesce(x.e ->> 'attempt', '') !~ '^\d{1,9}$'
            OR coalesce(x.e ->> 'outcome', 'completed')
            NOT IN ('completed', 'failed', 'cancelled')
            OR (x.e ? 'error' AND jsonb_typeof(x.e -> 'error') NOT IN ('string', 'null'))
            AS bad
        FROM jsonb_array_elements(outcomes) WITH ORDINALITY AS x (e, n)
    ) AS c;
    IF v_bad IS NOT NULL THEN
        RAISE EXCEPTION 'bad outcome %', v_bad
            USING ERRCODE = 'PJ016',
            HINT = 'each outcome is {"id": number, "attempt": number, "outcome": '
            || '"completed"|"failed"|"cancelled", "error": text, "error_data": json, '
            || '"result": json}';
    END IF;
    RETURN QUERY
    SELECT * FROM app_jobs.finish_jobs(
        worker_id, v_ids, v_attempts, v_outcomes, v_errors, v_error_data, v_results
    );
END;
$$;

COMMENT ON FUNCTION app_jobs.finish_jobs(text, jsonb) IS
'Worker batch as a JSON array: complete, fail or cancel each claim the worker still holds';
