-- pgjobs 0.9.0 -> 0.10.0: beyond one database (issue 16): tenant fairness (the
-- tenant_fairness setting, a per-tenant claim index) and job_history partitioned by
-- finish time (UTC days; retention drops whole days). See CHANGELOG.md, 0.10.0.
-- Written by hand: only what changed, the functions as in sql/src.

-- The tenant_fairness setting.
ALTER TABLE app_jobs.settings DROP CONSTRAINT settings_name_check;
ALTER TABLE app_jobs.settings ADD CONSTRAINT settings_name_check CHECK (
    name IN (
        'history', 'history_retention', 'max_payload_bytes', 'notify_max_queue_usage',
        'job_expiry', 'tenant_fairness'
    )
);
COMMENT ON TABLE app_jobs.settings IS
'history (on/off, default on), history_retention (interval, default 7 days), '
'max_payload_bytes (1024 to 1073741824, default 262144), notify_max_queue_usage (0 to 1, '
'default 0.5), job_expiry (how long the claim of a worker that never registered holds, '
'default 4 hours), tenant_fairness (on/off, default off: claims take turns between '
'tenants)';

-- Available jobs by tenant in claim order (built while enqueues wait: one pass).
CREATE INDEX jobs_tenant_claim_idx ON app_jobs.jobs (database_id, priority, run_at, id)
WHERE is_available;

-- job_history becomes partitioned: the old table is renamed, its rows copied into the
-- new one (into its default partition: the first purge_job_history, which every worker
-- runs when it starts, moves the days kept into day partitions), then dropped. Its
-- sequence is kept (ids go on where they were) and handed to the new table's id.
ALTER TABLE app_jobs.job_history RENAME TO job_history_old;
ALTER TABLE app_jobs.job_history_old RENAME CONSTRAINT job_history_pkey TO job_history_old_pkey;
ALTER TABLE app_jobs.job_history_old
RENAME CONSTRAINT job_history_status_check TO job_history_old_status_check;
ALTER INDEX app_jobs.job_history_finished_at_idx RENAME TO job_history_old_finished_at_idx;
ALTER INDEX app_jobs.job_history_job_id_idx RENAME TO job_history_old_job_id_idx;
ALTER SEQUENCE app_jobs.job_history_id_seq RENAME TO job_history_old_id_seq;

CREATE TABLE app_jobs.job_history (
    id bigserial,
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
    origin text,
    bundle_id bigint,
    CONSTRAINT job_history_pkey PRIMARY KEY (id, finished_at),
    CONSTRAINT job_history_status_check CHECK (
        status IN ('completed', 'failed', 'cancelled')
    )
) PARTITION BY RANGE (finished_at);
COMMENT ON TABLE app_jobs.job_history IS
'One row per job that reached a final state, partitioned by finished_at (UTC days); '
'purged by purge_job_history';
COMMENT ON COLUMN app_jobs.job_history.result IS 'What the handler returned (completed jobs)';
COMMENT ON COLUMN app_jobs.job_history.error_data IS
'Structured detail of the last error (exception type, traceback)';
CREATE INDEX job_history_finished_at_idx ON app_jobs.job_history (finished_at);
CREATE INDEX job_history_job_id_idx ON app_jobs.job_history (job_id);
CREATE TABLE app_jobs.job_history_default PARTITION OF app_jobs.job_history DEFAULT;

INSERT INTO app_jobs.job_history
SELECT * FROM app_jobs.job_history_old;
SELECT setval(
    'app_jobs.job_history_id_seq',
    (SELECT last_value FROM app_jobs.job_history_old_id_seq),
    (SELECT is_called FROM app_jobs.job_history_old_id_seq)
);
-- The views that read job_history follow the table they were created on: made again.
DROP VIEW app_jobs.job_status;
DROP VIEW app_jobs.queue_stats;
-- Out of the extension first, so pg_dump's list of its data tables forgets them too.
ALTER EXTENSION pgjobs DROP SEQUENCE app_jobs.job_history_old_id_seq;
ALTER EXTENSION pgjobs DROP TABLE app_jobs.job_history_old;
DROP TABLE app_jobs.job_history_old;

-- from sql/src/170_job_status_view.sql (re-runnable)
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
        WHEN j.blocked_by > 0 THEN 'blocked'
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
    NULL::timestamptz AS finished_at,
    j.origin,
    j.bundle_id
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
        h.finished_at,
        h.origin,
        h.bundle_id
    FROM app_jobs.job_history AS h
    LEFT JOIN app_jobs.jobs AS live ON h.job_id = live.id
    WHERE live.id IS NULL
    ORDER BY h.job_id ASC, h.finished_at DESC, h.id DESC
) AS f;

COMMENT ON VIEW app_jobs.job_status IS
'Each job once: waiting, scheduled, blocked, running, retrying, failed, cancelled, completed';

