-- The jobs of an add_jobs call as rows, in order, with add_job's defaults (and the task's
-- default max_attempts and timeout) filled in. (unnest walks each array once; a
-- subscript per job would walk a text array from its start every time. The few task
-- settings are hashed once, not looked up by index for every job.)
CREATE FUNCTION app_jobs._add_jobs_rows(
    p_identifiers text[],
    p_payloads json[],
    p_db_ids uuid[],
    p_queue_names text[],
    p_run_ats timestamptz[],
    p_max_attempts integer[],
    p_priorities integer[],
    p_job_keys text[],
    p_timeouts interval[],
    p_origins text[],
    p_claim uuid
) RETURNS TABLE (
    n bigint,
    db_id uuid,
    identifier text,
    payload json,
    queue_name text,
    run_at timestamptz,
    max_attempts integer,
    priority integer,
    job_key text,
    timeout interval,
    origin text
)
LANGUAGE sql STABLE
AS $$
    WITH ts AS MATERIALIZED (
        SELECT t.task_identifier, t.max_attempts, t.timeout FROM app_jobs.task_settings AS t
    )

    SELECT
        r.n,
        CASE WHEN p_db_ids IS NULL THEN p_claim ELSE r.db_id END,
        r.identifier,
        coalesce(r.payload, '{}'::json),
        r.queue_name,
        coalesce(r.run_at, now()),
        coalesce(r.max_attempts, ts.max_attempts, 25),
        coalesce(r.priority, 0),
        r.job_key,
        coalesce(r.timeout, ts.timeout),
        r.origin
    FROM unnest(
        p_identifiers, p_payloads, p_db_ids, p_queue_names, p_run_ats, p_max_attempts,
        p_priorities, p_job_keys, p_timeouts, p_origins
    ) WITH ORDINALITY AS r (
        identifier, payload, db_id, queue_name, run_at, max_attempts, priority, job_key,
        timeout, origin, n
    )
    LEFT JOIN ts ON r.identifier = ts.task_identifier;
$$;

-- Enqueue many jobs in one call: element i of each array belongs to job i (a NULL array:
-- the default for every job; db_ids NULL: the jwt.claims.database_id claim, as add_job).
-- The same checks, tenancy and key semantics as add_job (PJ043 when arrays differ in
-- length; no depends_on: use add_job). Jobs without a key are checked set-based and
-- inserted by one statement; keyed jobs go through add_job, one by one, in order. Returns
-- one row per job, in order: a row of NULLs for a job whose task's enqueues are ignored
-- (test helpers). (work_mem: the inserted rows are sorted and returned in memory, not
-- through temporary files, up to several hundred thousand jobs.)
CREATE FUNCTION app_jobs.add_jobs(
    identifiers text[],
    payloads json[] DEFAULT NULL,
    db_ids uuid[] DEFAULT NULL,
    queue_names text[] DEFAULT NULL,
    run_ats timestamptz[] DEFAULT NULL,
    max_attempts integer[] DEFAULT NULL,
    priorities integer[] DEFAULT NULL,
    job_keys text[] DEFAULT NULL,
    timeouts interval[] DEFAULT NULL,
    origins text[] DEFAULT NULL,
    job_key_mode text DEFAULT 'replace'
) RETURNS SETOF app_jobs.jobs
LANGUAGE plpgsql VOLATILE
SET jit = off
SET work_mem = '64MB'
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
DECLARE
    v_n integer := coalesce(cardinality(identifiers), 0);
    v_claim uuid := nullif(current_setting('jwt.claims.database_id', TRUE), '')::uuid;
    v_row record;
    v_ids bigint[] := '{}';
    v_at integer[] := '{}';
