-- pgjobs 0.5.0 -> 0.6.0: performance (issue 12): add_jobs, a set-based enqueue; a
-- partial unique index on jobs.key; a plain fast path for claims and
-- cached (generic) plans for get_jobs and finish_jobs, finish_jobs parsing its outcomes
-- once, helpers that query tables in PL/pgSQL (their plans are kept for the session), the
-- timestamps trigger skipped where a statement sets updated_at itself. See README,
-- "Changes in 0.6.0". Written by hand: only what changed, the functions as in sql/src.

-- Events are built as JSON text (replaced below with new types).
DROP FUNCTION app_jobs.notify_chunks(text, json[]);
DROP FUNCTION app_jobs.stopped_event(bigint, text, text, boolean, bigint, text);

-- A unique index on jobs.key that leaves out the jobs without a key (add_job's upserts
-- name it with ON CONFLICT (key) WHERE key IS NOT NULL).
ALTER TABLE app_jobs.jobs DROP CONSTRAINT jobs_key_key;
CREATE UNIQUE INDEX jobs_key_key ON app_jobs.jobs (key) WHERE key IS NOT NULL;

-- The timestamps trigger of jobs runs only for updates that do not set updated_at.
DROP TRIGGER _100_timestamps ON app_jobs.jobs;
CREATE TRIGGER _100_timestamps
BEFORE UPDATE ON app_jobs.jobs
FOR EACH ROW WHEN (
    new.updated_at IS NOT DISTINCT FROM old.updated_at
    OR new.created_at IS DISTINCT FROM old.created_at
)
EXECUTE FUNCTION app_jobs.tg_timestamps();

-- from sql/src/100_check_job_spec.sql
-- Every check of one job's fields, as add_job and add_jobs apply them (max_attempts and
-- timeout with the task's defaults applied): PJ001-PJ004, PJ017, PJ022, PJ031-PJ035,
-- PJ037, PJ038.
CREATE OR REPLACE FUNCTION app_jobs.check_job(
    p_identifier text,
    p_queue_name text,
    p_job_key text,
    p_max_attempts integer,
    p_payload json,
    p_run_at timestamptz,
    p_timeout interval,
    p_origin text
) RETURNS void
LANGUAGE plpgsql STABLE
AS $$
BEGIN
    PERFORM app_jobs.check_job_spec(p_identifier, p_queue_name, p_job_key, p_max_attempts);
    PERFORM app_jobs.check_payload(p_payload);
    PERFORM app_jobs.check_run_at(p_run_at);
    IF p_timeout <= interval '0' THEN
        RAISE EXCEPTION 'timeout must be positive, got %', p_timeout
            USING ERRCODE = 'PJ017';
    END IF;
    -- (Longer is no limit at all, and beyond what clients such as Python can represent.)
    IF p_timeout > interval '100 years' THEN
        RAISE EXCEPTION 'timeout must be at most 100 years, got %', p_timeout
            USING ERRCODE = 'PJ038';
    END IF;
    IF length(p_origin) NOT BETWEEN 1 AND 256 THEN
        RAISE EXCEPTION 'origin must be 1 to 256 characters, got %', length(p_origin)
            USING ERRCODE = 'PJ022';
    END IF;
END;
$$;

-- from sql/src/102_settings.sql
-- The value of a setting, or its default when it was never set.
CREATE OR REPLACE FUNCTION app_jobs.setting(p_name text) RETURNS text
LANGUAGE plpgsql STABLE
AS $$
BEGIN
    RETURN coalesce(
        (SELECT s.value FROM app_jobs.settings AS s WHERE s.name = p_name),
        CASE p_name
            WHEN 'history' THEN 'on'
            WHEN 'history_retention' THEN '7 days'
            WHEN 'max_payload_bytes' THEN '262144'
            WHEN 'notify_max_queue_usage' THEN '0.5'
        END
    );
END;
$$;

-- from sql/src/103_lock_is_free.sql
-- True when nobody live holds a lock: never taken, or older than p_expiry and held by
-- a session that never registered (registered workers are judged by their heartbeat).
CREATE OR REPLACE FUNCTION app_jobs.lock_is_free(
    p_locked_at timestamptz,
    p_locked_by text,
    p_expiry interval
) RETURNS boolean
LANGUAGE plpgsql STABLE
AS $$
BEGIN
    -- (PL/pgSQL, as every helper that queries a table: a SQL function with a subquery is
    -- not inlined, and its query is planned again in every transaction.)
    RETURN p_locked_at IS NULL
        OR p_locked_at < now() - p_expiry
        AND NOT EXISTS (SELECT 1 FROM app_jobs.workers AS w WHERE w.id = p_locked_by);
END;
$$;

-- from sql/src/104_queue_concurrency.sql
-- How many jobs of a named queue may run at once (queue_settings, else 1).
CREATE OR REPLACE FUNCTION app_jobs.queue_concurrency(p_queue_name text) RETURNS integer
LANGUAGE plpgsql STABLE
AS $$
BEGIN
    RETURN coalesce(
        (SELECT qs.max_concurrency FROM app_jobs.queue_settings AS qs
            WHERE qs.queue_name = p_queue_name),
        1
    );
END;
$$;