-- from sql/src/800_queue_stats_view.sql (re-runnable)
-- Per task and queue: live jobs by status (as in job_status), how long the longest-due
-- runnable job has waited, and what finished in the last 5 minutes (from job_history; 0
-- when history is off). One pass over jobs and one finished_at index range of history.
CREATE VIEW app_jobs.queue_stats AS
SELECT
    s.task_identifier,
    s.queue_name,
    count(*) FILTER (WHERE s.state = 'waiting') AS waiting,
    count(*) FILTER (WHERE s.state = 'scheduled') AS scheduled,
    count(*) FILTER (WHERE s.state = 'running') AS running,
    count(*) FILTER (WHERE s.state = 'retrying') AS retrying,
    count(*) FILTER (WHERE s.state = 'failed') AS failed,
    count(*) FILTER (WHERE s.state = 'blocked') AS blocked,
    now() - min(s.due_at) AS oldest_waiting,
    count(*) FILTER (WHERE s.state = 'completed_5m') AS completed_last_5m,
    count(*) FILTER (WHERE s.state = 'failed_5m') AS failed_last_5m,
    count(*) FILTER (WHERE s.state = 'cancelled_5m') AS cancelled_last_5m,
    round(count(*) FILTER (WHERE s.state = 'completed_5m') / 5.0, 2) AS completed_per_minute,
    round(count(*) FILTER (WHERE s.state = 'failed_5m') / 5.0, 2) AS failed_per_minute
FROM (
    SELECT
        j.task_identifier,
        j.queue_name,
        CASE
            WHEN j.locked_at IS NOT NULL THEN 'running'
            WHEN j.attempts >= j.max_attempts THEN 'failed'
            WHEN j.attempts > 0 OR j.last_error IS NOT NULL THEN 'retrying'
            WHEN j.blocked_by > 0 THEN 'blocked'
            WHEN j.run_at > now() THEN 'scheduled'
            ELSE 'waiting'
        END AS state,
        -- Runnable now (waiting, or retrying and due): how long since it became due.
        CASE WHEN j.is_available AND j.run_at <= now() THEN j.run_at END AS due_at
    FROM app_jobs.jobs AS j
    UNION ALL
    SELECT
        h.task_identifier,
        h.queue_name,
        h.status || '_5m' AS state,
        NULL::timestamptz AS due_at
    FROM app_jobs.job_history AS h
    WHERE h.finished_at >= now() - interval '5 minutes'
) AS s
GROUP BY s.task_identifier, s.queue_name;

COMMENT ON VIEW app_jobs.queue_stats IS
'Per task and queue: jobs by status, oldest_waiting, what finished in the last 5 minutes';

-- from sql/src/102_settings.sql
-- The value of a setting, or its default when it was never set.
CREATE OR REPLACE FUNCTION app_jobs.setting(p_name text) RETURNS text
LANGUAGE plpgsql STABLE
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
BEGIN
    RETURN coalesce(
        (SELECT s.value FROM app_jobs.settings AS s WHERE s.name = p_name),
        CASE p_name
            WHEN 'history' THEN 'on'
            WHEN 'history_retention' THEN '7 days'
            WHEN 'max_payload_bytes' THEN '262144'
            WHEN 'notify_max_queue_usage' THEN '0.5'
            WHEN 'job_expiry' THEN '4 hours'
            WHEN 'tenant_fairness' THEN 'off'
        END
    );
END;
$$;

-- Change a setting, refusing unknown names and values that do not parse (PJ014).
CREATE OR REPLACE FUNCTION app_jobs.set_setting(name text, value text) RETURNS text
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
DECLARE
    v_value text := value;
BEGIN
    IF name IN ('history', 'tenant_fairness') AND lower(v_value) IN ('on', 'off') THEN
        v_value := lower(v_value);
    ELSIF name = 'history_retention' AND v_value IS NOT NULL THEN
        BEGIN
            IF v_value::interval < interval '0' THEN
                RAISE EXCEPTION USING ERRCODE = 'invalid_datetime_format';
            END IF;
            -- Stored the way PostgreSQL reads it ('$1', say, is 1 second to it).
            v_value := v_value::interval::text;
        EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow
            OR interval_field_overflow THEN
            RAISE EXCEPTION 'history_retention must be an interval of zero or more, got %',
                to_json(v_value)
                USING ERRCODE = 'PJ014';
        END;
    ELSIF name = 'job_expiry' AND v_value IS NOT NULL THEN
        BEGIN
            PERFORM app_jobs._check_job_expiry(v_value::interval);
            v_value := v_value::interval::text;
        EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow
            OR interval_field_overflow OR SQLSTATE 'PJ040' THEN
            RAISE EXCEPTION 'job_expiry must be a positive interval of at most 100 years, got %',
                to_json(v_value)
                USING ERRCODE = 'PJ014';
        END;
    ELSIF name = 'max_payload_bytes' THEN
        IF (CASE
            WHEN v_value !~ '^[ \t\n\r]*\+?[0-9]{1,18}[ \t\n\r]*$' THEN TRUE
            ELSE v_value::bigint NOT BETWEEN 1024 AND 1073741824
        END) IS NOT FALSE THEN
            RAISE EXCEPTION 'max_payload_bytes must be 1024 to 1073741824 bytes, got %',
                coalesce(to_json(v_value)::text, 'NULL')
                USING ERRCODE = 'PJ014';
        END IF;
        v_value := v_value::bigint::text;
    ELSIF name = 'notify_max_queue_usage' THEN
        IF (CASE
            WHEN v_value !~ '^[ \t\n\r]*(0|1)?(\.[0-9]{1,6})?[ \t\n\r]*$' THEN TRUE
            WHEN btrim(v_value, E' \t\n\r') IN ('', '.') THEN TRUE
            ELSE v_value::numeric NOT BETWEEN 0 AND 1
        END) IS NOT FALSE THEN
            RAISE EXCEPTION 'notify_max_queue_usage must be a fraction from 0 to 1, got %',
                coalesce(to_json(v_value)::text, 'NULL')
                USING ERRCODE = 'PJ014';
        END IF;
        v_value := v_value::numeric::text;
    ELSE
        -- Values are echoed as JSON strings: control characters cannot reach the log raw.
        RAISE EXCEPTION 'unknown setting % or bad value %',
            coalesce(to_json(name)::text, 'NULL'), coalesce(to_json(v_value)::text, 'NULL')
            USING HINT = 'history and tenant_fairness take on or off; '
            || 'history_retention an interval; '
            || 'max_payload_bytes a number of bytes (1024 to 1073741824); '
            || 'notify_max_queue_usage a fraction (0 to 1); job_expiry an interval',
            ERRCODE = 'PJ014';
    END IF;
    INSERT INTO app_jobs.settings AS s (name, value)
    VALUES (set_setting.name, v_value)
    ON CONFLICT ON CONSTRAINT settings_pkey DO UPDATE SET value = excluded.value;
    RETURN v_value;