BEGIN
    IF EXISTS (
        SELECT 1
        FROM unnest(ARRAY[
            cardinality(payloads), cardinality(db_ids), cardinality(queue_names),
            cardinality(run_ats), cardinality(max_attempts), cardinality(priorities),
            cardinality(job_keys), cardinality(timeouts), cardinality(origins)
        ]) AS c (n)
        WHERE c.n <> v_n
    ) THEN
        RAISE EXCEPTION 'add_jobs arrays must each have % elements, one per identifier', v_n
            USING ERRCODE = 'PJ043',
            HINT = 'Pass NULL for a field that takes its default for every job.';
    END IF;
    IF coalesce(job_key_mode, 'replace') NOT IN ('replace', 'preserve_run_at', 'unsafe_dedupe') THEN
        RAISE EXCEPTION 'job_key_mode must be replace, preserve_run_at or unsafe_dedupe, got %',
            job_key_mode
            USING ERRCODE = 'PJ021';
    END IF;

    -- Tenancy: every distinct tenant once (PJ030, as add_job).
    PERFORM app_jobs._check_tenant(t.db_id)
    FROM (
        SELECT DISTINCT CASE WHEN db_ids IS NULL THEN v_claim ELSE d END AS db_id
        FROM unnest(coalesce(db_ids, ARRAY[NULL]::uuid[])) AS d
    ) AS t;
    -- Names: every distinct task and queue once (PJ001, PJ002, PJ031, PJ032).
    PERFORM app_jobs._check_job_spec(s.identifier, s.queue_name, NULL, NULL)
    FROM (
        SELECT DISTINCT r.identifier, r.queue_name
        FROM unnest(identifiers, queue_names) AS r (identifier, queue_name)
    ) AS s;
    -- Payloads of more than 512 bytes, each against the limits (PJ033, PJ037).
    PERFORM app_jobs._check_payload(p.payload)
    FROM unnest(payloads) AS p (payload)
    WHERE octet_length(p.payload::text) > 512;
    -- The other fields set-based: the first job that breaks a rule goes through
    -- check_job, which raises add_job's error for it. (Nothing to check when no such
    -- field is given and no task's defaults are out of add_job's bounds.)
    IF job_keys IS NOT NULL OR run_ats IS NOT NULL OR add_jobs.max_attempts IS NOT NULL
        OR timeouts IS NOT NULL OR origins IS NOT NULL
        OR EXISTS (
            SELECT 1 FROM app_jobs.task_settings AS ts
            WHERE ts.max_attempts > 10000 OR ts.timeout > interval '100 years'
        ) THEN
        FOR v_row IN
            SELECT r.*
            FROM app_jobs._add_jobs_rows(
                identifiers, payloads, db_ids, queue_names, run_ats, add_jobs.max_attempts,
                priorities, job_keys, timeouts, origins, v_claim
            ) AS r
            WHERE length(r.job_key) NOT BETWEEN 1 AND 512
                OR r.max_attempts NOT BETWEEN 1 AND 10000
                OR r.run_at NOT BETWEEN '1970-01-01 00:00:00+00' AND now() + interval '100 years'
                OR r.timeout <= interval '0' OR r.timeout > interval '100 years'
                OR length(r.origin) NOT BETWEEN 1 AND 256
            ORDER BY r.n
            LIMIT 1
        LOOP
            PERFORM app_jobs._check_job(
                v_row.identifier, v_row.queue_name, v_row.job_key, v_row.max_attempts,
                v_row.payload, v_row.run_at, v_row.timeout, v_row.origin
            );
        END LOOP;
    END IF;

    -- Without keys (the usual batch): one insert, the rows returned in the callers' order
    -- (ids are drawn in insertion order, which follows the jobs' order).
    IF (job_keys IS NULL OR NOT EXISTS (SELECT 1 FROM unnest(job_keys) AS k WHERE k IS NOT NULL))
        AND coalesce(current_setting('pgjobs.ignore_enqueues', TRUE), '') = '' THEN
        RETURN QUERY
        WITH inserted AS (
            INSERT INTO app_jobs.jobs (
                database_id, task_identifier, payload, queue_name, run_at, max_attempts,
                priority, timeout, origin
            )
            SELECT
                r.db_id, r.identifier, r.payload, r.queue_name, r.run_at, r.max_attempts,
                r.priority, r.timeout, r.origin
            FROM app_jobs._add_jobs_rows(
                identifiers, payloads, db_ids, queue_names, run_ats, add_jobs.max_attempts,
                priorities, job_keys, timeouts, origins, v_claim
            ) AS r
            ORDER BY r.n
            RETURNING *
        )

        SELECT i.* FROM inserted AS i ORDER BY i.id;
        RETURN;
    END IF;
    -- Without keys, some tasks' enqueues ignored (test helpers): a row of NULLs for each
    -- of those.
    IF job_keys IS NULL OR NOT EXISTS (SELECT 1 FROM unnest(job_keys) AS k WHERE k IS NOT NULL) THEN
        RETURN QUERY
        WITH wanted AS (
            SELECT r.*, app_jobs._enqueue_ignored(r.identifier) AS ignored
            FROM app_jobs._add_jobs_rows(
            identifiers, payloads, db_ids, queue_names, run_ats, add_jobs.max_attempts,
            priorities, job_keys, timeouts, origins, v_claim
        ) AS r
        ),

        inserted AS (
            INSERT INTO app_jobs.jobs (
                database_id, task_identifier, payload, queue_name, run_at, max_attempts,
                priority, timeout, origin
            )
            SELECT
                w.db_id, w.identifier, w.payload, w.queue_name, w.run_at, w.max_attempts,
                w.priority, w.timeout, w.origin
            FROM wanted AS w
            WHERE NOT w.ignored
            ORDER BY w.n
            RETURNING *
        ),

        numbered AS (
            SELECT j, row_number() OVER (ORDER BY j.id) AS k FROM inserted AS j
        ),

        places AS (
            SELECT w.n, row_number() OVER (ORDER BY w.n) AS k
            FROM wanted AS w
            WHERE NOT w.ignored
        )

        SELECT (n.j).*
        FROM wanted AS w
        LEFT JOIN places AS p ON w.n = p.n
        LEFT JOIN numbered AS n ON p.k = n.k
        ORDER BY w.n;
        RETURN;
    END IF;

    -- With keys: add_job's key semantics for each job, one by one, in order.
    FOR v_row IN
        SELECT r.*
        FROM unnest(
            identifiers, payloads, db_ids, queue_names, run_ats, add_jobs.max_attempts,
            priorities, job_keys, timeouts, origins
        ) WITH ORDINALITY AS r (
            identifier, payload, db_id, queue_name, run_at, max_attempts, priority, job_key,
            timeout, origin, n
        )
        ORDER BY r.n
    LOOP
        v_ids := v_ids || (app_jobs.add_job(
            db_id := CASE WHEN db_ids IS NULL THEN v_claim ELSE v_row.db_id END,
            identifier := v_row.identifier,
            payload := coalesce(v_row.payload, '{}'::json),
            job_key := v_row.job_key,
            queue_name := v_row.queue_name,
            run_at := coalesce(v_row.run_at, now()),
            max_attempts := v_row.max_attempts,
            priority := coalesce(v_row.priority, 0),
            timeout := v_row.timeout,
            job_key_mode := add_jobs.job_key_mode,
            origin := v_row.origin
        )).id;
        v_at := v_at || v_row.n::integer;
    END LOOP;
    RETURN QUERY
    SELECT j.*
    FROM unnest(v_ids, v_at) AS r (id, n)
    LEFT JOIN app_jobs.jobs AS j ON r.id = j.id
    ORDER BY r.n;
END;
$$;

COMMENT ON FUNCTION app_jobs.add_jobs IS
'Enqueue many jobs in one statement (parallel arrays): add_job''s checks, tenancy and keys';