-- from sql/src/106_notify.sql
-- Send JSON events (each a JSON object's text) as JSON arrays, as many per notification
-- as fit well under NOTIFY's 8000-byte limit. Chunks are cut where the running total of
-- the events' byte lengths crosses a multiple of 5000 bytes, so a chunk holds less than
-- 5000 bytes plus one event; callers keep each event under 2500 bytes (names of at most
-- 126 characters, origins cut to 256 characters: at most 6 bytes each once JSON-escaped).
CREATE OR REPLACE FUNCTION app_jobs.notify_chunks(p_channel text, p_events text[]) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    PERFORM app_jobs.notify(p_channel, c.events)
    FROM (
        SELECT '[' || string_agg(e.event, ', ' ORDER BY e.n) || ']' AS events
        FROM (
            SELECT
                x.event,
                x.n,
                sum(octet_length(x.event) + 2) OVER (ORDER BY x.n) AS running_bytes
            FROM unnest(p_events) WITH ORDINALITY AS x (event, n)
        ) AS e
        GROUP BY e.running_bytes / 5000
    ) AS c;
END;
$$;

-- from sql/src/110_add_job.sql
-- Enqueue a job; with job_key, job_key_mode says what happens to a job holding the key:
-- replace (default) updates a waiting one, preserve_run_at does so but keeps its run_at,
-- unsafe_dedupe leaves it untouched and returns it. depends_on: ids of jobs that must
-- complete first (a failed or cancelled one cancels this job).
CREATE OR REPLACE FUNCTION app_jobs.add_job(
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
    PERFORM app_jobs.check_tenant(db_id);
    IF app_jobs.enqueue_ignored(identifier) THEN
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
    PERFORM app_jobs.check_job(
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
            PERFORM app_jobs.cancel_dependents(ARRAY[v_job.id], v_failed, v_failed_status);
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

-- from sql/src/111_add_jobs.sql
-- The jobs of an add_jobs call as rows, in order, with add_job's defaults (and the task's
-- default max_attempts and timeout) filled in. (unnest walks each array once; a
-- subscript per job would walk a text array from its start every time. The few task
-- settings are hashed once, not looked up by index for every job.)
CREATE OR REPLACE FUNCTION app_jobs.add_jobs_rows(
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
CREATE OR REPLACE FUNCTION app_jobs.add_jobs(
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
    PERFORM app_jobs.check_tenant(t.db_id)
    FROM (
        SELECT DISTINCT CASE WHEN db_ids IS NULL THEN v_claim ELSE d END AS db_id
        FROM unnest(coalesce(db_ids, ARRAY[NULL]::uuid[])) AS d
    ) AS t;
    -- Names: every distinct task and queue once (PJ001, PJ002, PJ031, PJ032).
    PERFORM app_jobs.check_job_spec(s.identifier, s.queue_name, NULL, NULL)
    FROM (
        SELECT DISTINCT r.identifier, r.queue_name
        FROM unnest(identifiers, queue_names) AS r (identifier, queue_name)
    ) AS s;
    -- Payloads of more than 512 bytes, each against the limits (PJ033, PJ037).
    PERFORM app_jobs.check_payload(p.payload)
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
            FROM app_jobs.add_jobs_rows(
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
            PERFORM app_jobs.check_job(
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
            FROM app_jobs.add_jobs_rows(
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
            SELECT r.*, app_jobs.enqueue_ignored(r.identifier) AS ignored
            FROM app_jobs.add_jobs_rows(
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

-- from sql/src/120_get_jobs.sql
-- Claim up to batch_size available jobs for a worker, within each named queue's
-- concurrency (one at a time unless queue_settings says more) and each task's rate limit.
CREATE OR REPLACE FUNCTION app_jobs.get_jobs(
    worker_id text,
    task_identifiers text[] DEFAULT NULL,
    job_expiry interval DEFAULT '4 hours',
    batch_size integer DEFAULT 1
) RETURNS SETOF app_jobs.jobs
LANGUAGE plpgsql VOLATILE
-- JIT only slows these short queries down (and the planner's row guesses invite it).
SET jit = off
AS $$
DECLARE
    v_now timestamptz := now();
    v_expiry interval := coalesce(job_expiry, interval '4 hours');
    v_expired timestamptz;
    v_clock timestamptz := clock_timestamp();
    v_bucket record;
    v_tokens double precision;
    v_allow jsonb;
BEGIN
    PERFORM app_jobs.check_worker_id(worker_id);
    PERFORM app_jobs.check_job_expiry(job_expiry);
    v_expired := v_now - v_expiry;
    IF batch_size IS NULL OR batch_size NOT BETWEEN 1 AND 10000 THEN
        RAISE EXCEPTION 'batch_size must be 1 to 10000, got %',
            coalesce(batch_size::text, 'NULL')
            USING ERRCODE = 'PJ006';
    END IF;

    -- Locks older than job_expiry whose holder never registered (no heartbeat to go
    -- by) belong to workers presumed dead (as in the original get_job, the next claim
    -- takes them over); registered workers' jobs are freed by reap_dead_workers when
    -- their heartbeat stops. One index probe finds whether there is any such lock (the
    -- oldest lock: a min() the planner always takes from jobs_locked_at_idx).
    IF (SELECT min(e.locked_at) FROM app_jobs.jobs AS e) < v_expired THEN
        -- (SKIP LOCKED: another claimer ending the same claims is not waited for.)
        PERFORM app_jobs.end_cancelled_claims(ARRAY(
            SELECT e.id FROM app_jobs.jobs AS e
            WHERE e.locked_at < v_expired AND e.cancel_requested_at IS NOT NULL
                AND app_jobs.lock_is_free(e.locked_at, e.locked_by, v_expiry)
            ORDER BY e.id
            FOR UPDATE SKIP LOCKED
        ));
        UPDATE app_jobs.jobs AS j
        SET locked_at = NULL, locked_by = NULL
        WHERE j.id IN (
            SELECT e.id FROM app_jobs.jobs AS e
            WHERE e.locked_at < v_expired AND e.attempts < e.max_attempts
                AND app_jobs.lock_is_free(e.locked_at, e.locked_by, v_expiry)
            FOR UPDATE SKIP LOCKED
        );
    END IF;

    -- Rate-limited tasks: refill each token bucket and note how many starts it allows.
    -- The rows stay locked (in task order) until commit, so claimers of a limited task
    -- take turns and the limit holds across any number of workers.
    FOR v_bucket IN
        SELECT ts.*
        FROM app_jobs.task_settings AS ts
        WHERE ts.rate_limit IS NOT NULL
            AND (task_identifiers IS NULL OR ts.task_identifier = ANY(task_identifiers))
        ORDER BY ts.task_identifier
        FOR UPDATE
    LOOP
        v_tokens := least(
            coalesce(v_bucket.rate_burst, v_bucket.rate_limit),
            coalesce(v_bucket.tokens, 0)
            + greatest(extract(EPOCH FROM v_clock - v_bucket.refilled_at), 0)
            / extract(EPOCH FROM v_bucket.rate_interval) * v_bucket.rate_limit
        );
        UPDATE app_jobs.task_settings AS ts
        SET tokens = v_tokens, refilled_at = greatest(ts.refilled_at, v_clock)
        WHERE ts.task_identifier = v_bucket.task_identifier;
        v_allow := coalesce(v_allow, '{}'::jsonb)
            || jsonb_build_object(v_bucket.task_identifier, floor(v_tokens)::integer);
    END LOOP;

    -- The common case: no rate limit applies and no job is in a named queue (no queue has
    -- a row). Then the claim is the plain ordered SKIP LOCKED pick.
    IF v_allow IS NULL AND NOT EXISTS (SELECT 1 FROM app_jobs.job_queues) THEN
        RETURN QUERY
        WITH claimed AS (
        UPDATE app_jobs.jobs AS j
        SET
            attempts = j.attempts + 1, locked_by = worker_id, locked_at = v_now,
            updated_at = v_now, progress = NULL, stage = NULL
        -- An id array, not a join: a cached plan cannot know the batch size, and a
        -- join sized for a guess would scan the whole table.
        -- (The LIMIT comes from a lateral row, not a parameter: a cached generic plan
        -- would assume a parameter LIMIT means 10 % of the table and sort it all.)
        WHERE j.id = ANY(ARRAY(
            SELECT c.id
            FROM (SELECT batch_size AS n) AS g
            CROSS JOIN LATERAL (
                SELECT e.id
                FROM app_jobs.jobs AS e
                WHERE e.is_available
                    AND e.run_at <= v_now
                    AND (task_identifiers IS NULL OR e.task_identifier = ANY(task_identifiers))
                ORDER BY e.priority, e.run_at, e.id
                LIMIT g.n
                FOR UPDATE OF e SKIP LOCKED
            ) AS c
        ))
        RETURNING j.*
        )

        SELECT cl.* FROM claimed AS cl ORDER BY cl.priority, cl.run_at, cl.id;
        RETURN;
    END IF;

    -- Lock order, shared by every function here: job rows first, then queue rows in
    -- name order. Locking a queue row before its jobs could deadlock with add_job,
    -- which holds a job row when its trigger counts the job into the queue.
    RETURN QUERY
    WITH task_groups AS (
        -- One group for the tasks without a rate limit (up to the whole batch), one per
        -- rate-limited task with tokens left (up to its tokens), so a limited task
        -- cannot crowd the others out of a batch.
        SELECT NULL::text AS task, batch_size AS cap
        UNION ALL
        SELECT a.key, least(a.value::integer, batch_size)
        FROM jsonb_each_text(coalesce(v_allow, '{}'::jsonb)) AS a
        WHERE a.value::integer > 0
    ),

    locked AS (
        SELECT c.*
        FROM task_groups AS g
        CROSS JOIN LATERAL (
            SELECT j.id, j.queue_name, j.task_identifier, j.priority, j.run_at
            FROM app_jobs.jobs AS j
            WHERE j.is_available
                AND j.run_at <= v_now
                AND (task_identifiers IS NULL OR j.task_identifier = ANY(task_identifiers))
                AND CASE
                    WHEN g.task IS NULL THEN v_allow IS NULL OR NOT v_allow ? j.task_identifier
                    ELSE j.task_identifier = g.task
                END
                AND (
                    j.queue_name IS NULL
                    OR EXISTS (
                        SELECT 1
                        FROM app_jobs.job_queues AS q
                        WHERE q.queue_name = j.queue_name
                            AND q.running_count < app_jobs.queue_concurrency(q.queue_name)
                            -- Among the first free-slot jobs of its queue: never overtake
                            -- an earlier job whose row another session holds for a moment.
                            AND (
                                SELECT count(*)
                                FROM (
                                    SELECT 1
                                    FROM app_jobs.jobs AS e
                                    WHERE e.queue_name = j.queue_name
                                        AND e.is_available
                                        AND e.run_at <= v_now
                                        AND (e.priority, e.run_at, e.id)
                                        < (j.priority, j.run_at, j.id)
                                    LIMIT app_jobs.queue_concurrency(q.queue_name)
                                    - q.running_count
                                ) AS earlier
                            ) < app_jobs.queue_concurrency(q.queue_name) - q.running_count
                    )
                )
            ORDER BY j.priority, j.run_at, j.id
            LIMIT g.cap
            FOR UPDATE OF j SKIP LOCKED
        ) AS c
    ),

    candidates AS (
        SELECT l.id, l.queue_name, l.task_identifier, l.priority, l.run_at
        FROM locked AS l
        ORDER BY l.priority, l.run_at, l.id
        LIMIT batch_size
    ),

    -- The queues that still have free slots once locked (the lock re-reads the row).
    free_queues AS (
        SELECT
            q.queue_name,
            app_jobs.queue_concurrency(q.queue_name) - q.running_count AS free_slots
        FROM app_jobs.job_queues AS q
        WHERE q.queue_name IN (SELECT c.queue_name FROM candidates AS c)
            AND q.running_count < app_jobs.queue_concurrency(q.queue_name)
        ORDER BY q.queue_name
        FOR UPDATE SKIP LOCKED
    ),

    ranked AS (
        SELECT
            c.id,
            c.queue_name,
            c.task_identifier,
            row_number() OVER (
                PARTITION BY c.queue_name ORDER BY c.priority, c.run_at, c.id
            ) AS queue_rank,
            row_number() OVER (
                PARTITION BY c.task_identifier ORDER BY c.priority, c.run_at, c.id
            ) AS task_rank
        FROM candidates AS c
    ),

    chosen AS (
        SELECT r.id, r.queue_name, r.task_identifier
        FROM ranked AS r
        LEFT JOIN free_queues AS fq ON r.queue_name = fq.queue_name
        WHERE (r.queue_name IS NULL OR r.queue_rank <= fq.free_slots)
            AND (
                v_allow IS NULL
                OR NOT v_allow ? r.task_identifier
                OR r.task_rank <= (v_allow ->> r.task_identifier)::integer
            )
    ),

    locked_queues AS (
        UPDATE app_jobs.job_queues AS q
        SET locked_by = worker_id, locked_at = v_now
        WHERE q.queue_name IN (SELECT c.queue_name FROM chosen AS c)
        RETURNING q.queue_name
    ),

    spent_tokens AS (
        UPDATE app_jobs.task_settings AS ts
        SET tokens = ts.tokens - n.started
        FROM (
            SELECT c.task_identifier, count(*) AS started
            FROM chosen AS c
            GROUP BY c.task_identifier
        ) AS n
        WHERE ts.task_identifier = n.task_identifier AND ts.rate_limit IS NOT NULL
        RETURNING ts.task_identifier
    ),

    claimed AS (
        UPDATE app_jobs.jobs AS j
        SET
            attempts = j.attempts + 1, locked_by = worker_id, locked_at = v_now,
            updated_at = v_now, progress = NULL, stage = NULL
        WHERE j.id = ANY(ARRAY(SELECT c.id FROM chosen AS c))
        RETURNING j.*
    )

    -- locked_queues and spent_tokens run to completion although nothing reads them.
    SELECT cl.*
    FROM claimed AS cl
    ORDER BY cl.priority, cl.run_at, cl.id;
END;
$$;

COMMENT ON FUNCTION app_jobs.get_jobs IS
'Claim up to batch_size jobs (one per named queue) for worker_id';

-- from sql/src/125_job_stopped.sql
-- One jobs:stopped event, as JSON text: ids and names only, never payload (at most about
-- 2,200 bytes: names are at most 126 characters, the origin is cut to 256).
CREATE OR REPLACE FUNCTION app_jobs.stopped_event(
    p_id bigint,
    p_task text,
    p_outcome text,
    p_will_retry boolean,
    p_bundle_id bigint,
    p_origin text
) RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
    SELECT format(
        '{"id": %s, "task": %s, "outcome": %s, "will_retry": %s, "bundle_id": %s, '
        '"origin": %s}',
        p_id, to_json(p_task), to_json(p_outcome), to_json(p_will_retry),
        coalesce(p_bundle_id::text, 'null'), coalesce(to_json(left(p_origin, 256))::text, 'null')
    );
$$;

-- Tell listeners on jobs:stopped that a job stopped.
CREATE OR REPLACE FUNCTION app_jobs.notify_job_stopped(
    p_job app_jobs.jobs,
    p_outcome text,
    p_will_retry boolean
) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    PERFORM app_jobs.notify(
        'jobs:stopped',
        app_jobs.stopped_event(
            p_job.id, p_job.task_identifier, p_outcome, p_will_retry, p_job.bundle_id,
            p_job.origin
        )
    );
END;
$$;

-- from sql/src/133_finish_jobs.sql
-- Record a worker's batch of outcomes in one transaction, as parallel arrays: element i
-- of each belongs to outcome i (ids and attempts required; an outcome NULL means failed
-- when there is an error, else completed; a JSON null result or error_data is NULL;
-- PJ016 for arrays of other lengths, a missing id or attempt, an unknown outcome). A
-- claim the worker no longer holds (job id, worker, attempt) is 'fenced'; one it holds
-- whose row (or queue's row) another session has locked right now is 'busy' (left
-- unchanged: deliver it again later); an id listed twice is finished once (its later
-- entries are fenced).
CREATE OR REPLACE FUNCTION app_jobs.finish_jobs(
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
    v_bundles bigint[];
    v_queued boolean;
    v_plain integer[];
    v_other integer[];
    v_done_ids bigint[];
    v_done_tasks text[];
    v_done_origins text[];
    v_item record;
    v_job app_jobs.jobs;
    v_bad bigint;
BEGIN
    PERFORM app_jobs.check_worker_id(worker_id);
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

    -- Lock order shared with get_jobs and add_job: every job row first, then bundle
    -- rows, then queue rows in name order, so a batch cannot deadlock with either.
    -- A claim is held when the job is locked by this worker at the reported attempt. A
    -- row another session holds (an enqueuer's depends_on share lock, an admin) is
    -- skipped, never waited for: one busy job must not hold up the rest of the batch.
    -- One pass also notes how each held claim ends: plain completions (completed, no
    -- bundle, no dependents, no cancel request) go set-based, the others one by one.
    -- (Primary-key lookups, one per outcome: the planner cannot size an array, and a
    -- misjudged join would scan the jobs table. The outcomes' texts and JSON are joined
    -- by their number, never subscripted: a subscript walks such an array from its
    -- start.)
    SELECT
        coalesce(array_agg(h.id ORDER BY h.id), '{}'),
        coalesce(array_agg(h.n ORDER BY h.id), '{}'),
        coalesce(array_agg(h.plain ORDER BY h.id), '{}'),
        coalesce(array_agg(DISTINCT h.bundle_id) FILTER (WHERE h.bundle_id IS NOT NULL), '{}'),
        coalesce(bool_or(h.queue_name IS NOT NULL), FALSE)
    INTO v_held, v_held_at, v_held_plain, v_bundles, v_queued
    FROM (
        SELECT
            j.id,
            o.n,
            j.bundle_id,
            j.queue_name,
            o.outcome = 'completed' AND j.bundle_id IS NULL AND j.cancel_requested_at IS NULL
            AND NOT EXISTS (
                SELECT 1 FROM app_jobs.job_dependencies AS d WHERE d.depends_on = j.id
            ) AS plain
        FROM unnest(v_ids, v_attempts, v_outcomes, v_first)
            WITH ORDINALITY AS o (id, attempt, outcome, first, n)
        CROSS JOIN LATERAL (
            SELECT j.id, j.bundle_id, j.queue_name, j.cancel_requested_at
            FROM app_jobs.jobs AS j
            WHERE j.id = o.id
                -- coalesce keeps the planner on the primary key (not jobs_locked_by_idx).
                AND coalesce(j.locked_by, '') = finish_jobs.worker_id
                AND j.attempts = o.attempt
            FOR UPDATE SKIP LOCKED
        ) AS j
        WHERE o.first
    ) AS h;
    IF cardinality(v_bundles) > 0 THEN
        PERFORM app_jobs.lock_bundles(v_bundles);
    END IF;
    -- Queue rows likewise: one an open enqueue transaction holds (it counts its job in
    -- until it commits) makes that queue's jobs busy, not the whole batch wait.
    IF v_queued THEN
        SELECT
            coalesce(array_agg(h.id ORDER BY h.id), '{}'),
            coalesce(array_agg(h.n ORDER BY h.id), '{}'),
            coalesce(array_agg(h.plain ORDER BY h.id), '{}')
        INTO v_held, v_held_at, v_held_plain
        FROM unnest(v_held, v_held_at, v_held_plain) AS h (id, n, plain)
        CROSS JOIN LATERAL (
            SELECT j.queue_name FROM app_jobs.jobs AS j WHERE j.id = h.id LIMIT 1
        ) AS j
        WHERE j.queue_name IS NULL OR j.queue_name = ANY(ARRAY(
            SELECT q.queue_name FROM app_jobs.job_queues AS q
            WHERE q.queue_name IN (
                SELECT k.queue_name FROM app_jobs.jobs AS k WHERE k.id = ANY(v_held)
            )
            ORDER BY q.queue_name
            FOR UPDATE SKIP LOCKED
        ));
    END IF;
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
    PERFORM app_jobs.notify_chunks('jobs:stopped', ARRAY(
        SELECT app_jobs.stopped_event(e.id, e.task, 'completed', FALSE, NULL, e.origin)
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
        v_job := app_jobs.finish_claim(
            worker_id, v_item.id, v_item.attempt, v_item.outcome, v_item.error,
            v_item.error_data, v_item.result
        );
        job_id := v_item.id;
        attempt := v_item.attempt;
        status := app_jobs.claim_status(v_job, v_item.outcome);
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
CREATE OR REPLACE FUNCTION app_jobs.finish_jobs(
    worker_id text,
    outcomes jsonb
) RETURNS TABLE (job_id bigint, attempt integer, status text)
LANGUAGE plpgsql VOLATILE
SET jit = off
SET plan_cache_mode = force_generic_plan
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
    PERFORM app_jobs.check_worker_id(worker_id);
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

-- from sql/src/180_bundles.sql
-- Lock bundle rows in id order: after job rows, before queue rows (the shared order).
CREATE OR REPLACE FUNCTION app_jobs.lock_bundles(p_bundle_ids bigint[]) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    PERFORM 1 FROM app_jobs.job_bundles AS b
    WHERE b.id = ANY(p_bundle_ids)
    ORDER BY b.id
    FOR UPDATE;
END;
$$;

-- from sql/src/950_security.sql (re-runnable: roles, grants, SECURITY DEFINER, policies)
-- Access control, applied to every object created before it (so it must stay the last
-- source file). Four group roles:
--   pgjobs_enqueue      add jobs, bundles and schedules, cancel jobs and follow them, all
--                       limited to its tenant (jwt.claims.database_id);
--   pgjobs_enqueue_any  the same for every tenant, for a trusted application (a
--                       single-tenant app, a backend that sets db_id itself, a trigger
--                       running as a table owner without claims); no worker or admin rights;
--   pgjobs_worker       what pgjobs-worker calls (claim, finish, heartbeat, reap, tick, ...);
--   pgjobs_admin        every API function, on every tenant.
-- Nobody gets direct writes to the tables: the API functions run as their owner
-- (SECURITY DEFINER with a fixed search_path) and never evaluate code a caller controls
-- (their arguments arrive converted, by the caller, to built-in types). The trigger
-- functions are the exception: they read the caller's row, whose column types (and their
-- casts) the caller may have made, so they run with the caller's rights (SECURITY
-- INVOKER) and hand a finished JSON payload to add_job. Internal helpers are granted to
-- nobody.
-- Row-level security lets pgjobs_enqueue read only its tenant's rows. Everything here is
-- re-runnable: an upgrade script that replaces functions (which resets SECURITY
-- DEFINER) ends by applying this file again.

-- The roles are cluster-wide: created when absent (NOLOGIN, none a member of another),
-- kept when they exist, never dropped (DROP EXTENSION leaves them).
DO $$
DECLARE
    v_role text;
BEGIN
    FOREACH v_role IN ARRAY ARRAY[
        'pgjobs_enqueue', 'pgjobs_enqueue_any', 'pgjobs_worker', 'pgjobs_admin'
    ] LOOP
        CONTINUE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = v_role);
        BEGIN
            EXECUTE format('CREATE ROLE %I NOLOGIN', v_role);
            EXECUTE format(
                'COMMENT ON ROLE %I IS %L', v_role,
                'pgjobs: grant to roles that ' || CASE v_role
                    WHEN 'pgjobs_enqueue' THEN 'enqueue and follow jobs of their tenant'
                    WHEN 'pgjobs_enqueue_any' THEN 'enqueue and follow jobs of every tenant'
                    WHEN 'pgjobs_worker' THEN 'run pgjobs workers'
                    ELSE 'administer pgjobs'
                END
            );
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN
                NULL;  -- another database's install created it just now
            WHEN insufficient_privilege THEN
                RAISE EXCEPTION 'pgjobs needs the role % and may not create it', v_role
                    USING ERRCODE = 'insufficient_privilege',
                    HINT = format(
                        'Have a role with CREATEROLE run CREATE ROLE %I NOLOGIN, then retry.',
                        v_role
                    );
        END;
    END LOOP;
END;
$$;

-- True when the caller may act on rows of tenant p_db_id. The caller is the role in
-- effect where the pgjobs function was called: inside a SECURITY DEFINER function
-- current_user is the owner, so this reads the "role" setting (what SET ROLE chose,
-- which a definer function cannot change) and falls back to session_user without SET
-- ROLE. A caller with the privileges of pgjobs_enqueue_any, pgjobs_worker, pgjobs_admin
-- or the schema's owner (superusers included) may act on every tenant; any other caller
-- only on the tenant of its jwt.claims.database_id setting (none without it, NULL
-- included).
CREATE OR REPLACE FUNCTION app_jobs.tenant_allowed(p_db_id uuid) RETURNS boolean
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    -- (PL/pgSQL, not SQL: its plans are kept for the session, where a SQL function's
    -- query would be planned again in every transaction of every enqueue.)
    v_caller name := CASE pg_catalog.current_setting('role')
        WHEN 'none' THEN session_user
        ELSE pg_catalog.current_setting('role')::name
    END;
BEGIN
    IF pg_catalog.pg_has_role(v_caller, 'pgjobs_enqueue_any', 'USAGE')
        OR pg_catalog.pg_has_role(v_caller, 'pgjobs_worker', 'USAGE')
        OR pg_catalog.pg_has_role(v_caller, 'pgjobs_admin', 'USAGE') THEN
        RETURN TRUE;
    END IF;
    IF pg_catalog.pg_has_role(
        v_caller,
        (SELECT n.nspowner FROM pg_catalog.pg_namespace AS n WHERE n.nspname = 'app_jobs'),
        'USAGE'
    ) THEN
        RETURN TRUE;
    END IF;
    RETURN coalesce(
        p_db_id = nullif(pg_catalog.current_setting('jwt.claims.database_id', TRUE), '')::uuid,
        FALSE
    );
END;
$$;

COMMENT ON FUNCTION app_jobs.tenant_allowed IS
'Internal: may the calling role (SET ROLE, else session_user) act on tenant p_db_id?';

-- Raise PJ030 unless the caller may act on tenant p_db_id (see tenant_allowed).
CREATE OR REPLACE FUNCTION app_jobs.check_tenant(p_db_id uuid) RETURNS void
LANGUAGE plpgsql STABLE
AS $$
BEGIN
    IF NOT app_jobs.tenant_allowed(p_db_id) THEN
        RAISE EXCEPTION 'permission denied for database_id %', coalesce(p_db_id::text, 'NULL')
            USING ERRCODE = 'PJ030',
            HINT = 'Without the privileges of pgjobs_enqueue_any, pgjobs_worker or '
            || 'pgjobs_admin, a role acts only on the tenant named by its '
            || 'jwt.claims.database_id setting.';
    END IF;
END;
$$;

COMMENT ON FUNCTION app_jobs.check_tenant IS
'Internal: PJ030 unless the calling role may act on tenant p_db_id';

-- Functions: nobody but the owner may run anything, except what the list below grants.
-- pgjobs_version() is left alone: it is created after this file (by make), returns a
-- constant and keeps the default EXECUTE for PUBLIC. A function missing from the list
-- (internal helpers, anything added without updating it) is granted to nobody. Every
-- listed function gets a fixed search_path; all but the trigger functions (and their
-- helper) run as their owner. pgjobs_enqueue_any may call what pgjobs_enqueue may.
DO $$
DECLARE
    v_fn record;
BEGIN
    FOR v_fn IN
        SELECT p.oid::regprocedure AS sig
        FROM pg_catalog.pg_proc AS p
        WHERE p.pronamespace = 'app_jobs'::regnamespace AND p.proname <> 'pgjobs_version'
        ORDER BY p.oid
    LOOP
        EXECUTE format(
            'REVOKE ALL ON FUNCTION %s FROM PUBLIC, pgjobs_enqueue, pgjobs_enqueue_any, '
            || 'pgjobs_worker, pgjobs_admin',
            v_fn.sig
        );
    END LOOP;

    FOR v_fn IN
        SELECT l.name, l.definer, g.grantees, p.oid::regprocedure AS sig
        FROM (
            VALUES
            -- name                  enqueue worker admin  definer
            ('add_job', TRUE, FALSE, TRUE, TRUE),
            ('add_jobs', TRUE, FALSE, TRUE, TRUE),
            ('add_bundle', TRUE, FALSE, TRUE, TRUE),
            ('add_scheduled_job', TRUE, FALSE, TRUE, TRUE),
            ('cancel_job', TRUE, FALSE, TRUE, TRUE),
            ('tg_add_job_with_row', TRUE, FALSE, TRUE, FALSE),
            ('tg_add_job_with_row_id', TRUE, FALSE, TRUE, FALSE),
            ('trigger_job_with_fields', TRUE, FALSE, TRUE, FALSE),
            ('enqueue_from_trigger', TRUE, FALSE, TRUE, FALSE),
            ('schedule_next_run', TRUE, TRUE, TRUE, TRUE),
            ('get_job', FALSE, TRUE, TRUE, TRUE),
            ('get_jobs', FALSE, TRUE, TRUE, TRUE),
            ('complete_job', FALSE, TRUE, TRUE, TRUE),
            ('fail_job', FALSE, TRUE, TRUE, TRUE),
            ('finish_jobs', FALSE, TRUE, TRUE, TRUE),
            ('set_progress', FALSE, TRUE, TRUE, TRUE),
            ('register_worker', FALSE, TRUE, TRUE, TRUE),
            ('worker_heartbeat', FALSE, TRUE, TRUE, TRUE),
            ('unregister_worker', FALSE, TRUE, TRUE, TRUE),
            ('reap_dead_workers', FALSE, TRUE, TRUE, TRUE),
            ('release_jobs', FALSE, TRUE, TRUE, TRUE),
            ('run_due_scheduled_jobs', FALSE, TRUE, TRUE, TRUE),
            ('get_scheduled_job', FALSE, TRUE, TRUE, TRUE),
            ('release_scheduled_jobs', FALSE, TRUE, TRUE, TRUE),
            ('run_scheduled_job', FALSE, TRUE, TRUE, TRUE),
            ('purge_job_history', FALSE, TRUE, TRUE, TRUE),
            ('setting', FALSE, TRUE, TRUE, TRUE),
            ('metrics', FALSE, TRUE, TRUE, TRUE),
            ('complete_jobs', FALSE, FALSE, TRUE, TRUE),
            ('permanently_fail_jobs', FALSE, FALSE, TRUE, TRUE),
            ('reschedule_jobs', FALSE, FALSE, TRUE, TRUE),
            ('remove_job', FALSE, FALSE, TRUE, TRUE),
            ('force_unlock_workers', FALSE, FALSE, TRUE, TRUE),
            ('retry_job', FALSE, FALSE, TRUE, TRUE),
            ('delete_job', FALSE, FALSE, TRUE, TRUE),
            ('delete_finished_jobs', FALSE, FALSE, TRUE, TRUE),
            ('waiting_jobs', FALSE, FALSE, TRUE, TRUE),
            ('failed_jobs', FALSE, FALSE, TRUE, TRUE),
            ('set_setting', FALSE, FALSE, TRUE, TRUE),
            ('set_task_settings', FALSE, FALSE, TRUE, TRUE),
            ('set_queue_concurrency', FALSE, FALSE, TRUE, TRUE)
        ) AS l (name, enqueue, worker, admin, definer)
        CROSS JOIN LATERAL (
            SELECT array_to_string(ARRAY[
                CASE WHEN l.enqueue THEN 'pgjobs_enqueue, pgjobs_enqueue_any' END,
                CASE WHEN l.worker THEN 'pgjobs_worker' END,
                CASE WHEN l.admin THEN 'pgjobs_admin' END
            ], ', ') AS grantees
        ) AS g
        LEFT JOIN pg_catalog.pg_proc AS p
            ON p.proname = l.name AND p.pronamespace = 'app_jobs'::regnamespace
        ORDER BY l.name, p.oid
    LOOP
        IF v_fn.sig IS NULL THEN
            -- Renamed or dropped without updating the list (tests_sql/200_privileges fails).
            RAISE WARNING 'pgjobs: app_jobs.% is granted in 950_security.sql but does not exist',
                v_fn.name;
            CONTINUE;
        END IF;
        EXECUTE format(
            'ALTER FUNCTION %s %s SET search_path = pg_catalog, app_jobs, pg_temp',
            v_fn.sig,
            CASE WHEN v_fn.definer THEN 'SECURITY DEFINER' ELSE 'SECURITY INVOKER' END
        );
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %s', v_fn.sig, v_fn.grantees);
    END LOOP;
END;
$$;

-- Schema, tables, views, sequences: no rights for PUBLIC; the three roles may look up
-- objects in the schema; nobody but the owner writes.
REVOKE ALL ON SCHEMA app_jobs FROM PUBLIC;  -- noqa: CP02
GRANT USAGE ON SCHEMA app_jobs TO pgjobs_enqueue, pgjobs_enqueue_any, pgjobs_worker,
pgjobs_admin;
REVOKE ALL ON ALL TABLES IN SCHEMA app_jobs
FROM PUBLIC, pgjobs_enqueue, pgjobs_enqueue_any, pgjobs_worker, pgjobs_admin;  -- noqa: CP02
REVOKE ALL ON ALL SEQUENCES IN SCHEMA app_jobs
FROM PUBLIC, pgjobs_enqueue, pgjobs_enqueue_any, pgjobs_worker, pgjobs_admin;  -- noqa: CP02

-- Workers and admins read everything (tables and views).
GRANT SELECT ON ALL TABLES IN SCHEMA app_jobs TO pgjobs_worker, pgjobs_admin;

-- Enqueuers read the tenant-scoped tables; row-level security below picks their rows.
GRANT SELECT ON app_jobs.jobs, app_jobs.job_history, app_jobs.job_bundles,
app_jobs.scheduled_jobs TO pgjobs_enqueue, pgjobs_enqueue_any;

-- Row-level security: pgjobs_enqueue sees the rows of its jwt.claims.database_id (none
-- without one); pgjobs_enqueue_any, pgjobs_worker and pgjobs_admin see every row. The
-- owner (whom the API functions run as) is not subject to it; another role granted
-- SELECT directly sees nothing until a policy names it.
DO $$
DECLARE
    v_table text;
BEGIN
    FOREACH v_table IN ARRAY ARRAY['jobs', 'job_history', 'job_bundles', 'scheduled_jobs'] LOOP
        EXECUTE format('ALTER TABLE app_jobs.%I ENABLE ROW LEVEL SECURITY', v_table);
        EXECUTE format('DROP POLICY IF EXISTS enqueue_own_tenant ON app_jobs.%I', v_table);
        EXECUTE format(
            'CREATE POLICY enqueue_own_tenant ON app_jobs.%I FOR SELECT TO pgjobs_enqueue '
            || 'USING (database_id = nullif(current_setting(''jwt.claims.database_id'', TRUE), '
            || ''''')::uuid)',
            v_table
        );
        EXECUTE format('DROP POLICY IF EXISTS worker_admin_all ON app_jobs.%I', v_table);
        EXECUTE format(
            'CREATE POLICY worker_admin_all ON app_jobs.%I FOR SELECT '
            || 'TO pgjobs_enqueue_any, pgjobs_worker, pgjobs_admin USING (TRUE)',
            v_table
        );
    END LOOP;
END;
$$;

-- job_status reads jobs and job_history with the caller's rights (so their row-level
-- security applies) where the server supports it (PostgreSQL 15); before that a view
-- runs as its owner, so pgjobs_enqueue is not given it.
DO $$
BEGIN
    IF pg_catalog.current_setting('server_version_num')::integer >= 150000 THEN
        EXECUTE 'ALTER VIEW app_jobs.job_status SET (security_invoker = TRUE)';
        EXECUTE 'GRANT SELECT ON app_jobs.job_status TO pgjobs_enqueue, pgjobs_enqueue_any';
    END IF;
END;
$$;

-- The version of the app_jobs objects, for installs without CREATE EXTENSION.
CREATE OR REPLACE FUNCTION app_jobs.pgjobs_version() RETURNS text
LANGUAGE sql IMMUTABLE
AS $$ SELECT '0.6.0'::text $$;
