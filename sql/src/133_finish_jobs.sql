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

    -- Lock order shared with get_jobs and add_job: every job row first, then bundle
    -- rows, then queue rows in name order, so a batch cannot deadlock with either.
    PERFORM 1
    FROM app_jobs.jobs AS j
    WHERE j.id IN (SELECT (e ->> 'id')::bigint FROM jsonb_array_elements(outcomes) AS e)
        AND j.locked_by = finish_jobs.worker_id
    ORDER BY j.id
    FOR UPDATE;
    PERFORM app_jobs.lock_bundles(ARRAY(
        SELECT j.bundle_id FROM app_jobs.jobs AS j
        WHERE j.id IN (SELECT (e ->> 'id')::bigint FROM jsonb_array_elements(outcomes) AS e)
            AND j.locked_by = finish_jobs.worker_id AND j.bundle_id IS NOT NULL
    ));

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