END;
$$;

COMMENT ON FUNCTION app_jobs.set_setting IS
'Set history (on/off), history_retention (interval), max_payload_bytes (1024 to '
'1073741824), notify_max_queue_usage (0 to 1), job_expiry (interval) or tenant_fairness '
'(on/off); PJ014 on anything else';

-- from sql/src/119_fair_candidates.sql
-- With tenant_fairness on: the ids of up to p_n claimable jobs of each tenant that has
-- any (database_id; NULL is a tenant too) in the order a claim takes them: priority
-- first, then taking turns (each tenant's 1st job, then each tenant's 2nd, ...), then
-- the tenant with fewer running jobs, then run_at and id. Each tenant gives twice its
-- share of p_n (enough for claimers side by side that skip each other's rows; with many
-- tenants a tenant's 2nd or 3rd job is never reached). Claimable as get_jobs sees it:
-- available, due, of p_task_identifiers (NULL: any), not of a task p_allow gives no
-- token, not in a queue that is full. The rows are not locked: get_jobs locks the first
-- free ones in this order.
CREATE OR REPLACE FUNCTION app_jobs._fair_candidates(
    p_now timestamptz,
    p_task_identifiers text[],
    p_allow jsonb,
    p_n integer
) RETURNS bigint[]
LANGUAGE plpgsql STABLE
AS $$
BEGIN
    RETURN ARRAY(
        -- The tenants with available jobs, one index probe each (a loose index scan of
        -- jobs_tenant_claim_idx: the next database_id after the previous one).
        WITH RECURSIVE tenants AS (
            (
                SELECT e.database_id
                FROM app_jobs.jobs AS e
                WHERE e.is_available AND e.database_id IS NOT NULL
                ORDER BY e.database_id
                LIMIT 1
            )
            UNION ALL
            SELECT (
                SELECT e.database_id
                FROM app_jobs.jobs AS e
                WHERE e.is_available AND e.database_id > t.database_id
                ORDER BY e.database_id
                LIMIT 1
            )
            FROM tenants AS t
            WHERE t.database_id IS NOT NULL
        ),

        share AS (
            SELECT least(p_n, 2 * p_n / greatest(count(*), 1) + 1) AS n FROM tenants
        ),

        heads AS (
            SELECT h.*
            FROM tenants AS t
            CROSS JOIN share AS s
            CROSS JOIN LATERAL (
                SELECT e.id, e.database_id, e.priority, e.run_at
                FROM app_jobs.jobs AS e
                WHERE e.database_id = t.database_id
                    AND e.is_available
                    AND e.run_at <= p_now
                    AND (p_task_identifiers IS NULL OR e.task_identifier = ANY(p_task_identifiers))
                    AND coalesce((p_allow ->> e.task_identifier)::integer, 1) > 0
                    AND (e.queue_name IS NULL OR EXISTS (
                        SELECT 1 FROM app_jobs.job_queues AS q
                        WHERE q.queue_name = e.queue_name
                            AND q.running_count < app_jobs._queue_concurrency(q.queue_name)
                    ))
                ORDER BY e.priority, e.run_at, e.id
                LIMIT s.n
            ) AS h
            WHERE t.database_id IS NOT NULL
            UNION ALL
            (
                SELECT e.id, e.database_id, e.priority, e.run_at
                FROM app_jobs.jobs AS e
                WHERE e.database_id IS NULL
                    AND e.is_available
                    AND e.run_at <= p_now
                    AND (p_task_identifiers IS NULL OR e.task_identifier = ANY(p_task_identifiers))
                    AND coalesce((p_allow ->> e.task_identifier)::integer, 1) > 0
                    AND (e.queue_name IS NULL OR EXISTS (
                        SELECT 1 FROM app_jobs.job_queues AS q
                        WHERE q.queue_name = e.queue_name
                            AND q.running_count < app_jobs._queue_concurrency(q.queue_name)
                    ))
                ORDER BY e.priority, e.run_at, e.id
                LIMIT (SELECT s.n FROM share AS s)
            )
        ),

        -- Running jobs per tenant (few: the partial index on locked_at finds them).
        running AS (
            SELECT r.database_id, count(*) AS n
            FROM app_jobs.jobs AS r
            WHERE r.locked_at IS NOT NULL
            GROUP BY r.database_id
        ),

        turns AS (
            SELECT
                h.id,
                h.priority,
                h.run_at,
                coalesce(r.n, 0) AS running,
                row_number() OVER (
                    PARTITION BY h.database_id, h.priority ORDER BY h.run_at, h.id
                ) AS turn
            FROM heads AS h
            LEFT JOIN running AS r ON h.database_id IS NOT DISTINCT FROM r.database_id
        )

        SELECT t.id FROM turns AS t
        ORDER BY t.priority, t.turn, t.running, t.run_at, t.id
    );
END;
$$;

-- from sql/src/120_get_jobs.sql
-- Claim up to batch_size available jobs for a worker, within each named queue's
-- concurrency (one at a time unless queue_settings says more) and each task's rate limit.
-- job_expiry NULL (the default) means the job_expiry setting. With the tenant_fairness
-- setting on, tenants take turns (app_jobs._fair_candidates gives the order).
CREATE OR REPLACE FUNCTION app_jobs.get_jobs(
    worker_id text,
    task_identifiers text[] DEFAULT NULL,
    job_expiry interval DEFAULT NULL,
    batch_size integer DEFAULT 1
) RETURNS SETOF app_jobs.jobs
LANGUAGE plpgsql VOLATILE
-- JIT only slows these short queries down (and the planner's row guesses invite it).
SET jit = off
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
DECLARE
    v_now timestamptz := now();
    v_expiry interval := app_jobs._job_expiry(job_expiry);
    v_expired timestamptz;
    v_clock timestamptz := clock_timestamp();
    v_bucket record;
    v_tokens double precision;
    v_allow jsonb;
    v_fair bigint[];
BEGIN
    PERFORM app_jobs._check_worker_id(worker_id);
    PERFORM app_jobs._check_job_expiry(job_expiry);
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
        PERFORM app_jobs._end_cancelled_claims(ARRAY(
            SELECT e.id FROM app_jobs.jobs AS e
            WHERE e.locked_at < v_expired AND e.cancel_requested_at IS NOT NULL
                AND app_jobs._lock_is_free(e.locked_at, e.locked_by, v_expiry)
            ORDER BY e.id
            FOR UPDATE SKIP LOCKED
        ));
        UPDATE app_jobs.jobs AS j
        SET locked_at = NULL, locked_by = NULL
        WHERE j.id IN (
            SELECT e.id FROM app_jobs.jobs AS e
            WHERE e.locked_at < v_expired AND e.attempts < e.max_attempts
                AND app_jobs._lock_is_free(e.locked_at, e.locked_by, v_expiry)
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

    -- Tenant fairness: the candidates, in the order they are to be taken (several per
    -- tenant, so that claimers side by side, skipping each other's locks, find enough).
    IF app_jobs.setting('tenant_fairness') = 'on' THEN
        v_fair := app_jobs._fair_candidates(v_now, task_identifiers, v_allow, batch_size);
    END IF;

    IF v_fair IS NOT NULL AND v_allow IS NULL AND NOT EXISTS (SELECT 1 FROM app_jobs.job_queues) THEN
        -- The common case below, in the fair order.
        RETURN QUERY
        WITH claimed AS (
        UPDATE app_jobs.jobs AS j
        SET
            attempts = j.attempts + 1, locked_by = worker_id, locked_at = v_now,
            updated_at = v_now, progress = NULL, stage = NULL
        WHERE j.id = ANY(ARRAY(
            SELECT e.id
            FROM unnest(v_fair) WITH ORDINALITY AS f (id, turn)
            INNER JOIN app_jobs.jobs AS e ON f.id = e.id
            WHERE e.is_available AND e.run_at <= v_now AND e.queue_name IS NULL
            ORDER BY f.turn
            LIMIT batch_size
            FOR UPDATE OF e SKIP LOCKED
        ))
        RETURNING j.*
        )

        SELECT cl.* FROM claimed AS cl ORDER BY array_position(v_fair, cl.id);
        RETURN;
    END IF;

    -- The common case: no rate limit applies and no job is in a named queue (no queue has
    -- a row). Then the claim is the plain ordered SKIP LOCKED pick, of jobs without a
    -- queue only: a queued job committed after the check above is left to the next
    -- claim, which locks its queue (taking it here would skip the queue's concurrency and
    -- lock its queue row out of name order, a deadlock with add_job).
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
                    AND e.queue_name IS NULL
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
                            AND q.running_count < app_jobs._queue_concurrency(q.queue_name)
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
                                    LIMIT app_jobs._queue_concurrency(q.queue_name)
                                    - q.running_count
                                ) AS earlier
                            ) < app_jobs._queue_concurrency(q.queue_name) - q.running_count
                    )
                )
                AND (v_fair IS NULL OR j.id = ANY(v_fair))
            -- (With fairness off the first key is NULL, a constant the index order meets.)
            ORDER BY
                CASE WHEN v_fair IS NOT NULL THEN array_position(v_fair, j.id) END,
                j.priority, j.run_at, j.id
            LIMIT g.cap
            FOR UPDATE OF j SKIP LOCKED
        ) AS c
    ),

    candidates AS (
        SELECT l.id, l.queue_name, l.task_identifier, l.priority, l.run_at
        FROM locked AS l
        ORDER BY
            CASE WHEN v_fair IS NOT NULL THEN array_position(v_fair, l.id) END,
            l.priority, l.run_at, l.id
        LIMIT batch_size
    ),

    -- The queues that still have free slots once locked (the lock re-reads the row).
    free_queues AS (
        SELECT
            q.queue_name,
            app_jobs._queue_concurrency(q.queue_name) - q.running_count AS free_slots
        FROM app_jobs.job_queues AS q
        WHERE q.queue_name IN (SELECT c.queue_name FROM candidates AS c)
            AND q.running_count < app_jobs._queue_concurrency(q.queue_name)
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
    ORDER BY
        CASE WHEN v_fair IS NOT NULL THEN array_position(v_fair, cl.id) END,
        cl.priority, cl.run_at, cl.id;
END;
$$;

COMMENT ON FUNCTION app_jobs.get_jobs IS
'Claim up to batch_size jobs (one per named queue) for worker_id';

-- from sql/src/160_job_history.sql
-- Make the day partitions of job_history (UTC days, job_history_pYYYYMMDD) for today and
-- the next p_days_ahead days, and for each day within history_retention that has rows in
-- job_history_default (moved into their new partition); returns how many it made.
CREATE OR REPLACE FUNCTION app_jobs._ensure_history_partitions(
    p_days_ahead integer DEFAULT 3
) RETURNS integer
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_today date := (now() AT TIME ZONE 'UTC')::date;
    v_cutoff timestamptz := now() - app_jobs.setting('history_retention')::interval;
    v_day date;
    v_name text;
    v_from timestamptz;
    v_to timestamptz;
    v_made integer := 0;
    v_days date[];
    v_lock_timeout text := current_setting('lock_timeout');
BEGIN
    -- One maker at a time: workers run this side by side.
    PERFORM pg_catalog.pg_advisory_xact_lock(
        pg_catalog.hashtext('app_jobs._ensure_history_partitions')
    );
    v_days := ARRAY(
        SELECT x.day FROM (
            SELECT v_today + d AS day FROM generate_series(0, p_days_ahead) AS d
            UNION
            SELECT DISTINCT (h.finished_at AT TIME ZONE 'UTC')::date
            FROM app_jobs.job_history_default AS h
            WHERE h.finished_at >= v_cutoff
        ) AS x
        WHERE to_regclass(format('app_jobs.%I', 'job_history_p' || to_char(x.day, 'YYYYMMDD')))
            IS NULL
        ORDER BY 1
    );
    IF cardinality(v_days) = 0 THEN
        RETURN 0;
    END IF;
    -- Readers lock job_history, then its partitions; making a partition locks the parent
    -- and the default partition exclusively. Take the parent first (LOCK TABLE takes its
    -- partitions after it), or a reader and this deadlock. Wait a second at most: rows
    -- land in the default partition meanwhile, and the next purge makes the days.
    BEGIN
        PERFORM set_config('lock_timeout', '1s', TRUE);
        LOCK TABLE app_jobs.job_history IN ACCESS EXCLUSIVE MODE;
    EXCEPTION WHEN lock_not_available THEN
        RAISE WARNING 'job_history partitions not made (job_history is busy), next time';
        RETURN 0;
    END;
    PERFORM set_config('lock_timeout', v_lock_timeout, TRUE);
    FOREACH v_day IN ARRAY v_days LOOP
        v_name := 'job_history_p' || to_char(v_day, 'YYYYMMDD');
        v_from := v_day::timestamp AT TIME ZONE 'UTC';
        v_to := (v_day + 1)::timestamp AT TIME ZONE 'UTC';
        IF EXISTS (
            SELECT 1 FROM app_jobs.job_history_default AS h
            WHERE h.finished_at >= v_from AND h.finished_at < v_to
        ) THEN
            -- The default partition may not keep rows a new partition covers: fill the
            -- day's table from it, then attach.
            EXECUTE format(
                'CREATE TABLE app_jobs.%I (LIKE app_jobs.job_history INCLUDING DEFAULTS '
                || 'INCLUDING CONSTRAINTS)',
                v_name
            );
            EXECUTE format(
                'WITH moved AS (DELETE FROM app_jobs.job_history_default AS h '
                || 'WHERE h.finished_at >= $1 AND h.finished_at < $2 RETURNING h.*) '
                || 'INSERT INTO app_jobs.%I SELECT * FROM moved',
                v_name
            ) USING v_from, v_to;
            EXECUTE format(
                'ALTER TABLE app_jobs.job_history ATTACH PARTITION app_jobs.%I '
                || 'FOR VALUES FROM (%L) TO (%L)',
                v_name, v_from, v_to
            );
        ELSE
            EXECUTE format(
                'CREATE TABLE app_jobs.%I PARTITION OF app_jobs.job_history '
                || 'FOR VALUES FROM (%L) TO (%L)',
                v_name, v_from, v_to
            );
        END IF;
        -- Read access as for every table (950_security.sql); no RLS on a partition: the
        -- enqueue roles, whom the parent's policies filter, get no grant on it.
        EXECUTE format('GRANT SELECT ON app_jobs.%I TO pgjobs_worker, pgjobs_admin', v_name);
        v_made := v_made + 1;
    END LOOP;
    RETURN v_made;
END;
$$;

COMMENT ON FUNCTION app_jobs._ensure_history_partitions IS
'Make job_history''s day partitions ahead (and for days kept in its default partition)';

-- Drop history older than the history_retention setting; returns how many rows went.
-- Whole day partitions older than the cutoff are dropped; only the day that straddles
-- it (and the default partition) are deleted from. Makes the partitions ahead first.
CREATE OR REPLACE FUNCTION app_jobs.purge_job_history() RETURNS integer
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
DECLARE
    v_cutoff timestamptz := now() - app_jobs.setting('history_retention')::interval;
    v_lock_timeout text := current_setting('lock_timeout');
    v_part text;
    v_rows bigint;
    v_count bigint := 0;
BEGIN
    PERFORM app_jobs._ensure_history_partitions();
    -- Rows deleted one by one: those of the day that straddles the cutoff (partition
    -- pruning leaves only its partition and the default one) and older ones in the
    -- default partition. Before any drop, which locks job_history until commit.
    DELETE FROM app_jobs.job_history AS h
    WHERE h.finished_at < v_cutoff
        AND h.finished_at >= date_trunc('day', v_cutoff AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    GET DIAGNOSTICS v_rows = ROW_COUNT;
    v_count := v_rows;
    DELETE FROM app_jobs.job_history_default AS h WHERE h.finished_at < v_cutoff;
    GET DIAGNOSTICS v_rows = ROW_COUNT;
    v_count := v_count + v_rows;
    FOR v_part IN
        SELECT c.relname
        FROM pg_catalog.pg_inherits AS i
        INNER JOIN pg_catalog.pg_class AS c ON i.inhrelid = c.oid
        WHERE i.inhparent = 'app_jobs.job_history'::regclass
            AND c.relname ~ '^job_history_p[0-9]{8}$'
            AND (to_date(substr(c.relname, 14), 'YYYYMMDD') + 1)::timestamp
            AT TIME ZONE 'UTC' <= v_cutoff
        ORDER BY c.relname
    LOOP
        -- Dropping a partition locks job_history for a moment: wait for readers at most
        -- a second (a long dashboard query would otherwise hold up every completion
        -- queued behind the drop); a day not dropped now is dropped next time.
        BEGIN
            PERFORM set_config('lock_timeout', '1s', TRUE);
            LOCK TABLE app_jobs.job_history IN ACCESS EXCLUSIVE MODE;
            EXECUTE format('SELECT count(*) FROM app_jobs.%I', v_part) INTO v_rows;
            EXECUTE format('DROP TABLE app_jobs.%I', v_part);
            v_count := v_count + v_rows;
        EXCEPTION WHEN lock_not_available THEN
            RAISE WARNING 'purge_job_history: % not dropped (job_history is busy), next time',
                v_part;
        END;
        PERFORM set_config('lock_timeout', v_lock_timeout, TRUE);
    END LOOP;
    RETURN least(v_count, 2147483647)::integer;
END;
$$;

COMMENT ON FUNCTION app_jobs.purge_job_history IS
'Drop job_history day partitions (and delete rows) older than history_retention; makes '
'the partitions ahead (workers call this periodically)';

-- finish_jobs skips its busy claims with an array instead of joining the whole batch
-- with the locked ones (a nested loop over both in 0.8.0 and 0.9.0: about 3x its time).
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
CREATE OR REPLACE FUNCTION app_jobs.finish_jobs(
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

-- from sql/src/900_config_dump.sql (re-runnable)
-- Have pg_dump keep queue contents when the schema is an extension's.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'pgjobs') THEN
        PERFORM pg_catalog.pg_extension_config_dump('app_jobs.jobs', '');
        PERFORM pg_catalog.pg_extension_config_dump('app_jobs.jobs_id_seq', '');
        PERFORM pg_catalog.pg_extension_config_dump('app_jobs.job_queues', '');
        PERFORM pg_catalog.pg_extension_config_dump('app_jobs.scheduled_jobs', '');
        PERFORM pg_catalog.pg_extension_config_dump(
            'app_jobs.scheduled_jobs_id_seq', ''
        );
        PERFORM pg_catalog.pg_extension_config_dump('app_jobs.workers', '');
        PERFORM pg_catalog.pg_extension_config_dump('app_jobs.job_history', '');
        PERFORM pg_catalog.pg_extension_config_dump('app_jobs.job_history_default', '');
        PERFORM pg_catalog.pg_extension_config_dump('app_jobs.job_history_id_seq', '');
        PERFORM pg_catalog.pg_extension_config_dump('app_jobs.settings', '');
        PERFORM pg_catalog.pg_extension_config_dump('app_jobs.job_dependencies', '');
        PERFORM pg_catalog.pg_extension_config_dump('app_jobs.job_bundles', '');
        PERFORM pg_catalog.pg_extension_config_dump('app_jobs.job_bundles_id_seq', '');
        PERFORM pg_catalog.pg_extension_config_dump('app_jobs.task_settings', '');
        PERFORM pg_catalog.pg_extension_config_dump('app_jobs.queue_settings', '');
    END IF;
END;
$$;

-- from sql/src/950_security.sql (re-runnable)
-- Access control, applied to every object created before it (so it must stay the last
-- source file). Five group roles:
--   pgjobs_enqueue      add jobs, bundles and schedules, cancel jobs and follow them, all
--                       limited to its tenant (jwt.claims.database_id);
--   pgjobs_enqueue_any  the same for every tenant, for a trusted application (a
--                       single-tenant app, a backend that sets db_id itself, a trigger
--                       running as a table owner without claims); no worker or admin rights;
--   pgjobs_worker       what pgjobs-worker calls (claim, finish, heartbeat, reap, tick, ...);
--   pgjobs_admin        every API function, on every tenant;
--   pgjobs_viewer       read every table and view of every tenant and the read-only
--                       functions (metrics, setting, ...), change nothing: a read-only
--                       dashboard or `pgjobs status`.
-- Nobody gets direct writes to the tables: the API functions run as their owner
-- (SECURITY DEFINER with a fixed search_path) and never evaluate code a caller controls
-- (their arguments arrive converted, by the caller, to built-in types). The trigger
-- functions are the exception: they read the caller's row, whose column types (and their
-- casts) the caller may have made, so they run with the caller's rights (SECURITY
-- INVOKER) and hand a finished JSON payload to add_job. Each function says which where
-- it is defined. Internal helpers (named with a leading _) are granted to nobody, but
-- _enqueue_from_trigger, which the trigger functions call with the caller's rights.
-- Row-level security lets pgjobs_enqueue read only its tenant's rows. Everything here is
-- re-runnable: an upgrade script that adds functions ends by applying this file again.

-- The roles are cluster-wide: created when absent (NOLOGIN, none a member of another),
-- kept when they exist, never dropped (DROP EXTENSION leaves them).
DO $$
DECLARE
    v_role text;
BEGIN
    FOREACH v_role IN ARRAY ARRAY[
        'pgjobs_enqueue', 'pgjobs_enqueue_any', 'pgjobs_worker', 'pgjobs_admin',
        'pgjobs_viewer'
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
                    WHEN 'pgjobs_viewer' THEN 'read pgjobs (every tenant) and change nothing'
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

-- Functions: nobody but the owner may run anything, except what the list below grants
-- (the one place for privileges; each function's SECURITY DEFINER or INVOKER and its
-- fixed search_path are written where it is defined). pgjobs_version() is left alone:
-- it is created after this file (by make), returns a constant and keeps the default
-- EXECUTE for PUBLIC. A function missing from the list (internal helpers, anything added
-- without updating it) is granted to nobody. pgjobs_enqueue_any may call what
-- pgjobs_enqueue may.
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
            || 'pgjobs_worker, pgjobs_admin, pgjobs_viewer',
            v_fn.sig
        );
    END LOOP;

    FOR v_fn IN
        SELECT l.name, g.grantees, p.oid::regprocedure AS sig
        FROM (
            VALUES
            -- name, enqueue, worker, admin, viewer
            ('add_job', TRUE, FALSE, TRUE, FALSE),
            ('add_jobs', TRUE, FALSE, TRUE, FALSE),
            ('add_bundle', TRUE, FALSE, TRUE, FALSE),
            ('add_scheduled_job', TRUE, FALSE, TRUE, FALSE),
            ('pause_scheduled_job', TRUE, FALSE, TRUE, FALSE),
            ('resume_scheduled_job', TRUE, FALSE, TRUE, FALSE),
            ('cancel_job', TRUE, FALSE, TRUE, FALSE),
            ('tg_add_job_with_row', TRUE, FALSE, TRUE, FALSE),
            ('tg_add_job_with_row_id', TRUE, FALSE, TRUE, FALSE),
            ('trigger_job_with_fields', TRUE, FALSE, TRUE, FALSE),
            ('_enqueue_from_trigger', TRUE, FALSE, TRUE, FALSE),
            ('schedule_next_run', TRUE, TRUE, TRUE, TRUE),
            ('get_job', FALSE, TRUE, TRUE, FALSE),
            ('get_jobs', FALSE, TRUE, TRUE, FALSE),
            ('complete_job', FALSE, TRUE, TRUE, FALSE),
            ('fail_job', FALSE, TRUE, TRUE, FALSE),
            ('finish_jobs', FALSE, TRUE, TRUE, FALSE),
            ('set_progress', FALSE, TRUE, TRUE, FALSE),
            ('register_worker', FALSE, TRUE, TRUE, FALSE),
            ('worker_heartbeat', FALSE, TRUE, TRUE, FALSE),
            ('set_worker_wakeup', FALSE, TRUE, TRUE, FALSE),
            ('unregister_worker', FALSE, TRUE, TRUE, FALSE),
            ('reap_dead_workers', FALSE, TRUE, TRUE, FALSE),
            ('release_jobs', FALSE, TRUE, TRUE, FALSE),
            ('run_due_scheduled_jobs', FALSE, TRUE, TRUE, FALSE),
            ('get_scheduled_job', FALSE, TRUE, TRUE, FALSE),
            ('release_scheduled_jobs', FALSE, TRUE, TRUE, FALSE),
            ('run_scheduled_job', FALSE, TRUE, TRUE, FALSE),
            ('purge_job_history', FALSE, TRUE, TRUE, FALSE),
            ('setting', FALSE, TRUE, TRUE, TRUE),
            ('metrics', FALSE, TRUE, TRUE, TRUE),
            ('complete_jobs', FALSE, FALSE, TRUE, FALSE),
            ('permanently_fail_jobs', FALSE, FALSE, TRUE, FALSE),
            ('reschedule_jobs', FALSE, FALSE, TRUE, FALSE),
            ('remove_job', FALSE, FALSE, TRUE, FALSE),
            ('force_unlock_workers', FALSE, FALSE, TRUE, FALSE),
            ('retry_job', FALSE, FALSE, TRUE, FALSE),
            ('delete_job', FALSE, FALSE, TRUE, FALSE),
            ('delete_finished_jobs', FALSE, FALSE, TRUE, FALSE),
            ('waiting_jobs', FALSE, FALSE, TRUE, TRUE),
            ('failed_jobs', FALSE, FALSE, TRUE, TRUE),
            ('set_setting', FALSE, FALSE, TRUE, FALSE),
            ('set_task_settings', FALSE, FALSE, TRUE, FALSE),
            ('set_queue_concurrency', FALSE, FALSE, TRUE, FALSE)
        ) AS l (name, enqueue, worker, admin, viewer)
        CROSS JOIN LATERAL (
            SELECT array_to_string(ARRAY[
                CASE WHEN l.enqueue THEN 'pgjobs_enqueue, pgjobs_enqueue_any' END,
                CASE WHEN l.worker THEN 'pgjobs_worker' END,
                CASE WHEN l.admin THEN 'pgjobs_admin' END,
                CASE WHEN l.viewer THEN 'pgjobs_viewer' END
            ], ', ') AS grantees
        ) AS g
        LEFT JOIN pg_catalog.pg_proc AS p
            ON p.proname = l.name AND p.pronamespace = 'app_jobs'::regnamespace
        ORDER BY l.name, p.oid
    LOOP
        IF v_fn.sig IS NULL THEN
            -- Renamed or dropped without updating the list (tests_sql/950_privileges fails).
            RAISE WARNING 'pgjobs: app_jobs.% is granted in 950_security.sql but does not exist',
                v_fn.name;
            CONTINUE;
        END IF;
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %s', v_fn.sig, v_fn.grantees);
    END LOOP;
END;
$$;

-- Schema, tables, views, sequences: no rights for PUBLIC; the five roles may look up
-- objects in the schema; nobody but the owner writes.
REVOKE ALL ON SCHEMA app_jobs FROM PUBLIC;  -- noqa: CP02
GRANT USAGE ON SCHEMA app_jobs TO pgjobs_enqueue, pgjobs_enqueue_any, pgjobs_worker,
pgjobs_admin, pgjobs_viewer;
REVOKE ALL ON ALL TABLES IN SCHEMA app_jobs
FROM PUBLIC, pgjobs_enqueue, pgjobs_enqueue_any, pgjobs_worker, pgjobs_admin,  -- noqa: CP02
pgjobs_viewer;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA app_jobs
FROM PUBLIC, pgjobs_enqueue, pgjobs_enqueue_any, pgjobs_worker, pgjobs_admin,  -- noqa: CP02
pgjobs_viewer;

-- Workers, admins and viewers read everything (tables and views).
GRANT SELECT ON ALL TABLES IN SCHEMA app_jobs TO pgjobs_worker, pgjobs_admin, pgjobs_viewer;

-- Enqueuers read the tenant-scoped tables; row-level security below picks their rows.
GRANT SELECT ON app_jobs.jobs, app_jobs.job_history, app_jobs.job_bundles,
app_jobs.scheduled_jobs TO pgjobs_enqueue, pgjobs_enqueue_any;

-- Row-level security: pgjobs_enqueue sees the rows of its jwt.claims.database_id (none
-- without one); pgjobs_enqueue_any, pgjobs_worker and pgjobs_admin see every row, and
-- so does pgjobs_viewer (a policy of its own, viewer_all: SELECT is all it holds). The
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
        EXECUTE format('DROP POLICY IF EXISTS viewer_all ON app_jobs.%I', v_table);
        EXECUTE format(
            'CREATE POLICY viewer_all ON app_jobs.%I FOR SELECT TO pgjobs_viewer USING (TRUE)',
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
AS $$ SELECT '0.10.0'::text $$;
