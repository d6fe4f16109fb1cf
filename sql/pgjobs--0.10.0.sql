-- pgjobs 0.10.0: generated from sql/src by make; do not edit.

-- sql/src/000_schema.sql
-- Schema that holds every pgjobs object.
CREATE SCHEMA app_jobs;

COMMENT ON SCHEMA app_jobs IS 'pgjobs: a job queue that lives inside PostgreSQL';

-- sql/src/010_jobs_table.sql
-- The queue itself: one row per waiting, running or permanently failed job.
CREATE TABLE app_jobs.jobs (
    id bigserial PRIMARY KEY,
    database_id uuid,
    queue_name text,
    task_identifier text NOT NULL,
    payload json NOT NULL DEFAULT '{}'::json,
    priority integer NOT NULL DEFAULT 0,
    run_at timestamptz NOT NULL DEFAULT now(),
    attempts integer NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL DEFAULT 25,
    key text,
    last_error text,
    locked_at timestamptz,
    locked_by text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    progress integer,
    stage text,
    cancel_requested_at timestamptz,
    timeout interval,
    origin text,
    bundle_id bigint,
    blocked_by integer NOT NULL DEFAULT 0,
    is_available boolean NOT NULL GENERATED ALWAYS AS (
        locked_at IS NULL AND attempts < max_attempts AND blocked_by = 0
    ) STORED,
    CONSTRAINT jobs_task_identifier_check CHECK (
        length(task_identifier) BETWEEN 1 AND 126
    ),
    CONSTRAINT jobs_queue_name_check CHECK (
        length(queue_name) BETWEEN 1 AND 126
    ),
    CONSTRAINT jobs_key_check CHECK (length(key) BETWEEN 1 AND 512),
    CONSTRAINT jobs_max_attempts_check CHECK (max_attempts >= 1),
    CONSTRAINT jobs_progress_check CHECK (progress BETWEEN 0 AND 100),
    CONSTRAINT jobs_stage_check CHECK (length(stage) <= 1000),
    CONSTRAINT jobs_timeout_check CHECK (timeout > interval '0'),
    CONSTRAINT jobs_origin_check CHECK (length(origin) BETWEEN 1 AND 256),
    CONSTRAINT jobs_blocked_by_check CHECK (blocked_by >= 0)
);

COMMENT ON TABLE app_jobs.jobs IS
'Jobs waiting, running, or kept after their last failed attempt';
COMMENT ON COLUMN app_jobs.jobs.priority IS 'Lower numbers run first';
COMMENT ON COLUMN app_jobs.jobs.key IS
'Optional unique key: add_job with the same key replaces a waiting job';
COMMENT ON COLUMN app_jobs.jobs.progress IS 'Percent done (0-100) reported by the running handler';
COMMENT ON COLUMN app_jobs.jobs.stage IS 'What the running handler says it is doing';
COMMENT ON COLUMN app_jobs.jobs.cancel_requested_at IS
'Set by cancel_job on a running job: its worker cancels the handler; never retried';
COMMENT ON COLUMN app_jobs.jobs.timeout IS
'Longest an attempt may run before the worker cancels it (NULL: the task default)';
COMMENT ON COLUMN app_jobs.jobs.origin IS 'Free text: where the job came from';
COMMENT ON COLUMN app_jobs.jobs.bundle_id IS 'The bundle (app_jobs.job_bundles) it belongs to';
COMMENT ON COLUMN app_jobs.jobs.blocked_by IS
'How many of the jobs it depends on have not completed yet';
COMMENT ON COLUMN app_jobs.jobs.is_available IS
'Unlocked, attempts left, no pending dependency: the rows the claim index covers';

-- Claim order, restricted to rows a worker could take.
CREATE INDEX jobs_claim_idx ON app_jobs.jobs (priority, run_at, id)
WHERE is_available;

-- One job per key; jobs without a key (most) are not in the index at all, so an insert or
-- a claim of one costs an index entry less.
CREATE UNIQUE INDEX jobs_key_key ON app_jobs.jobs (key) WHERE key IS NOT NULL;

-- Running jobs by worker, for release and unlock.
CREATE INDEX jobs_locked_by_idx ON app_jobs.jobs (locked_by)
WHERE locked_by IS NOT NULL;

-- Running jobs by lock age, for reclaiming expired locks.
CREATE INDEX jobs_locked_at_idx ON app_jobs.jobs (locked_at)
WHERE locked_at IS NOT NULL;

-- Available jobs of named queues in claim order, to find each queue's head.
CREATE INDEX jobs_queue_head_idx ON app_jobs.jobs (queue_name, priority, run_at, id)
WHERE is_available AND queue_name IS NOT NULL;

-- Available jobs by tenant in claim order: with tenant_fairness on, the claim steps from
-- tenant to tenant through it and reads each tenant's head (app_jobs._fair_candidates).
CREATE INDEX jobs_tenant_claim_idx ON app_jobs.jobs (database_id, priority, run_at, id)
WHERE is_available;

-- sql/src/020_job_queues_table.sql
-- Named queues: how many jobs each holds and which worker runs it now.
CREATE TABLE app_jobs.job_queues (
    queue_name text PRIMARY KEY,
    job_count integer NOT NULL DEFAULT 0,
    locked_at timestamptz,
    locked_by text,
    running_count integer NOT NULL DEFAULT 0,
    CONSTRAINT job_queues_queue_name_check CHECK (
        length(queue_name) BETWEEN 1 AND 126
    )
);

COMMENT ON COLUMN app_jobs.job_queues.running_count IS
'Jobs of the queue running now; at most its max_concurrency (app_jobs.queue_settings)';

COMMENT ON TABLE app_jobs.job_queues IS
'One row per named queue that holds jobs; a queue runs one job at a time';

-- Queues held by a worker, for release and unlock.
CREATE INDEX job_queues_locked_by_idx ON app_jobs.job_queues (locked_by)
WHERE locked_by IS NOT NULL;

-- sql/src/030_scheduled_jobs_table.sql
-- Recurring job definitions; each spawns jobs in app_jobs.jobs.
CREATE TABLE app_jobs.scheduled_jobs (
    id bigserial PRIMARY KEY,
    database_id uuid,
    queue_name text,
    task_identifier text NOT NULL,
    payload json NOT NULL DEFAULT '{}'::json,
    priority integer NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL DEFAULT 25,
    key text,
    locked_at timestamptz,
    locked_by text,
    schedule_info json NOT NULL,
    last_scheduled timestamptz,
    last_scheduled_id bigint,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    next_run_at timestamptz,
    last_error text,
    last_error_at timestamptz,
    paused_at timestamptz,
    CONSTRAINT scheduled_jobs_key_key UNIQUE (key),
    CONSTRAINT scheduled_jobs_task_identifier_check CHECK (
        length(task_identifier) BETWEEN 1 AND 126
    ),
    CONSTRAINT scheduled_jobs_queue_name_check CHECK (
        length(queue_name) BETWEEN 1 AND 126
    ),
    CONSTRAINT scheduled_jobs_key_check CHECK (length(key) BETWEEN 1 AND 512),
    CONSTRAINT scheduled_jobs_max_attempts_check CHECK (max_attempts >= 1)
);

COMMENT ON COLUMN app_jobs.scheduled_jobs.next_run_at IS
'The next slot to enqueue (NULL once the schedule has ended)';
COMMENT ON COLUMN app_jobs.scheduled_jobs.last_error IS
'Why the scheduler tick could not enqueue this schedule''s latest due slot (NULL once one '
'succeeds); the tick skips it and goes on with the others';
COMMENT ON COLUMN app_jobs.scheduled_jobs.last_error_at IS 'When last_error happened';
COMMENT ON COLUMN app_jobs.scheduled_jobs.paused_at IS
'When pause_scheduled_job paused the schedule (NULL: active); the tick skips it until '
'resume_scheduled_job';
COMMENT ON TABLE app_jobs.scheduled_jobs IS
'Recurring jobs: schedule_info says when, the other columns what to enqueue';

-- Schedules held by a worker, for release.
CREATE INDEX scheduled_jobs_locked_by_idx ON app_jobs.scheduled_jobs (
    locked_by
) WHERE locked_by IS NOT NULL;

-- Due schedules, for the scheduler tick.
CREATE INDEX scheduled_jobs_next_run_at_idx ON app_jobs.scheduled_jobs (next_run_at)
WHERE next_run_at IS NOT NULL;

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
    -- How new jobs wake it: listen (notifications arrive), silent (its LISTEN hears
    -- nothing, e.g. behind a transaction-mode pooler: it polls), poll (it was started
    -- without LISTEN); NULL until the worker has found out.
    wakeup text,
    CONSTRAINT workers_id_check CHECK (length(id) BETWEEN 1 AND 256),
    CONSTRAINT workers_heartbeat_interval_check CHECK (
        heartbeat_interval > interval '0'
    ),
    CONSTRAINT workers_wakeup_check CHECK (wakeup IN ('listen', 'silent', 'poll'))
);

COMMENT ON TABLE app_jobs.workers IS
'Registered workers and their heartbeats; reap_dead_workers frees the silent ones';

-- Silent workers first, for the reaper.
CREATE INDEX workers_last_heartbeat_idx ON app_jobs.workers (last_heartbeat);

-- sql/src/050_job_history_table.sql
-- Finished jobs (completed, permanently failed, cancelled), kept for history_retention.
-- Partitioned by finish time, one partition per UTC day (job_history_pYYYYMMDD, made
-- ahead by _ensure_history_partitions), so retention drops whole days instead of
-- deleting rows; job_history_default takes any row no day partition covers.
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
    -- A partitioned table's key must hold its partition key; ids stay unique anyway
    -- (one sequence).
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

-- Oldest first, for purging.
CREATE INDEX job_history_finished_at_idx ON app_jobs.job_history (finished_at);

-- A job's records, for lookups by job id.
CREATE INDEX job_history_job_id_idx ON app_jobs.job_history (job_id);

-- Rows no day partition covers (an insert never fails for want of a partition);
-- _ensure_history_partitions moves them into day partitions as it makes them.
CREATE TABLE app_jobs.job_history_default PARTITION OF app_jobs.job_history DEFAULT;

-- sql/src/060_settings_table.sql
-- Instance-wide settings; a missing row means the default (see app_jobs.setting).
CREATE TABLE app_jobs.settings (
    name text PRIMARY KEY,
    value text NOT NULL,
    CONSTRAINT settings_name_check CHECK (
        name IN (
            'history', 'history_retention', 'max_payload_bytes', 'notify_max_queue_usage',
            'job_expiry', 'tenant_fairness'
        )
    ),
    CONSTRAINT settings_max_payload_bytes_check CHECK (
        CASE
            WHEN name <> 'max_payload_bytes' THEN TRUE
            WHEN value !~ '^[0-9]{4,10}$' THEN FALSE
            ELSE value::bigint BETWEEN 1024 AND 1073741824
        END
    )
);

COMMENT ON TABLE app_jobs.settings IS
'history (on/off, default on), history_retention (interval, default 7 days), '
'max_payload_bytes (1024 to 1073741824, default 262144), notify_max_queue_usage (0 to 1, '
'default 0.5), job_expiry (how long the claim of a worker that never registered holds, '
'default 4 hours), tenant_fairness (on/off, default off: claims take turns between '
'tenants)';

-- sql/src/070_job_dependencies_table.sql
-- Which unfinished jobs a job waits for; a row goes when its dependency completes.
CREATE TABLE app_jobs.job_dependencies (
    job_id bigint NOT NULL,
    depends_on bigint NOT NULL,
    PRIMARY KEY (job_id, depends_on)
);

COMMENT ON TABLE app_jobs.job_dependencies IS
'job_id runs only once every depends_on job completed; a failed one cancels it';

-- Dependents of a job, looked up when it stops.
CREATE INDEX job_dependencies_depends_on_idx ON app_jobs.job_dependencies (depends_on);

-- sql/src/071_job_bundles_table.sql
-- Groups of jobs created together and tracked as one; a follow-up job may run at the end.
CREATE TABLE app_jobs.job_bundles (
    id bigserial PRIMARY KEY,
    database_id uuid,
    bundle_type text NOT NULL,
    origin text,
    job_count integer NOT NULL,
    completed_count integer NOT NULL DEFAULT 0,
    failed_count integer NOT NULL DEFAULT 0,
    cancelled_count integer NOT NULL DEFAULT 0,
    followup jsonb,
    followup_job_id bigint,
    outcome text,
    created_at timestamptz NOT NULL DEFAULT now(),
    stopped_at timestamptz,
    CONSTRAINT job_bundles_bundle_type_check CHECK (length(bundle_type) BETWEEN 1 AND 126),
    CONSTRAINT job_bundles_job_count_check CHECK (job_count >= 0),
    CONSTRAINT job_bundles_outcome_check CHECK (outcome IN ('completed', 'failed'))
);

COMMENT ON TABLE app_jobs.job_bundles IS
'Bundles: stopped (stopped_at, outcome) once every job completed, failed or was cancelled';
COMMENT ON COLUMN app_jobs.job_bundles.outcome IS
'completed when every job completed, else failed; NULL while jobs remain';
COMMENT ON COLUMN app_jobs.job_bundles.followup IS
'Job enqueued when the bundle stops: {identifier, payload, queue_name, priority, ...}';

-- sql/src/072_task_settings_table.sql
-- Per-task defaults: retry policy, max_attempts, timeout and a start-rate limit.
CREATE TABLE app_jobs.task_settings (
    task_identifier text PRIMARY KEY,
    retry_kind text NOT NULL DEFAULT 'exponential',
    retry_base interval,
    retry_cap interval,
    retry_jitter double precision NOT NULL DEFAULT 0,
    retry_delays interval[],
    max_attempts integer,
    timeout interval,
    rate_limit integer,
    rate_interval interval,
    rate_burst integer,
    tokens double precision,
    refilled_at timestamptz,
    CONSTRAINT task_settings_retry_kind_check CHECK (
        retry_kind IN ('exponential', 'linear', 'fixed', 'list')
    ),
    CONSTRAINT task_settings_retry_jitter_check CHECK (retry_jitter BETWEEN 0 AND 1),
    CONSTRAINT task_settings_max_attempts_check CHECK (max_attempts >= 1),
    CONSTRAINT task_settings_timeout_check CHECK (timeout > interval '0'),
    CONSTRAINT task_settings_rate_check CHECK (
        (rate_limit IS NULL) = (rate_interval IS NULL)
        AND rate_limit >= 1 AND rate_interval > interval '0'
    ),
    CONSTRAINT task_settings_rate_burst_check CHECK (rate_burst >= 1)
);

COMMENT ON TABLE app_jobs.task_settings IS
'Per task: retry schedule, default max_attempts/timeout, token-bucket start rate limit';
COMMENT ON COLUMN app_jobs.task_settings.tokens IS
'Rate limit bucket: starts available now (refilled at rate_limit per rate_interval)';

-- sql/src/073_queue_settings_table.sql
-- Per named queue: how many of its jobs may run at once (1, a serial queue, by default).
CREATE TABLE app_jobs.queue_settings (
    queue_name text PRIMARY KEY,
    max_concurrency integer NOT NULL DEFAULT 1,
    CONSTRAINT queue_settings_max_concurrency_check CHECK (max_concurrency >= 1)
);

COMMENT ON TABLE app_jobs.queue_settings IS
'Queues allowed more than one running job; absent means serial (1)';

-- sql/src/100_check_job_spec.sql
-- Why a text is not acceptable as a name (task identifier, queue name, worker id); NULL
-- when it is. A name must not contain control characters (C0, DEL, C1) or invisible
-- formatting characters (zero-width, bidirectional controls, line and paragraph
-- separators, BOM), nor begin or end with whitespace. Outside UTF8 databases only the
-- ASCII controls and spaces are known for what they are.
CREATE FUNCTION app_jobs._name_problem(p_name text) RETURNS text
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
    v_utf8 boolean := pg_catalog.getdatabaseencoding() = 'UTF8';
    v_bad text;
BEGIN
    v_bad := substring(p_name FROM CASE
        WHEN v_utf8
            THEN '[\x01-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060\u2066-\u2069\ufeff]'
        ELSE '[\x01-\x1f\x7f]'
    END);
    IF v_bad IS NOT NULL THEN
        RETURN format(
            'contains the control or invisible character U+%s at position %s',
            upper(lpad(to_hex(ascii(v_bad)), 4, '0')), strpos(p_name, v_bad)
        );
    END IF;
    IF p_name ~ (CASE
        WHEN v_utf8 THEN
            '^[ \u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]'
            || '|[ \u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]$'
        ELSE '^ | $'
    END) THEN
        RETURN 'begins or ends with whitespace';
    END IF;
    RETURN NULL;
END;
$$;

COMMENT ON FUNCTION app_jobs._name_problem IS
'Why a task identifier, queue name or worker id is refused (control, invisible or '
'edge-whitespace characters); NULL when it is fine';

-- Raise a distinct SQLSTATE for each invalid field of a job or schedule.
CREATE FUNCTION app_jobs._check_job_spec(
    p_identifier text,
    p_queue_name text,
    p_job_key text,
    p_max_attempts integer
) RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
    v_problem text;
BEGIN
    IF p_identifier IS NULL OR length(p_identifier) NOT BETWEEN 1 AND 126 THEN
        RAISE EXCEPTION 'task identifier must be 1 to 126 characters, got %',
            coalesce(length(p_identifier)::text || ' characters', 'NULL')
            USING ERRCODE = 'PJ001';
    END IF;
    v_problem := app_jobs._name_problem(p_identifier);
    IF v_problem IS NOT NULL THEN
        RAISE EXCEPTION 'task identifier %', v_problem
            USING ERRCODE = 'PJ031',
            HINT = 'Names may not contain control or invisible characters, '
            || 'nor begin or end with whitespace.';
    END IF;
    IF p_queue_name IS NOT NULL AND length(p_queue_name) NOT BETWEEN 1 AND 126 THEN
        RAISE EXCEPTION 'queue name must be 1 to 126 characters, got %',
            length(p_queue_name)
            USING ERRCODE = 'PJ002';
    END IF;
    v_problem := app_jobs._name_problem(p_queue_name);
    IF v_problem IS NOT NULL THEN
        RAISE EXCEPTION 'queue name %', v_problem
            USING ERRCODE = 'PJ032',
            HINT = 'Names may not contain control or invisible characters, '
            || 'nor begin or end with whitespace.';
    END IF;
    IF p_job_key IS NOT NULL AND length(p_job_key) NOT BETWEEN 1 AND 512 THEN
        RAISE EXCEPTION 'job key must be 1 to 512 characters, got %',
            length(p_job_key)
            USING ERRCODE = 'PJ003';
    END IF;
    IF p_max_attempts IS NOT NULL AND p_max_attempts < 1 THEN
        RAISE EXCEPTION 'max_attempts must be at least 1, got %', p_max_attempts
            USING ERRCODE = 'PJ004';
    END IF;
    IF p_max_attempts > 10000 THEN
        RAISE EXCEPTION 'max_attempts must be at most 10000, got %', p_max_attempts
            USING ERRCODE = 'PJ035';
    END IF;
END;
$$;

-- Raise PJ033 when a payload is larger than the max_payload_bytes setting (its JSON
-- text, in bytes), PJ037 when it nests arrays and objects more than 256 deep (more than
-- common JSON parsers take: Python's gives up at about 1000). Payloads of up to 1 kB,
-- the least the setting allows, are not measured against it; only a payload with more
-- than 256 opening brackets (so more than 512 bytes) can be too deep.
CREATE FUNCTION app_jobs._check_payload(p_payload json) RETURNS void
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    v_text text := p_payload::text;
    v_bytes integer := octet_length(v_text);
    v_max bigint;
BEGIN
    IF v_bytes > 1024 THEN
        v_max := app_jobs.setting('max_payload_bytes')::bigint;
        IF v_bytes > v_max THEN
            RAISE EXCEPTION 'payload is % bytes, more than max_payload_bytes (%)',
                v_bytes, v_max
                USING ERRCODE = 'PJ033',
                HINT = 'Store large data elsewhere and pass a reference to it, or raise '
                || 'the limit: app_jobs.set_setting(''max_payload_bytes'', ...).';
        END IF;
    END IF;
    IF v_bytes > 512 AND length(v_text) - length(translate(v_text, '[{', '')) > 256 THEN
        -- Only the shape matters, rewritten as arrays of zeros: escapes dropped (in pairs,
        -- so quotes stay balanced), strings and numbers made 0, objects made arrays (jsonb
        -- would drop all but the last of duplicate keys, and takes neither \u0000 nor
        -- 1e999999).
        IF jsonb_path_exists(
            regexp_replace(
                translate(
                    regexp_replace(
                        regexp_replace(v_text, '\\(u[0-9a-fA-F]{4}|.)', '', 'g'),
                        '"[^"]*"', '0', 'g'
                    ),
                    '{}:', '[],'
                ),
                '-?[0-9][0-9.eE+-]*', '0', 'g'
            )::jsonb,
            'strict $.**{256} ? (@.type() == "array")'
        ) THEN
            RAISE EXCEPTION 'payload nests arrays and objects more than 256 deep'
                USING ERRCODE = 'PJ037';
        END IF;
    END IF;
END;
$$;

-- Raise PJ034 unless run_at (NULL: now) lies between 1970 and 100 years from now;
-- p_what names the argument in the message.
CREATE FUNCTION app_jobs._check_run_at(
    p_run_at timestamptz,
    p_what text DEFAULT 'run_at'
) RETURNS void
LANGUAGE plpgsql STABLE
AS $$
BEGIN
    -- (-infinity and infinity fall outside too.)
    IF p_run_at < '1970-01-01 00:00:00+00'::timestamptz
        OR p_run_at > now() + interval '100 years' THEN
        RAISE EXCEPTION '% must be between 1970-01-01 and 100 years from now, got %',
            p_what, p_run_at
            USING ERRCODE = 'PJ034';
    END IF;
END;
$$;

-- Raise PJ040 unless job_expiry (how long a claim of a worker that never registered
-- holds) is positive and at most 100 years; NULL means the default.
CREATE FUNCTION app_jobs._check_job_expiry(p_job_expiry interval) RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF p_job_expiry <= interval '0' OR p_job_expiry > interval '100 years' THEN
        RAISE EXCEPTION 'job_expiry must be positive and at most 100 years, got %',
            p_job_expiry
            USING ERRCODE = 'PJ040';
    END IF;
END;
$$;

-- Every check of one job's fields, as add_job and add_jobs apply them (max_attempts and
-- timeout with the task's defaults applied): PJ001-PJ004, PJ017, PJ022, PJ031-PJ035,
-- PJ037, PJ038.
CREATE FUNCTION app_jobs._check_job(
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
    PERFORM app_jobs._check_job_spec(p_identifier, p_queue_name, p_job_key, p_max_attempts);
    PERFORM app_jobs._check_payload(p_payload);
    PERFORM app_jobs._check_run_at(p_run_at);
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

-- sql/src/101_check_worker_id.sql
-- Raise PJ005 unless a worker id of 1 to 256 characters was given, PJ036 when it is not
-- a clean name (see name_problem).
CREATE FUNCTION app_jobs._check_worker_id(p_worker_id text) RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
    v_problem text;
BEGIN
    IF p_worker_id IS NULL OR p_worker_id = '' THEN
        RAISE EXCEPTION 'worker_id is required'
            USING ERRCODE = 'PJ005';
    END IF;
    IF length(p_worker_id) > 256 THEN
        RAISE EXCEPTION 'worker_id must be at most 256 characters, got %',
            length(p_worker_id)
            USING ERRCODE = 'PJ005';
    END IF;
    v_problem := app_jobs._name_problem(p_worker_id);
    IF v_problem IS NOT NULL THEN
        RAISE EXCEPTION 'worker_id %', v_problem
            USING ERRCODE = 'PJ036',
            HINT = 'Names may not contain control or invisible characters, '
            || 'nor begin or end with whitespace.';
    END IF;
END;
$$;

-- sql/src/102_settings.sql
-- The value of a setting, or its default when it was never set.
CREATE FUNCTION app_jobs.setting(p_name text) RETURNS text
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

-- How long the claim of a worker that never registered holds: p_job_expiry, or the
-- job_expiry setting when NULL.
CREATE FUNCTION app_jobs._job_expiry(p_job_expiry interval DEFAULT NULL) RETURNS interval
LANGUAGE plpgsql STABLE
AS $$
BEGIN
    RETURN coalesce(p_job_expiry, app_jobs.setting('job_expiry')::interval);
END;
$$;

-- Change a setting, refusing unknown names and values that do not parse (PJ014).
CREATE FUNCTION app_jobs.set_setting(name text, value text) RETURNS text
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

-- sql/src/103_lock_is_free.sql
-- True when nobody live holds a lock: never taken, or older than p_expiry and held by
-- a session that never registered (registered workers are judged by their heartbeat).
CREATE FUNCTION app_jobs._lock_is_free(
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

-- sql/src/104_queue_concurrency.sql
-- How many jobs of a named queue may run at once (queue_settings, else 1).
CREATE FUNCTION app_jobs._queue_concurrency(p_queue_name text) RETURNS integer
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

-- sql/src/105_enqueue_ignored.sql
-- True when this session asked for enqueues of the task to be dropped (test helpers):
-- pgjobs.ignore_enqueues is 'all' or a comma-separated list of task identifiers (an empty
-- setting is an empty list: it ignores no task, not the task named '').
CREATE FUNCTION app_jobs._enqueue_ignored(p_identifier text) RETURNS boolean
LANGUAGE sql STABLE
AS $$
    SELECT coalesce(
        current_setting('pgjobs.ignore_enqueues', TRUE) = 'all'
        OR p_identifier = ANY(
            regexp_split_to_array(
                nullif(trim(current_setting('pgjobs.ignore_enqueues', TRUE)), ''), '\s*,\s*'
            )
        ),
        FALSE
    );
$$;

-- sql/src/106_notify.sql
-- Notifications are a latency hint, never a reason for an enqueue or an outcome to fail:
-- PostgreSQL refuses a commit (54000) once its notification queue is full, which one
-- listener that stops reading (idle in a transaction) can cause. pgjobs' own
-- notifications are skipped while the queue is used at least up to the
-- notify_max_queue_usage setting (default half full; workers poll, so nothing is lost but
-- latency; below 0.1 % nothing is ever skipped) and counted here; metrics() reports the
-- count.
CREATE SEQUENCE app_jobs.notifications_skipped;

COMMENT ON SEQUENCE app_jobs.notifications_skipped IS
'Counts pgjobs notifications skipped because the NOTIFY queue was too full';

-- Send a notification unless the NOTIFY queue is used up to notify_max_queue_usage (then
-- count it). Below 0.1 % of the queue (8 MB), where it always is while listeners keep up,
-- the setting is not even read: the common case costs one cheap function call.
CREATE FUNCTION app_jobs._notify(p_channel text, p_payload text) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_usage double precision := pg_catalog.pg_notification_queue_usage();
BEGIN
    -- (Two statements: the setting's lookup would make one expression a full query.)
    IF v_usage < 0.001 THEN
        PERFORM pg_catalog.pg_notify(p_channel, p_payload);
    ELSIF v_usage < app_jobs.setting('notify_max_queue_usage')::double precision THEN
        PERFORM pg_catalog.pg_notify(p_channel, p_payload);
    ELSE
        PERFORM pg_catalog.nextval('app_jobs.notifications_skipped');
    END IF;
END;
$$;

-- How many notifications notify() skipped since the install.
CREATE FUNCTION app_jobs._notifications_skipped_count() RETURNS bigint
LANGUAGE sql STABLE
AS $$
    SELECT CASE WHEN s.is_called THEN s.last_value ELSE 0 END
    FROM app_jobs.notifications_skipped AS s;
$$;

-- Send JSON events (each a JSON object's text) as JSON arrays, as many per notification
-- as fit well under NOTIFY's 8000-byte limit. Chunks are cut where the running total of
-- the events' byte lengths crosses a multiple of 5000 bytes, so a chunk holds less than
-- 5000 bytes plus one event; callers keep each event under 2500 bytes (names of at most
-- 126 characters, origins cut to 256 characters: at most 6 bytes each once JSON-escaped).
CREATE FUNCTION app_jobs._notify_chunks(p_channel text, p_events text[]) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    PERFORM app_jobs._notify(p_channel, c.events)
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

-- sql/src/107_lock_jobs.sql
-- Lock job rows p_job_ids in the order every writer of pgjobs follows, so that no two
-- of them (nor add_job, which takes a queue row, and get_jobs) can deadlock: the job
-- rows by id, then their bundles by id, then their queues by name. Waits for each row,
-- or with p_skip_locked leaves out the jobs whose row, or whose queue's row, another
-- session holds (bundles are always waited for: only jobs of a bundle hold them, and
-- briefly). Returns the ids of the jobs locked, with their queue row, in id order.
CREATE FUNCTION app_jobs._lock_jobs(
    p_job_ids bigint[],
    p_skip_locked boolean DEFAULT FALSE
) RETURNS bigint[]
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_ids bigint[];
    v_bundles bigint[];
    v_queues text[];
BEGIN
    IF p_skip_locked THEN
        v_ids := ARRAY(
            SELECT j.id FROM app_jobs.jobs AS j
            WHERE j.id = ANY(p_job_ids)
            ORDER BY j.id
            FOR UPDATE SKIP LOCKED
        );
    ELSE
        v_ids := ARRAY(
            SELECT j.id FROM app_jobs.jobs AS j
            WHERE j.id = ANY(p_job_ids)
            ORDER BY j.id
            FOR UPDATE
        );
    END IF;
    SELECT
        array_agg(DISTINCT j.bundle_id) FILTER (WHERE j.bundle_id IS NOT NULL),
        array_agg(DISTINCT j.queue_name) FILTER (WHERE j.queue_name IS NOT NULL)
    INTO v_bundles, v_queues
    FROM app_jobs.jobs AS j
    WHERE j.id = ANY(v_ids);
    IF v_bundles IS NOT NULL THEN
        PERFORM app_jobs._lock_bundles(v_bundles);
    END IF;
    IF v_queues IS NULL THEN
        RETURN v_ids;
    END IF;
    IF NOT p_skip_locked THEN
        PERFORM 1 FROM app_jobs.job_queues AS q
        WHERE q.queue_name = ANY(v_queues)
        ORDER BY q.queue_name
        FOR UPDATE;
        RETURN v_ids;
    END IF;
    -- A queue row an open enqueue transaction holds (it counts its job in until it
    -- commits) leaves that queue's jobs out, rather than making the caller wait.
    v_queues := ARRAY(
        SELECT q.queue_name FROM app_jobs.job_queues AS q
        WHERE q.queue_name = ANY(v_queues)
        ORDER BY q.queue_name
        FOR UPDATE SKIP LOCKED
    );
    RETURN ARRAY(
        SELECT j.id FROM app_jobs.jobs AS j
        WHERE j.id = ANY(v_ids) AND (j.queue_name IS NULL OR j.queue_name = ANY(v_queues))
        ORDER BY j.id
    );
END;
$$;

-- sql/src/108_tenant.sql
-- True when the caller may act on rows of tenant p_db_id. The caller is the role in
-- effect where the pgjobs function was called: inside a SECURITY DEFINER function
-- current_user is the owner, so this reads the "role" setting (what SET ROLE chose,
-- which a definer function cannot change) and falls back to session_user without SET
-- ROLE. A caller with the privileges of pgjobs_enqueue_any, pgjobs_worker, pgjobs_admin
-- or the schema's owner (superusers included) may act on every tenant; any other caller
-- only on the tenant of its jwt.claims.database_id setting (none without it, NULL
-- included).
CREATE FUNCTION app_jobs._tenant_allowed(p_db_id uuid) RETURNS boolean
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

COMMENT ON FUNCTION app_jobs._tenant_allowed IS
'Internal: may the calling role (SET ROLE, else session_user) act on tenant p_db_id?';

-- Raise PJ030 unless the caller may act on tenant p_db_id (see tenant_allowed).
CREATE FUNCTION app_jobs._check_tenant(p_db_id uuid) RETURNS void
LANGUAGE plpgsql STABLE
AS $$
BEGIN
    IF NOT app_jobs._tenant_allowed(p_db_id) THEN
        RAISE EXCEPTION 'permission denied for database_id %', coalesce(p_db_id::text, 'NULL')
            USING ERRCODE = 'PJ030',
            HINT = 'Without the privileges of pgjobs_enqueue_any, pgjobs_worker or '
            || 'pgjobs_admin, a role acts only on the tenant named by its '
            || 'jwt.claims.database_id setting.';
    END IF;
END;
$$;

COMMENT ON FUNCTION app_jobs._check_tenant IS
'Internal: PJ030 unless the calling role may act on tenant p_db_id';

-- sql/src/110_add_job.sql
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

-- sql/src/111_add_jobs.sql
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

-- sql/src/119_fair_candidates.sql
-- With tenant_fairness on: the ids of up to p_n claimable jobs of each tenant that has
-- any (database_id; NULL is a tenant too) in the order a claim takes them: priority
-- first, then taking turns (each tenant's 1st job, then each tenant's 2nd, ...), then
-- the tenant with fewer running jobs, then run_at and id. Each tenant gives twice its
-- share of p_n (enough for claimers side by side that skip each other's rows; with many
-- tenants a tenant's 2nd or 3rd job is never reached). Claimable as get_jobs sees it:
-- available, due, of p_task_identifiers (NULL: any), not of a task p_allow gives no
-- token, not in a queue that is full. The rows are not locked: get_jobs locks the first
-- free ones in this order.
CREATE FUNCTION app_jobs._fair_candidates(
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

-- sql/src/120_get_jobs.sql
-- Claim up to batch_size available jobs for a worker, within each named queue's
-- concurrency (one at a time unless queue_settings says more) and each task's rate limit.
-- job_expiry NULL (the default) means the job_expiry setting. With the tenant_fairness
-- setting on, tenants take turns (app_jobs._fair_candidates gives the order).
CREATE FUNCTION app_jobs.get_jobs(
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

-- sql/src/121_get_job.sql
-- Claim the next available job for a worker; a row of NULLs when there is none.
-- job_expiry NULL (the default) means the job_expiry setting.
CREATE FUNCTION app_jobs.get_job(
    worker_id text,
    task_identifiers text[] DEFAULT NULL,
    job_expiry interval DEFAULT NULL
) RETURNS app_jobs.jobs
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
DECLARE
    v_job app_jobs.jobs;
BEGIN
    SELECT * INTO v_job
    FROM app_jobs.get_jobs(worker_id, task_identifiers, job_expiry, 1);
    RETURN v_job;
END;
$$;

COMMENT ON FUNCTION app_jobs.get_job IS
'Claim the next job: priority ascending, then run_at, then id';

-- sql/src/125_job_stopped.sql
-- Everything that follows a job reaching a final state (completed, failed for good,
-- cancelled): its history row, the jobs:stopped event, its dependents (unblocked, or
-- cancelled when it did not complete) and its bundle. The caller holds the job's row
-- and its bundle's row.
CREATE FUNCTION app_jobs._job_stopped(
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
    IF app_jobs.setting('history') <> 'off' THEN
        INSERT INTO app_jobs.job_history (
            job_id, database_id, task_identifier, queue_name, key, payload, priority,
            status, attempts, max_attempts, result, last_error, error_data, worker_id,
            created_at, started_at, origin, bundle_id
        ) VALUES (
            p_job.id, p_job.database_id, p_job.task_identifier, p_job.queue_name, p_job.key,
            p_job.payload, p_job.priority, p_status, p_job.attempts, p_job.max_attempts,
            p_result, p_job.last_error, p_error_data, p_worker_id,
            p_job.created_at, p_started_at, p_job.origin, p_job.bundle_id
        );
    END IF;
    PERFORM app_jobs._notify_job_stopped(p_job, p_status, FALSE);

    IF p_status = 'completed' THEN
        UPDATE app_jobs.jobs AS j
        SET blocked_by = j.blocked_by - 1
        WHERE j.id IN (
            SELECT d.job_id FROM app_jobs.job_dependencies AS d WHERE d.depends_on = p_job.id
        );
        DELETE FROM app_jobs.job_dependencies AS d WHERE d.depends_on = p_job.id;
    ELSE
        PERFORM app_jobs._cancel_dependents(
            ARRAY(
                SELECT d.job_id FROM app_jobs.job_dependencies AS d
                WHERE d.depends_on = p_job.id
            ),
            p_job.id,
            p_status
        );
    END IF;

    IF p_job.bundle_id IS NOT NULL THEN
        PERFORM app_jobs._bundle_job_stopped(p_job.bundle_id, p_status);
    END IF;
END;
$$;

-- One jobs:stopped event, as JSON text: ids and names only, never payload (at most about
-- 2,200 bytes: names are at most 126 characters, the origin is cut to 256).
CREATE FUNCTION app_jobs._stopped_event(
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
CREATE FUNCTION app_jobs._notify_job_stopped(
    p_job app_jobs.jobs,
    p_outcome text,
    p_will_retry boolean
) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    PERFORM app_jobs._notify(
        'jobs:stopped',
        app_jobs._stopped_event(
            p_job.id, p_job.task_identifier, p_outcome, p_will_retry, p_job.bundle_id,
            p_job.origin
        )
    );
END;
$$;

-- Cancel the given jobs, which wait on a dependency that failed or was cancelled, and
-- every job that waits on them in turn, in a few set-based statements (a chain or a fan
-- of any size). Each records why: the stopped dependency for the given jobs, a cancelled
-- one (its lowest id) for the others. Jobs first, then bundles, then queues (the shared
-- lock order). Returns how many were cancelled.
CREATE FUNCTION app_jobs._cancel_dependents(
    p_job_ids bigint[],
    p_dependency_id bigint,
    p_dependency_status text
) RETURNS integer
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_ids bigint[];
    v_reasons bigint[];
    v_jobs app_jobs.jobs[];
    v_bundle record;
BEGIN
    IF coalesce(cardinality(p_job_ids), 0) = 0 THEN
        RETURN 0;
    END IF;
    -- Every dependency edge into the doomed set once (UNION drops an edge seen before, so
    -- a job reached by several paths is expanded once); a given job's reason is the
    -- stopped dependency (NULL here), any other's the lowest doomed job it waits on.
    WITH RECURSIVE doomed (id, reason) AS (
        SELECT g.id, NULL::bigint FROM unnest(p_job_ids) AS g (id)
        UNION
        SELECT d.job_id, d.depends_on
        FROM app_jobs.job_dependencies AS d
        INNER JOIN doomed ON d.depends_on = doomed.id
    ),

    reasons AS (
        SELECT
            dm.id,
            -- A given job (NULL reason) is cancelled by the stopped dependency.
            CASE WHEN bool_or(dm.reason IS NULL) THEN NULL ELSE min(dm.reason) END AS reason
        FROM doomed AS dm
        GROUP BY dm.id
    )

    SELECT coalesce(array_agg(r.id ORDER BY r.id), '{}'), array_agg(r.reason ORDER BY r.id)
    INTO v_ids, v_reasons
    FROM reasons AS r;
    PERFORM 1 FROM app_jobs.jobs AS j WHERE j.id = ANY(v_ids) ORDER BY j.id FOR UPDATE;
    PERFORM app_jobs._lock_bundles(ARRAY(
        SELECT j.bundle_id FROM app_jobs.jobs AS j WHERE j.id = ANY(v_ids)
    ));

    -- (Arrays, not a temporary table: a caller could have created one of that name.)
    DELETE FROM app_jobs.job_dependencies AS d WHERE d.job_id = ANY(v_ids);
    WITH gone AS (
        DELETE FROM app_jobs.jobs AS j
        WHERE j.id = ANY(v_ids)
        RETURNING j.*
    )

    SELECT coalesce(array_agg(g::app_jobs.jobs ORDER BY g.id), '{}') INTO v_jobs
    FROM gone AS g;

    IF app_jobs.setting('history') <> 'off' THEN
        INSERT INTO app_jobs.job_history (
            job_id, database_id, task_identifier, queue_name, key, payload, priority,
            status, attempts, max_attempts, last_error, error_data, created_at, origin,
            bundle_id
        )
        SELECT
            c.id, c.database_id, c.task_identifier, c.queue_name, c.key, c.payload,
            c.priority, 'cancelled', c.attempts, c.max_attempts,
            format('dependency %s %s', r.dependency_id, r.dependency_status),
            jsonb_build_object(
                'reason', 'dependency', 'dependency_id', r.dependency_id,
                'dependency_status', r.dependency_status
            ),
            c.created_at, c.origin, c.bundle_id
        FROM unnest(v_jobs) AS c
        INNER JOIN (
            SELECT
                x.id,
                coalesce(x.reason, p_dependency_id) AS dependency_id,
                CASE WHEN x.reason IS NULL THEN p_dependency_status ELSE 'cancelled' END
                    AS dependency_status
            FROM unnest(v_ids, v_reasons) AS x (id, reason)
        ) AS r ON c.id = r.id
        ORDER BY c.id;
    END IF;
    PERFORM app_jobs._notify_chunks('jobs:stopped', ARRAY(
        SELECT app_jobs._stopped_event(
            c.id, c.task_identifier, 'cancelled', FALSE, c.bundle_id, c.origin
        )
        FROM unnest(v_jobs) AS c
        ORDER BY c.id
    ));
    FOR v_bundle IN
        SELECT c.bundle_id AS id, count(*)::integer AS n
        FROM unnest(v_jobs) AS c
        WHERE c.bundle_id IS NOT NULL
        GROUP BY c.bundle_id
        ORDER BY c.bundle_id
    LOOP
        PERFORM app_jobs._bundle_job_stopped(v_bundle.id, 'cancelled', v_bundle.n);
    END LOOP;
    RETURN cardinality(v_jobs);
END;
$$;

-- sql/src/130_finish_claim.sql
-- End one claim, fenced by (job id, worker, attempt): completed or cancelled jobs leave
-- the table, failed ones retry after retry_delay (from p_failed_at) until max_attempts. A
-- worker that no longer holds the claim changes nothing and gets NULL.
CREATE FUNCTION app_jobs._finish_claim(
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
    PERFORM app_jobs._lock_bundles(ARRAY[v_job.bundle_id]);

    IF p_outcome = 'completed' THEN
        DELETE FROM app_jobs.jobs AS j WHERE j.id = p_job_id RETURNING * INTO v_job;
        PERFORM app_jobs._job_stopped(
            v_job, 'completed', p_worker_id, v_started_at, p_result
        );
    ELSIF p_outcome = 'cancelled' OR v_job.cancel_requested_at IS NOT NULL THEN
        -- A cancelled job is never retried, whatever its handler did.
        DELETE FROM app_jobs.jobs AS j WHERE j.id = p_job_id RETURNING * INTO v_job;
        v_job.last_error := coalesce(p_error, 'cancelled');
        PERFORM app_jobs._job_stopped(
            v_job, 'cancelled', p_worker_id, v_started_at, NULL, p_error_data
        );
    ELSE
        UPDATE app_jobs.jobs AS j
        SET
            last_error = p_error,
            run_at = greatest(p_failed_at, j.run_at)
            + app_jobs._retry_delay(j.task_identifier, j.attempts),
            locked_by = NULL,
            locked_at = NULL
        WHERE j.id = p_job_id
        RETURNING * INTO v_job;
        IF v_job.attempts >= v_job.max_attempts THEN
            PERFORM app_jobs._job_stopped(
                v_job, 'failed', p_worker_id, v_started_at, NULL, p_error_data
            );
        ELSE
            PERFORM app_jobs._notify_job_stopped(v_job, 'failed', TRUE);
        END IF;
    END IF;
    -- The queue's running count (and its lock holder, once none runs) follows the job
    -- row through the _500_move_job_queue_count trigger.
    RETURN v_job;
END;
$$;

-- What a finished claim's row says happened: completed, retrying, failed or cancelled.
CREATE FUNCTION app_jobs._claim_status(p_job app_jobs.jobs, p_outcome text) RETURNS text
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
CREATE FUNCTION app_jobs.complete_job(
    worker_id text,
    job_id bigint
) RETURNS app_jobs.jobs
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
BEGIN
    PERFORM app_jobs._check_worker_id(worker_id);
    RETURN app_jobs._finish_claim(worker_id, job_id, NULL, 'completed');
END;
$$;

COMMENT ON FUNCTION app_jobs.complete_job IS
'Remove a finished job held by worker_id and release its queue';

-- sql/src/132_fail_job.sql
-- Record a failed attempt: unlock the job and push run_at back exponentially.
CREATE FUNCTION app_jobs.fail_job(
    worker_id text,
    job_id bigint,
    error_message text DEFAULT NULL
) RETURNS app_jobs.jobs
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
BEGIN
    PERFORM app_jobs._check_worker_id(worker_id);
    RETURN app_jobs._finish_claim(worker_id, job_id, NULL, 'failed', error_message);
END;
$$;

COMMENT ON FUNCTION app_jobs.fail_job IS
'Record a failed attempt; retried with backoff until max_attempts';

-- sql/src/133_finish_jobs.sql
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

-- sql/src/134_set_progress.sql
-- Store a running job's progress (0-100) and stage (at most 1000 characters, so the
-- jobs:progress notification stays far below NOTIFY's 8000-byte limit) and announce it;
-- false when the worker no longer holds the claim, NULL (nothing stored, never waited
-- for) while another session has the job's row locked: progress is a hint, report again.
CREATE FUNCTION app_jobs.set_progress(
    worker_id text,
    job_id bigint,
    progress integer,
    stage text DEFAULT NULL,
    attempt integer DEFAULT NULL
) RETURNS boolean
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
BEGIN
    PERFORM app_jobs._check_worker_id(worker_id);
    IF progress IS NULL OR progress NOT BETWEEN 0 AND 100 THEN
        RAISE EXCEPTION 'progress must be 0 to 100, got %', coalesce(progress::text, 'NULL')
            USING ERRCODE = 'PJ015';
    END IF;
    IF length(stage) > 1000 THEN
        RAISE EXCEPTION 'stage must be at most 1000 characters, got %', length(stage)
            USING ERRCODE = 'PJ039';
    END IF;
    UPDATE app_jobs.jobs AS j
    SET progress = set_progress.progress, stage = set_progress.stage
    WHERE j.id = (
        SELECT h.id FROM app_jobs.jobs AS h
        WHERE h.id = set_progress.job_id
            AND h.locked_by = set_progress.worker_id
            AND (set_progress.attempt IS NULL OR h.attempts = set_progress.attempt)
        FOR UPDATE SKIP LOCKED
    );
    IF NOT FOUND THEN
        -- Busy (its row locked elsewhere) while still this worker's claim: NULL.
        RETURN CASE WHEN EXISTS (
            SELECT 1 FROM app_jobs.jobs AS h
            WHERE h.id = set_progress.job_id
                AND h.locked_by = set_progress.worker_id
                AND (set_progress.attempt IS NULL OR h.attempts = set_progress.attempt)
        ) THEN NULL ELSE FALSE END;
    END IF;
    PERFORM app_jobs._notify(
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
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
DECLARE
    v_job app_jobs.jobs;
BEGIN
    -- Another tenant's job looks missing to a caller held to its own tenant.
    SELECT * INTO v_job FROM app_jobs.jobs AS j
    WHERE j.id = cancel_job.job_id AND app_jobs._tenant_allowed(j.database_id)
    FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF v_job.locked_at IS NOT NULL THEN
        UPDATE app_jobs.jobs AS j
        SET cancel_requested_at = coalesce(j.cancel_requested_at, now())
        WHERE j.id = v_job.id;
        PERFORM app_jobs._notify('jobs:cancel', v_job.id::text);
        RETURN 'cancelling';
    END IF;
    IF v_job.attempts >= v_job.max_attempts THEN
        RETURN 'failed';
    END IF;
    PERFORM app_jobs._lock_bundles(ARRAY[v_job.bundle_id]);
    DELETE FROM app_jobs.job_dependencies AS d WHERE d.job_id = v_job.id;
    DELETE FROM app_jobs.jobs AS j WHERE j.id = v_job.id RETURNING * INTO v_job;
    v_job.last_error := 'cancelled';
    PERFORM app_jobs._job_stopped(v_job, 'cancelled', NULL, NULL);
    RETURN 'cancelled';
END;
$$;

COMMENT ON FUNCTION app_jobs.cancel_job IS
'Cancel a waiting job now, or ask the worker running it to stop; never retried';

-- sql/src/136_end_cancelled_claims.sql
-- Claims being handed back whose job was asked to cancel end cancelled instead of
-- returning to the queue (a cancelled job never runs again). Returns how many ended.
CREATE FUNCTION app_jobs._end_cancelled_claims(p_job_ids bigint[]) RETURNS integer
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_locked bigint[];
    v_job app_jobs.jobs;
    v_count integer := 0;
BEGIN
    IF cardinality(p_job_ids) IS NULL OR cardinality(p_job_ids) = 0 THEN
        RETURN 0;
    END IF;
    -- Every row the loop writes, locked in the shared order (see _lock_jobs).
    v_locked := app_jobs._lock_jobs(p_job_ids);
    FOR v_job IN
        SELECT * FROM app_jobs.jobs AS j
        WHERE j.id = ANY(v_locked)
            AND j.locked_by IS NOT NULL
            AND j.cancel_requested_at IS NOT NULL
        ORDER BY j.queue_name NULLS FIRST, j.id
    LOOP
        PERFORM app_jobs._finish_claim(v_job.locked_by, v_job.id, NULL, 'cancelled');
        v_count := v_count + 1;
    END LOOP;
    RETURN v_count;
END;
$$;

-- sql/src/137_retry_delay.sql
-- How long a task's job waits after failed attempt number p_attempts: the task's retry
-- policy (task_settings), else the seed's exp(least(attempts, 10)) seconds.
CREATE FUNCTION app_jobs._retry_delay(p_task text, p_attempts integer) RETURNS interval
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_policy app_jobs.task_settings;
    v_seconds double precision;
    v_base double precision;
BEGIN
    SELECT * INTO v_policy FROM app_jobs.task_settings AS ts
    WHERE ts.task_identifier = p_task;
    v_base := coalesce(extract(EPOCH FROM v_policy.retry_base), 1);
    IF v_policy.task_identifier IS NULL OR v_policy.retry_kind = 'exponential' AND v_policy.retry_base IS NULL THEN
        v_seconds := exp(least(p_attempts, 10));
    ELSIF v_policy.retry_kind = 'exponential' THEN
        v_seconds := v_base * power(2, least(greatest(p_attempts, 1) - 1, 60));
    ELSIF v_policy.retry_kind = 'linear' THEN
        v_seconds := v_base * greatest(p_attempts, 1);
    ELSIF v_policy.retry_kind = 'fixed' THEN
        v_seconds := v_base;
    ELSE
        v_seconds := coalesce(extract(EPOCH FROM v_policy.retry_delays[
            least(greatest(p_attempts, 1), cardinality(v_policy.retry_delays))
        ]), 0);
    END IF;
    IF v_policy.retry_cap IS NOT NULL THEN
        v_seconds := least(v_seconds, extract(EPOCH FROM v_policy.retry_cap));
    END IF;
    IF v_policy.retry_jitter > 0 THEN
        v_seconds := v_seconds * (1 + v_policy.retry_jitter * (2 * random() - 1));
    END IF;
    -- Seconds, computed in floating point so a long schedule cannot overflow an
    -- interval; anything beyond a century is a century.
    RETURN make_interval(secs => least(v_seconds, 100 * 365.25 * 86400));
END;
$$;

-- sql/src/138_stop_jobs.sql
-- End jobs by hand (admin functions): p_status completed or cancelled deletes them,
-- failed keeps them with their attempts used up; each goes through job_stopped
-- (history, events, dependents, bundle). Jobs a live worker holds are skipped; a job
-- that had already failed for good stopped once already: it is only deleted, or (failed
-- again) given the new last_error and returned, as the original permanently_fail_jobs.
CREATE FUNCTION app_jobs._stop_jobs(
    p_job_ids bigint[],
    p_status text,
    p_error text DEFAULT NULL
) RETURNS SETOF app_jobs.jobs
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_locked bigint[];
    v_job app_jobs.jobs;
    v_stopped_before boolean;
BEGIN
    -- Every row the loop writes, locked in the shared order (see _lock_jobs).
    v_locked := app_jobs._lock_jobs(p_job_ids);
    FOR v_job IN
        SELECT * FROM app_jobs.jobs AS j
        WHERE j.id = ANY(v_locked)
            AND app_jobs._lock_is_free(j.locked_at, j.locked_by, app_jobs._job_expiry())
        ORDER BY j.queue_name NULLS FIRST, j.id
    LOOP
        v_stopped_before := v_job.locked_at IS NULL AND v_job.attempts >= v_job.max_attempts;
        IF p_status = 'failed' THEN
            UPDATE app_jobs.jobs AS j
            SET
                last_error = p_error,
                attempts = greatest(j.attempts, j.max_attempts),
                locked_at = NULL,
                locked_by = NULL
            WHERE j.id = v_job.id
            RETURNING * INTO v_job;
        ELSE
            DELETE FROM app_jobs.job_dependencies AS d WHERE d.job_id = v_job.id;
            DELETE FROM app_jobs.jobs AS j WHERE j.id = v_job.id RETURNING * INTO v_job;
            v_job.last_error := coalesce(p_error, v_job.last_error);
        END IF;
        IF NOT v_stopped_before THEN
            PERFORM app_jobs._job_stopped(v_job, p_status, NULL, NULL);
        END IF;
        RETURN NEXT v_job;
    END LOOP;
END;
$$;

-- sql/src/140_complete_jobs.sql
-- Remove jobs by id as done, skipping jobs a live worker holds.
CREATE FUNCTION app_jobs.complete_jobs(job_ids bigint[]) RETURNS SETOF app_jobs.jobs
LANGUAGE sql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
    SELECT * FROM app_jobs._stop_jobs(job_ids, 'completed');
$$;

COMMENT ON FUNCTION app_jobs.complete_jobs IS
'Admin: delete jobs by id unless a worker holds them';

-- sql/src/141_permanently_fail_jobs.sql
-- Mark jobs by id as failed for good, skipping jobs a live worker holds.
CREATE FUNCTION app_jobs.permanently_fail_jobs(
    job_ids bigint[],
    error_message text DEFAULT NULL
) RETURNS SETOF app_jobs.jobs
LANGUAGE sql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
    SELECT * FROM app_jobs._stop_jobs(
        job_ids, 'failed', coalesce(error_message, 'Manually marked as failed')
    );
$$;

COMMENT ON FUNCTION app_jobs.permanently_fail_jobs IS
'Admin: stop jobs from ever running again, keeping them for inspection';

-- sql/src/142_reschedule_jobs.sql
-- Change when and how jobs run, skipping jobs a live worker holds.
CREATE FUNCTION app_jobs.reschedule_jobs(
    job_ids bigint[],
    run_at timestamptz DEFAULT NULL,
    priority integer DEFAULT NULL,
    attempts integer DEFAULT NULL,
    max_attempts integer DEFAULT NULL
) RETURNS SETOF app_jobs.jobs
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
BEGIN
    IF reschedule_jobs.max_attempts IS NOT NULL THEN
        PERFORM app_jobs._check_job_spec('-', NULL, NULL, reschedule_jobs.max_attempts);
    END IF;
    RETURN QUERY
    UPDATE app_jobs.jobs AS j
    SET
        run_at = coalesce(reschedule_jobs.run_at, j.run_at),
        priority = coalesce(reschedule_jobs.priority, j.priority),
        attempts = coalesce(reschedule_jobs.attempts, j.attempts),
        max_attempts = coalesce(reschedule_jobs.max_attempts, j.max_attempts)
    WHERE j.id = ANY(job_ids)
        AND app_jobs._lock_is_free(j.locked_at, j.locked_by, app_jobs._job_expiry())
    RETURNING j.*;
END;
$$;

COMMENT ON FUNCTION app_jobs.reschedule_jobs IS
'Admin: set run_at, priority, attempts or max_attempts of jobs (NULL keeps)';

-- sql/src/143_remove_job.sql
-- Delete the job with a key, or strip the key from it if a worker holds it.
CREATE FUNCTION app_jobs.remove_job(job_key text) RETURNS app_jobs.jobs
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
DECLARE
    v_job app_jobs.jobs;
BEGIN
    SELECT * INTO v_job FROM app_jobs._stop_jobs(
        ARRAY(SELECT j.id FROM app_jobs.jobs AS j WHERE j.key = job_key), 'cancelled', 'removed'
    );
    IF v_job.id IS NOT NULL THEN
        RETURN v_job;
    END IF;

    -- Running: let it finish, but never retry it and free its key.
    UPDATE app_jobs.jobs AS j
    SET key = NULL, max_attempts = greatest(j.attempts, 1)
    WHERE j.key = job_key
    RETURNING * INTO v_job;
    RETURN v_job;
END;
$$;

COMMENT ON FUNCTION app_jobs.remove_job IS
'Remove the job that has job_key; a running one is only stopped from retrying';

-- sql/src/144_release_jobs.sql
-- Hand back the jobs (all, or only job_ids) and queues a worker holds, refunding the attempt.
CREATE FUNCTION app_jobs.release_jobs(
    worker_id text,
    job_ids bigint[] DEFAULT NULL
) RETURNS void
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
BEGIN
    PERFORM app_jobs._check_worker_id(worker_id);
    PERFORM app_jobs._end_cancelled_claims(ARRAY(
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
CREATE FUNCTION app_jobs.force_unlock_workers(worker_ids text[]) RETURNS void
LANGUAGE sql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
    SELECT app_jobs._end_cancelled_claims(ARRAY(
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
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
DECLARE
    v_worker app_jobs.workers;
BEGIN
    PERFORM app_jobs._check_worker_id(worker_id);
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

-- Record how new jobs wake a worker (listen, silent or poll; PJ044 otherwise); PJ019
-- when the worker is not registered.
CREATE FUNCTION app_jobs.set_worker_wakeup(worker_id text, wakeup text) RETURNS void
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
BEGIN
    PERFORM app_jobs._check_worker_id(worker_id);
    IF wakeup IS NULL OR wakeup NOT IN ('listen', 'silent', 'poll') THEN
        RAISE EXCEPTION 'wakeup must be listen, silent or poll, got %',
            coalesce(wakeup, 'NULL')
            USING ERRCODE = 'PJ044';
    END IF;
    UPDATE app_jobs.workers AS w SET wakeup = set_worker_wakeup.wakeup
    WHERE w.id = set_worker_wakeup.worker_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'worker % is not registered (presumed dead and reaped?)', worker_id
            USING ERRCODE = 'PJ019';
    END IF;
END;
$$;

COMMENT ON FUNCTION app_jobs.set_worker_wakeup IS
'How new jobs wake the worker: listen, silent (LISTEN hears nothing: polling) or poll';

-- A worker's sign of life; returns the claims it still holds and which must stop.
-- PJ019 when the worker is not registered (it was presumed dead and reaped).
CREATE FUNCTION app_jobs.worker_heartbeat(worker_id text)
RETURNS TABLE (job_id bigint, attempt integer, cancel_requested boolean)
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
BEGIN
    PERFORM app_jobs._check_worker_id(worker_id);
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
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
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
-- from every worker at once. Each dead worker is reaped in a subtransaction of its own:
-- one that cannot be (a lock wait timing out, say) is reported with status 'error' and a
-- WARNING, stays registered for the next reap, and the others are reaped. PJ013 when
-- dead_for is under 3 heartbeat intervals.
CREATE FUNCTION app_jobs.reap_dead_workers(dead_for interval DEFAULT '20 seconds')
RETURNS TABLE (worker_id text, job_id bigint, status text)
LANGUAGE plpgsql VOLATILE
-- JIT only slows these short queries down (and the planner's row guesses invite it).
SET jit = off
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
DECLARE
    v_longest interval;
    v_worker app_jobs.workers;
    v_job app_jobs.jobs;
    v_done app_jobs.jobs;
    v_error text;
    v_job_ids bigint[];
    v_locked bigint[];
    v_statuses text[];
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
        -- (Rows are returned only once the worker's subtransaction succeeded.)
        v_job_ids := '{}';
        v_statuses := '{}';
        BEGIN
            -- Every row the loop writes, locked in the shared order (see _lock_jobs).
            v_locked := app_jobs._lock_jobs(ARRAY(
                SELECT j.id FROM app_jobs.jobs AS j WHERE j.locked_by = v_worker.id
            ));
            FOR v_job IN
                SELECT * FROM app_jobs.jobs AS j
                WHERE j.id = ANY(v_locked) AND j.locked_by = v_worker.id
                ORDER BY j.queue_name NULLS FIRST, j.id
            LOOP
                v_done := app_jobs._finish_claim(
                    v_worker.id, v_job.id, NULL, 'failed', v_error,
                    jsonb_build_object(
                        'reason', 'worker_dead', 'worker_id', v_worker.id,
                        'last_heartbeat', v_worker.last_heartbeat
                    ),
                    NULL, v_worker.last_heartbeat
                );
                v_job_ids := v_job_ids || v_job.id;
                v_statuses := v_statuses || app_jobs._claim_status(v_done, 'failed');
            END LOOP;
            UPDATE app_jobs.job_queues AS q
            SET locked_by = NULL, locked_at = NULL
            WHERE q.locked_by = v_worker.id;
            DELETE FROM app_jobs.workers AS w WHERE w.id = v_worker.id;
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'pgjobs: dead worker % could not be reaped: % (SQLSTATE %)',
                v_worker.id, sqlerrm, sqlstate;
            worker_id := v_worker.id;
            job_id := NULL;
            status := 'error';
            RETURN NEXT;
            CONTINUE;
        END;
        RETURN QUERY
        SELECT v_worker.id, r.id, r.status
        FROM unnest(v_job_ids, v_statuses) WITH ORDINALITY AS r (id, status, n)
        ORDER BY r.n;
    END LOOP;
END;
$$;

COMMENT ON FUNCTION app_jobs.reap_dead_workers IS
'Rescue the jobs of workers silent for dead_for (>= 3 heartbeat intervals)';

-- sql/src/160_job_history.sql
-- Make the day partitions of job_history (UTC days, job_history_pYYYYMMDD) for today and
-- the next p_days_ahead days, and for each day within history_retention that has rows in
-- job_history_default (moved into their new partition); returns how many it made.
CREATE FUNCTION app_jobs._ensure_history_partitions(
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
CREATE FUNCTION app_jobs.purge_job_history() RETURNS integer
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

-- sql/src/161_manage_jobs.sql
-- Jobs waiting to run (now or later), in claim order.
CREATE FUNCTION app_jobs.waiting_jobs(
    task_identifiers text[] DEFAULT NULL,
    max_rows integer DEFAULT 100
) RETURNS SETOF app_jobs.jobs
LANGUAGE sql STABLE
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
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
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
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
CREATE FUNCTION app_jobs._check_not_running(p_job app_jobs.jobs) RETURNS void
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
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
DECLARE
    v_job app_jobs.jobs;
BEGIN
    SELECT * INTO v_job FROM app_jobs.jobs AS j WHERE j.id = retry_job.job_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    PERFORM app_jobs._check_not_running(v_job);
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
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
DECLARE
    v_job app_jobs.jobs;
BEGIN
    SELECT * INTO v_job FROM app_jobs.jobs AS j WHERE j.id = delete_job.job_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    PERFORM app_jobs._check_not_running(v_job);
    SELECT * INTO v_job FROM app_jobs._stop_jobs(ARRAY[v_job.id], 'cancelled', 'deleted');
    RETURN v_job;
END;
$$;

COMMENT ON FUNCTION app_jobs.delete_job IS
'Admin: delete one job unless it is running (PJ020); it counts as cancelled';

-- Delete finished work older than older_than: history rows and permanently failed jobs.
CREATE FUNCTION app_jobs.delete_finished_jobs(
    older_than interval DEFAULT '0'
) RETURNS integer
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
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

-- sql/src/180_bundles.sql
-- Lock bundle rows in id order: after job rows, before queue rows (the shared order).
CREATE FUNCTION app_jobs._lock_bundles(p_bundle_ids bigint[]) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    PERFORM 1 FROM app_jobs.job_bundles AS b
    WHERE b.id = ANY(p_bundle_ids)
    ORDER BY b.id
    FOR UPDATE;
END;
$$;

-- Count p_count stopped jobs of a bundle (none for a NULL status); when they were the
-- last (or the bundle is empty), stop the bundle: outcome,
-- the follow-up job (payload: bundle id, outcome, counts, the follow-up's own payload)
-- and a jobs:bundle_stopped event.
CREATE FUNCTION app_jobs._bundle_job_stopped(
    p_bundle_id bigint,
    p_status text,
    p_count integer DEFAULT 1
) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_bundle app_jobs.job_bundles;
    v_outcome text;
    v_followup app_jobs.jobs;
BEGIN
    UPDATE app_jobs.job_bundles AS b
    SET
        completed_count = b.completed_count
        + (p_status IS NOT DISTINCT FROM 'completed')::integer * p_count,
        failed_count = b.failed_count
        + (p_status IS NOT DISTINCT FROM 'failed')::integer * p_count,
        cancelled_count = b.cancelled_count
        + (p_status IS NOT DISTINCT FROM 'cancelled')::integer * p_count
    WHERE b.id = p_bundle_id AND b.stopped_at IS NULL
    RETURNING * INTO v_bundle;
    IF NOT FOUND
        OR v_bundle.completed_count + v_bundle.failed_count + v_bundle.cancelled_count
        < v_bundle.job_count THEN
        RETURN;
    END IF;

    v_outcome := CASE
        WHEN v_bundle.completed_count = v_bundle.job_count THEN 'completed' ELSE 'failed'
    END;
    IF v_bundle.followup IS NOT NULL THEN
        v_followup := app_jobs.add_job(
            db_id := v_bundle.database_id,
            identifier := v_bundle.followup ->> 'identifier',
            payload := json_build_object(
                'bundle_id', v_bundle.id,
                'bundle_type', v_bundle.bundle_type,
                'outcome', v_outcome,
                'completed', v_bundle.completed_count,
                'failed', v_bundle.failed_count,
                'cancelled', v_bundle.cancelled_count,
                'payload', v_bundle.followup -> 'payload'
            ),
            queue_name := v_bundle.followup ->> 'queue_name',
            priority := coalesce((v_bundle.followup ->> 'priority')::integer, 0),
            max_attempts := (v_bundle.followup ->> 'max_attempts')::integer,
            origin := v_bundle.origin
        );
    END IF;
    UPDATE app_jobs.job_bundles AS b
    SET outcome = v_outcome, stopped_at = now(), followup_job_id = v_followup.id
    WHERE b.id = v_bundle.id;
    PERFORM app_jobs._notify(
        'jobs:bundle_stopped',
        json_build_object(
            'id', v_bundle.id, 'bundle_type', v_bundle.bundle_type,
            'origin', v_bundle.origin, 'outcome', v_outcome,
            'followup_job_id', v_followup.id
        )::text
    );
END;
$$;

-- Create a bundle and its jobs in one go. jobs: a JSON array of job specs
-- {identifier, payload, queue_name, run_at, max_attempts, priority, timeout};
-- followup: an optional spec {identifier, payload, queue_name, priority, max_attempts}
-- for the job enqueued once every job of the bundle stopped.
CREATE FUNCTION app_jobs.add_bundle(
    bundle_type text,
    jobs jsonb,
    origin text DEFAULT NULL,
    followup jsonb DEFAULT NULL,
    db_id uuid DEFAULT nullif(current_setting('jwt.claims.database_id', TRUE), '')::uuid
) RETURNS app_jobs.job_bundles
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
DECLARE
    v_bundle app_jobs.job_bundles;
    v_bad jsonb;
    v_spec jsonb;
    v_job app_jobs.jobs;
BEGIN
    PERFORM app_jobs._check_tenant(db_id);
    IF jsonb_typeof(jobs) IS DISTINCT FROM 'array' OR jsonb_array_length(jobs) = 0 THEN
        RAISE EXCEPTION 'jobs must be a non-empty JSON array of job specs'
            USING ERRCODE = 'PJ026';
    END IF;
    SELECT e INTO v_bad FROM jsonb_array_elements(jobs) AS e
    WHERE jsonb_typeof(e) IS DISTINCT FROM 'object'
        OR jsonb_typeof(e -> 'identifier') IS DISTINCT FROM 'string'
        OR e ? 'job_key' OR e ? 'depends_on'
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'bad job spec in bundle: %', v_bad
            USING ERRCODE = 'PJ026',
            HINT = 'Each spec is an object with a string "identifier"; job_key and '
            || 'depends_on are not allowed in bundles.';
    END IF;
    IF followup IS NOT NULL
        AND (
            jsonb_typeof(followup) IS DISTINCT FROM 'object'
            OR jsonb_typeof(followup -> 'identifier') IS DISTINCT FROM 'string'
            OR length(followup ->> 'identifier') NOT BETWEEN 1 AND 126
            OR coalesce(jsonb_typeof(followup -> 'queue_name'), 'null') NOT IN ('string', 'null')
            OR length(followup ->> 'queue_name') NOT BETWEEN 1 AND 126
            OR coalesce(followup ->> 'priority', '0') !~ '^-?\d{1,9}$'
            OR coalesce(followup ->> 'max_attempts', '1') !~ '^\d{1,9}$'
            OR (followup ->> 'max_attempts')::integer < 1
        ) THEN
        RAISE EXCEPTION 'bad followup spec %', followup
            USING ERRCODE = 'PJ026',
            HINT = 'followup: {"identifier": 1-126 characters, "payload": any, '
            || '"queue_name": 1-126 characters, "priority": integer, "max_attempts": >= 1}';
    END IF;
    IF length(origin) NOT BETWEEN 1 AND 256 THEN
        RAISE EXCEPTION 'origin must be 1 to 256 characters, got %', length(origin)
            USING ERRCODE = 'PJ022';
    END IF;
    IF bundle_type IS NULL OR length(bundle_type) NOT BETWEEN 1 AND 126 THEN
        RAISE EXCEPTION 'bundle_type must be 1 to 126 characters'
            USING ERRCODE = 'PJ026';
    END IF;
    -- The follow-up must pass add_job's checks now, not when the bundle's last job
    -- finishes (that job's completion would fail): its name rules (PJ031, PJ032),
    -- max_attempts (PJ035), and its payload as enqueued, counts at their largest (PJ033,
    -- PJ037).
    IF followup IS NOT NULL THEN
        PERFORM app_jobs._check_job_spec(
            followup ->> 'identifier', followup ->> 'queue_name', NULL,
            (followup ->> 'max_attempts')::integer
        );
        PERFORM app_jobs._check_payload(json_build_object(
            'bundle_id', 9223372036854775807, 'bundle_type', bundle_type,
            'outcome', 'completed', 'completed', 2147483647, 'failed', 2147483647,
            'cancelled', 2147483647, 'payload', followup -> 'payload'
        ));
    END IF;

    INSERT INTO app_jobs.job_bundles AS b (
        database_id, bundle_type, origin, job_count, followup
    ) VALUES (db_id, bundle_type, origin, jsonb_array_length(jobs), followup)
    RETURNING * INTO v_bundle;

    FOR v_spec IN SELECT e FROM jsonb_array_elements(jobs) AS e LOOP
        v_job := app_jobs.add_job(
            db_id := db_id,
            identifier := v_spec ->> 'identifier',
            payload := coalesce((v_spec -> 'payload')::json, '{}'::json),
            queue_name := v_spec ->> 'queue_name',
            run_at := coalesce((v_spec ->> 'run_at')::timestamptz, now()),
            max_attempts := (v_spec ->> 'max_attempts')::integer,
            priority := coalesce((v_spec ->> 'priority')::integer, 0),
            timeout := (v_spec ->> 'timeout')::interval,
            origin := coalesce(v_spec ->> 'origin', add_bundle.origin)
        );
        IF v_job.id IS NULL THEN
            -- Enqueues of this task are being ignored (test helpers): one job fewer.
            UPDATE app_jobs.job_bundles AS b SET job_count = b.job_count - 1
            WHERE b.id = v_bundle.id;
            CONTINUE;
        END IF;
        UPDATE app_jobs.jobs AS j SET bundle_id = v_bundle.id WHERE j.id = v_job.id;
    END LOOP;
    -- Every job ignored (test helpers): the bundle stops at once.
    PERFORM app_jobs._bundle_job_stopped(v_bundle.id, NULL);
    SELECT * INTO v_bundle FROM app_jobs.job_bundles AS b WHERE b.id = v_bundle.id;
    RETURN v_bundle;
END;
$$;

COMMENT ON FUNCTION app_jobs.add_bundle IS
'Create a bundle of jobs atomically; its follow-up job runs once all of them stopped';

-- A bundle job that had failed for good and is given new attempts (retry_job,
-- reschedule_jobs, a key upsert) is no longer counted as failed.
CREATE FUNCTION app_jobs._tg_bundle_job_revived() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    UPDATE app_jobs.job_bundles AS b
    SET failed_count = b.failed_count - 1
    WHERE b.id = new.bundle_id AND b.stopped_at IS NULL AND b.failed_count > 0;
    RETURN NULL;
END;
$$;

CREATE TRIGGER _600_bundle_job_revived
AFTER UPDATE OF attempts, max_attempts ON app_jobs.jobs
FOR EACH ROW WHEN (
    new.bundle_id IS NOT NULL
    AND old.locked_at IS NULL AND old.attempts >= old.max_attempts
    AND new.attempts < new.max_attempts
)
EXECUTE FUNCTION app_jobs._tg_bundle_job_revived();

-- sql/src/190_flow_settings.sql
-- Set a task's retry policy, default max_attempts and timeout, and start-rate limit
-- (rate_limit starts per rate_interval, bursts up to rate_burst); the whole row is
-- replaced, so a setting left out goes back to its default. PJ024 on bad values, PJ035
-- for max_attempts above 10000, PJ038 for a timeout over 100 years (as add_job).
CREATE FUNCTION app_jobs.set_task_settings(
    task_identifier text,
    retry_kind text DEFAULT 'exponential',
    retry_base interval DEFAULT NULL,
    retry_cap interval DEFAULT NULL,
    retry_jitter double precision DEFAULT 0,
    retry_delays interval[] DEFAULT NULL,
    max_attempts integer DEFAULT NULL,
    timeout interval DEFAULT NULL,
    rate_limit integer DEFAULT NULL,
    rate_interval interval DEFAULT NULL,
    rate_burst integer DEFAULT NULL
) RETURNS app_jobs.task_settings
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
DECLARE
    v_row app_jobs.task_settings;
BEGIN
    IF task_identifier IS NULL OR length(task_identifier) NOT BETWEEN 1 AND 126 THEN
        RAISE EXCEPTION 'task identifier must be 1 to 126 characters'
            USING ERRCODE = 'PJ001';
    END IF;
    -- The bounds add_job holds a job to, so a task default cannot make add_job (or the
    -- scheduler tick) refuse every job of the task later.
    IF set_task_settings.max_attempts > 10000 THEN
        RAISE EXCEPTION 'max_attempts must be at most 10000, got %',
            set_task_settings.max_attempts
            USING ERRCODE = 'PJ035';
    END IF;
    IF set_task_settings.timeout > interval '100 years' THEN
        RAISE EXCEPTION 'timeout must be at most 100 years, got %', set_task_settings.timeout
            USING ERRCODE = 'PJ038';
    END IF;
    IF coalesce(retry_kind, 'exponential') NOT IN ('exponential', 'linear', 'fixed', 'list')
        OR retry_kind = 'list' AND coalesce(cardinality(retry_delays), 0) = 0
        OR retry_base <= interval '0' OR retry_cap <= interval '0'
        OR NOT coalesce(retry_jitter, 0) BETWEEN 0 AND 1
        OR EXISTS (SELECT 1 FROM unnest(retry_delays) AS d WHERE d IS NULL OR d < interval '0')
        OR max_attempts < 1 OR timeout <= interval '0'
        OR (rate_limit IS NULL) <> (rate_interval IS NULL)
        OR rate_limit < 1 OR rate_interval <= interval '0' OR rate_burst < 1
        OR rate_burst IS NOT NULL AND rate_limit IS NULL THEN
        RAISE EXCEPTION 'invalid task settings for %', task_identifier
            USING ERRCODE = 'PJ024',
            HINT = 'retry_kind: exponential, linear, fixed or list (list needs retry_delays); '
            || 'intervals positive; retry_jitter 0 to 1; max_attempts >= 1; rate_limit '
            || 'and rate_interval together, both positive; rate_burst >= 1.';
    END IF;
    INSERT INTO app_jobs.task_settings AS ts (
        task_identifier, retry_kind, retry_base, retry_cap, retry_jitter, retry_delays,
        max_attempts, timeout, rate_limit, rate_interval, rate_burst, tokens, refilled_at
    ) VALUES (
        set_task_settings.task_identifier, coalesce(set_task_settings.retry_kind, 'exponential'),
        set_task_settings.retry_base, set_task_settings.retry_cap,
        coalesce(set_task_settings.retry_jitter, 0), set_task_settings.retry_delays,
        set_task_settings.max_attempts, set_task_settings.timeout,
        set_task_settings.rate_limit, set_task_settings.rate_interval,
        set_task_settings.rate_burst, 0, clock_timestamp()
    )
    ON CONFLICT ON CONSTRAINT task_settings_pkey DO UPDATE SET
        retry_kind = excluded.retry_kind,
        retry_base = excluded.retry_base,
        retry_cap = excluded.retry_cap,
        retry_jitter = excluded.retry_jitter,
        retry_delays = excluded.retry_delays,
        max_attempts = excluded.max_attempts,
        timeout = excluded.timeout,
        rate_limit = excluded.rate_limit,
        rate_interval = excluded.rate_interval,
        rate_burst = excluded.rate_burst,
        -- An unchanged rate limit keeps its bucket; a new one starts empty.
        tokens = CASE
            WHEN (ts.rate_limit, ts.rate_interval) IS NOT DISTINCT FROM
                (excluded.rate_limit, excluded.rate_interval) THEN ts.tokens
            ELSE 0
        END,
        refilled_at = CASE
            WHEN (ts.rate_limit, ts.rate_interval) IS NOT DISTINCT FROM
                (excluded.rate_limit, excluded.rate_interval) THEN ts.refilled_at
            ELSE clock_timestamp()
        END
    RETURNING * INTO v_row;
    RETURN v_row;
END;
$$;

COMMENT ON FUNCTION app_jobs.set_task_settings IS
'Per task: retry policy, default max_attempts/timeout, rate limit (PJ024 on bad values)';

-- Let a named queue run up to max_concurrency jobs at once (1, the default, is serial).
CREATE FUNCTION app_jobs.set_queue_concurrency(
    queue_name text,
    max_concurrency integer
) RETURNS integer
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
BEGIN
    IF queue_name IS NULL OR length(queue_name) NOT BETWEEN 1 AND 126 THEN
        RAISE EXCEPTION 'queue name must be 1 to 126 characters'
            USING ERRCODE = 'PJ002';
    END IF;
    IF max_concurrency IS NULL OR max_concurrency < 1 THEN
        RAISE EXCEPTION 'max_concurrency must be at least 1, got %',
            coalesce(max_concurrency::text, 'NULL')
            USING ERRCODE = 'PJ025';
    END IF;
    IF max_concurrency = 1 THEN
        DELETE FROM app_jobs.queue_settings AS qs
        WHERE qs.queue_name = set_queue_concurrency.queue_name;
    ELSE
        INSERT INTO app_jobs.queue_settings AS qs (queue_name, max_concurrency)
        VALUES (set_queue_concurrency.queue_name, set_queue_concurrency.max_concurrency)
        ON CONFLICT ON CONSTRAINT queue_settings_pkey
        DO UPDATE SET max_concurrency = excluded.max_concurrency;
    END IF;
    RETURN max_concurrency;
END;
$$;

COMMENT ON FUNCTION app_jobs.set_queue_concurrency IS
'How many jobs of a named queue may run at once (PJ025 below 1)';

-- sql/src/200_tg_timestamps.sql
-- Keep created_at fixed and updated_at current on every row update.
CREATE FUNCTION app_jobs._tg_timestamps() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    NEW.created_at := OLD.created_at;
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

-- On jobs the hot statements (claims, finishes) set updated_at themselves; the trigger
-- (a PL/pgSQL call per row) runs only for an update that does not, or that touches
-- created_at.
CREATE TRIGGER _100_timestamps
BEFORE UPDATE ON app_jobs.jobs
FOR EACH ROW WHEN (
    new.updated_at IS NOT DISTINCT FROM old.updated_at
    OR new.created_at IS DISTINCT FROM old.created_at
)
EXECUTE FUNCTION app_jobs._tg_timestamps();

CREATE TRIGGER _100_timestamps
BEFORE UPDATE ON app_jobs.scheduled_jobs
FOR EACH ROW EXECUTE FUNCTION app_jobs._tg_timestamps();

-- sql/src/210_tg_job_queue_count.sql
-- Add deltas to a named queue's job and running counts; create the row at first use,
-- drop it at zero jobs, and clear its lock holder once nothing of it runs.
CREATE FUNCTION app_jobs._change_job_queue_count(
    p_queue_name text,
    p_delta integer,
    p_running_delta integer DEFAULT 0
) RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    v_count integer;
BEGIN
    IF p_queue_name IS NULL THEN
        RETURN;
    END IF;
    IF p_delta > 0 THEN
        INSERT INTO app_jobs.job_queues AS q (queue_name, job_count, running_count)
        VALUES (p_queue_name, p_delta, p_running_delta)
        ON CONFLICT (queue_name) DO UPDATE SET
            job_count = q.job_count + p_delta,
            running_count = q.running_count + p_running_delta;
        RETURN;
    END IF;
    UPDATE app_jobs.job_queues AS q
    SET
        job_count = q.job_count + p_delta,
        running_count = q.running_count + p_running_delta,
        locked_by = CASE WHEN q.running_count + p_running_delta > 0 THEN q.locked_by END,
        locked_at = CASE WHEN q.running_count + p_running_delta > 0 THEN q.locked_at END
    WHERE q.queue_name = p_queue_name
    RETURNING q.job_count INTO v_count;
    IF v_count <= 0 THEN
        DELETE FROM app_jobs.job_queues AS q
        WHERE q.queue_name = p_queue_name AND q.job_count <= 0;
    END IF;
END;
$$;

-- Count a statement's inserted jobs into their named queues, in queue-name order.
CREATE FUNCTION app_jobs._tg_increase_job_queue_count() RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    v_queue record;
BEGIN
    FOR v_queue IN
        SELECT
            n.queue_name,
            count(*)::integer AS jobs,
            (count(*) FILTER (WHERE n.locked_at IS NOT NULL))::integer AS running
        FROM new_jobs AS n
        WHERE n.queue_name IS NOT NULL
        GROUP BY n.queue_name
        ORDER BY n.queue_name
    LOOP
        PERFORM app_jobs._change_job_queue_count(
            v_queue.queue_name, v_queue.jobs, v_queue.running
        );
    END LOOP;
    RETURN NULL;
END;
$$;

-- Count a statement's deleted jobs out of their named queues, in queue-name order.
CREATE FUNCTION app_jobs._tg_decrease_job_queue_count() RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    v_queue record;
BEGIN
    FOR v_queue IN
        SELECT
            o.queue_name,
            count(*)::integer AS jobs,
            (count(*) FILTER (WHERE o.locked_at IS NOT NULL))::integer AS running
        FROM old_jobs AS o
        WHERE o.queue_name IS NOT NULL
        GROUP BY o.queue_name
        ORDER BY o.queue_name
    LOOP
        PERFORM app_jobs._change_job_queue_count(
            v_queue.queue_name, -v_queue.jobs, -v_queue.running
        );
    END LOOP;
    RETURN NULL;
END;
$$;

-- Move a job's counts between queues, or count it in or out of its queue's running
-- jobs; two queue rows are taken in name order so opposite moves cannot deadlock.
CREATE FUNCTION app_jobs._tg_move_job_queue_count() RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    v_old_running integer := (old.locked_at IS NOT NULL)::integer;
    v_new_running integer := (new.locked_at IS NOT NULL)::integer;
BEGIN
    IF old.queue_name IS NOT DISTINCT FROM new.queue_name THEN
        PERFORM app_jobs._change_job_queue_count(
            new.queue_name, 0, v_new_running - v_old_running
        );
    ELSIF old.queue_name IS NOT NULL
        AND (new.queue_name IS NULL OR old.queue_name < new.queue_name) THEN
        PERFORM app_jobs._change_job_queue_count(old.queue_name, -1, -v_old_running);
        PERFORM app_jobs._change_job_queue_count(new.queue_name, 1, v_new_running);
    ELSE
        PERFORM app_jobs._change_job_queue_count(new.queue_name, 1, v_new_running);
        PERFORM app_jobs._change_job_queue_count(old.queue_name, -1, -v_old_running);
    END IF;
    RETURN NULL;
END;
$$;

-- Statement-level, so a statement touching many queues locks their rows in name order
-- (as every other path does) and two such statements cannot deadlock on job_queues.
CREATE TRIGGER _500_increase_job_queue_count
AFTER INSERT ON app_jobs.jobs
REFERENCING NEW TABLE AS new_jobs
FOR EACH STATEMENT EXECUTE FUNCTION app_jobs._tg_increase_job_queue_count();

CREATE TRIGGER _500_decrease_job_queue_count
AFTER DELETE ON app_jobs.jobs
REFERENCING OLD TABLE AS old_jobs
FOR EACH STATEMENT EXECUTE FUNCTION app_jobs._tg_decrease_job_queue_count();

CREATE TRIGGER _500_move_job_queue_count
AFTER UPDATE OF queue_name, locked_at ON app_jobs.jobs
FOR EACH ROW WHEN (
    new.queue_name IS DISTINCT FROM old.queue_name
    OR new.queue_name IS NOT NULL AND (new.locked_at IS NULL) <> (old.locked_at IS NULL)
)
EXECUTE FUNCTION app_jobs._tg_move_job_queue_count();

-- sql/src/220_tg_notify_worker.sql
-- Wake listening workers once per statement that adds jobs.
CREATE FUNCTION app_jobs._tg_notify_worker() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM app_jobs._notify('jobs:insert', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER _900_notify_worker
AFTER INSERT ON app_jobs.jobs
FOR EACH STATEMENT EXECUTE FUNCTION app_jobs._tg_notify_worker();

-- sql/src/300_trigger_helpers.sql
-- The trigger functions below run with the rights of whoever fires them (SECURITY
-- INVOKER, see 950_security.sql): turning the row into JSON may run casts of the
-- caller's own types, which must never run as the extension's owner. Only the finished
-- payload crosses into add_job, which checks the tenant and enqueues as the owner.

-- Enqueue for a user's trigger: task from the trigger's first argument, tenant from the
-- row's database_id column when it has one (else db_id's default, the claim).
CREATE FUNCTION app_jobs._enqueue_from_trigger(
    p_tg_argv text[],
    p_row jsonb,
    p_payload json
) RETURNS app_jobs.jobs
LANGUAGE plpgsql VOLATILE
SECURITY INVOKER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
DECLARE
    -- TG_ARGV counts from 0: take the first element whatever the lower bound.
    v_task text := p_tg_argv[array_lower(p_tg_argv, 1)];
BEGIN
    IF coalesce(cardinality(p_tg_argv), 0) < 1 THEN
        RAISE EXCEPTION 'job trigger needs the task identifier as its first argument'
            USING ERRCODE = 'PJ007';
    END IF;
    IF p_row ? 'database_id' THEN
        RETURN app_jobs.add_job(
            db_id := (p_row ->> 'database_id')::uuid,
            identifier := v_task,
            payload := p_payload
        );
    END IF;
    RETURN app_jobs.add_job(identifier := v_task, payload := p_payload);
END;
$$;

-- Row trigger: enqueue TG_ARGV[0] with payload {"id": <row id>}.
CREATE FUNCTION app_jobs.tg_add_job_with_row_id() RETURNS trigger
LANGUAGE plpgsql VOLATILE
SECURITY INVOKER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
DECLARE
    v_row jsonb := to_jsonb(CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END);
BEGIN
    PERFORM app_jobs._enqueue_from_trigger(
        TG_ARGV, v_row, json_build_object('id', v_row -> 'id')
    );
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END;
$$;

COMMENT ON FUNCTION app_jobs.tg_add_job_with_row_id IS
'Row trigger: enqueue the task named by the first argument with {"id": row.id}';

-- Row trigger: enqueue TG_ARGV[0] with the whole row as payload.
CREATE FUNCTION app_jobs.tg_add_job_with_row() RETURNS trigger
LANGUAGE plpgsql VOLATILE
SECURITY INVOKER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
DECLARE
    v_row jsonb := to_jsonb(CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END);
BEGIN
    PERFORM app_jobs._enqueue_from_trigger(
        TG_ARGV,
        v_row,
        to_json(CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END)
    );
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END;
$$;

COMMENT ON FUNCTION app_jobs.tg_add_job_with_row IS
'Row trigger: enqueue the task named by the first argument with the row as payload';

-- Row trigger: enqueue TG_ARGV[0] with the columns named by the other arguments.
CREATE FUNCTION app_jobs.trigger_job_with_fields() RETURNS trigger
LANGUAGE plpgsql VOLATILE
SECURITY INVOKER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
DECLARE
    v_row jsonb := to_jsonb(CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END);
    v_payload jsonb := '{}'::jsonb;
    v_field text;
BEGIN
    FOREACH v_field IN ARRAY coalesce(TG_ARGV[1:], ARRAY[]::text[])
    LOOP
        IF NOT v_row ? v_field THEN
            RAISE EXCEPTION 'job trigger field "%" is not a column of %.%',
                v_field, TG_TABLE_SCHEMA, TG_TABLE_NAME
                USING ERRCODE = 'PJ007';
        END IF;
        v_payload := v_payload || jsonb_build_object(v_field, v_row -> v_field);
    END LOOP;
    PERFORM app_jobs._enqueue_from_trigger(TG_ARGV, v_row, v_payload::json);
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END;
$$;

COMMENT ON FUNCTION app_jobs.trigger_job_with_fields IS
'Row trigger: arguments are the task, then the columns copied into the payload';

-- sql/src/400_add_scheduled_job.sql
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

-- sql/src/410_run_scheduled_job.sql
-- Enqueue one job now from a recurring job's definition, with the schedule's key (an
-- upsert, as add_job does). Refused with PJ041 (message ALREADY_SCHEDULED, as the
-- original app_jobs.run_scheduled_job) while the job it enqueued last is still waiting
-- (or waiting to retry), or has been running for less than job_expiry.
CREATE FUNCTION app_jobs.run_scheduled_job(
    scheduled_job_id bigint,
    job_expiry interval DEFAULT '1 hour'
) RETURNS app_jobs.jobs
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
DECLARE
    v_schedule app_jobs.scheduled_jobs;
    v_job app_jobs.jobs;
BEGIN
    PERFORM app_jobs._check_job_expiry(job_expiry);
    SELECT * INTO v_schedule
    FROM app_jobs.scheduled_jobs AS s
    WHERE s.id = scheduled_job_id
    FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'scheduled job % does not exist', scheduled_job_id
            USING ERRCODE = 'PJ009';
    END IF;
    -- (The schedule's row is locked: two callers cannot both pass this check.)
    SELECT * INTO v_job FROM app_jobs.jobs AS j
    WHERE j.id = v_schedule.last_scheduled_id
        AND (
            j.locked_at IS NULL AND j.attempts < j.max_attempts
            OR j.locked_at >= now() - coalesce(job_expiry, interval '1 hour')
        );
    IF FOUND THEN
        RAISE EXCEPTION 'ALREADY_SCHEDULED'
            USING ERRCODE = 'PJ041',
            DETAIL = format(
                'Job %s, enqueued last by scheduled job %s, is still %s.', v_job.id,
                scheduled_job_id,
                CASE WHEN v_job.locked_at IS NULL THEN 'waiting' ELSE 'running' END
            );
    END IF;

    v_job := app_jobs.add_job(
        db_id := v_schedule.database_id,
        identifier := v_schedule.task_identifier,
        payload := v_schedule.payload,
        job_key := v_schedule.key,
        queue_name := v_schedule.queue_name,
        max_attempts := v_schedule.max_attempts,
        priority := v_schedule.priority
    );

    UPDATE app_jobs.scheduled_jobs AS s
    SET last_scheduled = now(), last_scheduled_id = coalesce(v_job.id, s.last_scheduled_id)
    WHERE s.id = scheduled_job_id;
    RETURN v_job;
END;
$$;

COMMENT ON FUNCTION app_jobs.run_scheduled_job IS
'Enqueue a job now from the scheduled job with this id (with its key); PJ041 '
'ALREADY_SCHEDULED while the job it enqueued last still waits or runs within job_expiry';

-- sql/src/420_get_scheduled_job.sql
-- Lock the next unlocked recurring job that is not paused for a scheduler worker.
CREATE FUNCTION app_jobs.get_scheduled_job(
    worker_id text,
    task_identifiers text[] DEFAULT NULL
) RETURNS app_jobs.scheduled_jobs
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
DECLARE
    v_row app_jobs.scheduled_jobs;
BEGIN
    PERFORM app_jobs._check_worker_id(worker_id);

    UPDATE app_jobs.scheduled_jobs AS s
    SET locked_by = worker_id, locked_at = now()
    WHERE s.id = (
        SELECT n.id FROM app_jobs.scheduled_jobs AS n
        WHERE n.locked_at IS NULL AND n.paused_at IS NULL
            AND (task_identifiers IS NULL OR n.task_identifier = ANY(task_identifiers))
        ORDER BY n.priority, n.id
        LIMIT 1
        FOR UPDATE SKIP LOCKED
    )
    RETURNING * INTO v_row;
    RETURN v_row;
END;
$$;

COMMENT ON FUNCTION app_jobs.get_scheduled_job IS
'Lock the next unlocked, unpaused scheduled job for worker_id; NULLs when none';

-- Unlock the recurring jobs a scheduler worker holds (all, or the given ids).
CREATE FUNCTION app_jobs.release_scheduled_jobs(
    worker_id text,
    ids bigint[] DEFAULT NULL
) RETURNS void
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
BEGIN
    PERFORM app_jobs._check_worker_id(worker_id);

    UPDATE app_jobs.scheduled_jobs AS s
    SET locked_by = NULL, locked_at = NULL
    WHERE s.locked_by = release_scheduled_jobs.worker_id
        AND (ids IS NULL OR s.id = ANY(ids));
END;
$$;

COMMENT ON FUNCTION app_jobs.release_scheduled_jobs IS
'Unlock scheduled jobs held by worker_id (all, or only ids)';

-- sql/src/430_pause_scheduled_job.sql
-- Pause a recurring job: the scheduler tick (and get_scheduled_job) leave it alone until
-- it is resumed; run_scheduled_job still runs it on demand. Pausing a paused schedule
-- keeps its paused_at. PJ009 when there is no such schedule, or it belongs to a tenant
-- the caller may not act on (it looks missing).
CREATE FUNCTION app_jobs.pause_scheduled_job(
    scheduled_job_id bigint
) RETURNS app_jobs.scheduled_jobs
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
DECLARE
    v_row app_jobs.scheduled_jobs;
BEGIN
    -- The tenant check is part of the UPDATE: no row of another tenant is ever touched.
    UPDATE app_jobs.scheduled_jobs AS s
    SET paused_at = coalesce(s.paused_at, now())
    WHERE s.id = pause_scheduled_job.scheduled_job_id
        AND app_jobs._tenant_allowed(s.database_id)
    RETURNING * INTO v_row;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'scheduled job % does not exist', scheduled_job_id
            USING ERRCODE = 'PJ009';
    END IF;
    RETURN v_row;
END;
$$;

COMMENT ON FUNCTION app_jobs.pause_scheduled_job IS
'Pause the scheduled job with this id (the tick skips it until resumed); PJ009 when unknown';

-- Resume a paused recurring job: its next run is the first slot after now(); the slots
-- it missed while paused are not enqueued (not even with backfill). Resuming a schedule
-- that is not paused changes nothing. PJ009 as for pause_scheduled_job.
CREATE FUNCTION app_jobs.resume_scheduled_job(
    scheduled_job_id bigint
) RETURNS app_jobs.scheduled_jobs
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
DECLARE
    v_row app_jobs.scheduled_jobs;
BEGIN
    -- The tenant check is part of the UPDATE, as in pause_scheduled_job.
    UPDATE app_jobs.scheduled_jobs AS s
    SET
        paused_at = NULL,
        next_run_at = CASE
            WHEN s.paused_at IS NULL THEN s.next_run_at
            ELSE app_jobs.schedule_next_run(s.schedule_info, now())
        END
    WHERE s.id = resume_scheduled_job.scheduled_job_id
        AND app_jobs._tenant_allowed(s.database_id)
    RETURNING * INTO v_row;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'scheduled job % does not exist', scheduled_job_id
            USING ERRCODE = 'PJ009';
    END IF;
    RETURN v_row;
END;
$$;

COMMENT ON FUNCTION app_jobs.resume_scheduled_job IS
'Resume a paused scheduled job from the first slot after now() (missed slots are not '
'enqueued); PJ009 when unknown';

-- sql/src/500_cron_field.sql
-- One value of a cron field: a number or a name, checked against the field's range.
CREATE FUNCTION app_jobs._cron_value(
    p_value text,
    p_min integer,
    p_max integer,
    p_names text[]
) RETURNS integer
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
    v_result integer;
BEGIN
    IF p_value ~ '^\d{1,4}$' THEN
        v_result := p_value::integer;
    ELSE
        v_result := array_position(p_names, p_value) - 1 + p_min;
    END IF;
    IF v_result IS NULL OR v_result NOT BETWEEN p_min AND p_max THEN
        RAISE EXCEPTION 'cron value "%" is not in %..%', p_value, p_min, p_max
            USING ERRCODE = 'PJ008';
    END IF;
    RETURN v_result;
END;
$$;

-- The sorted values a cron field (lists, ranges, steps, names, *) matches.
CREATE FUNCTION app_jobs._cron_field(
    p_field text,
    p_min integer,
    p_max integer,
    p_names text[] DEFAULT NULL
) RETURNS integer[]
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
    v_part text;
    v_match text[];
    v_bounds text[];
    v_step integer;
    v_lo integer;
    v_hi integer;
    v_result integer[] := '{}';
BEGIN
    IF p_field IS NULL OR p_field = '' THEN
        RAISE EXCEPTION 'empty cron field' USING ERRCODE = 'PJ008';
    END IF;
    FOREACH v_part IN ARRAY string_to_array(lower(p_field), ',') LOOP
        v_match := regexp_match(v_part, '^([^/]+)(/(\d{1,4}))?$');
        IF v_match IS NULL THEN
            RAISE EXCEPTION 'invalid cron field "%"', p_field USING ERRCODE = 'PJ008';
        END IF;
        v_step := coalesce(v_match[3]::integer, 1);
        IF v_step < 1 THEN
            RAISE EXCEPTION 'cron step must be at least 1 in "%"', p_field
                USING ERRCODE = 'PJ008';
        END IF;
        IF v_match[1] = '*' THEN
            v_lo := p_min;
            v_hi := p_max;
        ELSE
            v_bounds := regexp_match(v_match[1], '^([a-z0-9]+)(-([a-z0-9]+))?$');
            IF v_bounds IS NULL THEN
                RAISE EXCEPTION 'invalid cron field "%"', p_field USING ERRCODE = 'PJ008';
            END IF;
            v_lo := app_jobs._cron_value(v_bounds[1], p_min, p_max, p_names);
            v_hi := CASE
                WHEN v_bounds[3] IS NOT NULL
                    THEN app_jobs._cron_value(v_bounds[3], p_min, p_max, p_names)
                WHEN v_match[3] IS NOT NULL THEN p_max
                ELSE v_lo
            END;
            IF v_lo > v_hi THEN
                RAISE EXCEPTION 'cron range "%" runs backwards', v_match[1]
                    USING ERRCODE = 'PJ008';
            END IF;
        END IF;
        v_result := v_result || array(SELECT generate_series(v_lo, v_hi, v_step));
    END LOOP;
    RETURN array(SELECT DISTINCT v FROM unnest(v_result) AS v ORDER BY v);
END;
$$;

-- sql/src/501_schedule_spec.sql
-- Validate schedule_info and expand it into the sets of matching values.
CREATE FUNCTION app_jobs._schedule_spec(p_info json) RETURNS jsonb
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    v_info jsonb;
    v_tz text;
    v_rule text;
    v_fields text[];
    v_sets jsonb := '{}'::jsonb;
    v_key text;
    v_json_keys text[] := ARRAY['minute', 'hour', 'dayOfMonth', 'month', 'dayOfWeek'];
    v_mins integer[] := ARRAY[0, 0, 1, 1, 0];
    v_maxs integer[] := ARRAY[59, 23, 31, 12, 7];
    v_values integer[];
    v_star boolean[] := ARRAY[TRUE, TRUE, TRUE, TRUE, TRUE];
    v_start timestamptz;
    v_end timestamptz;
    v_backfill interval;
    i integer;
BEGIN
    IF p_info IS NULL OR json_typeof(p_info) <> 'object' THEN
        RAISE EXCEPTION 'schedule_info must be a JSON object' USING ERRCODE = 'PJ008';
    END IF;
    v_info := p_info::jsonb;

    v_tz := coalesce(v_info ->> 'tz', 'UTC');
    BEGIN
        PERFORM now() AT TIME ZONE v_tz;
    EXCEPTION WHEN invalid_parameter_value THEN
        RAISE EXCEPTION 'unknown time zone "%"', v_tz USING ERRCODE = 'PJ010';
    END;

    IF v_info ? 'rule' THEN
        v_rule := lower(btrim(v_info ->> 'rule'));
        v_rule := CASE v_rule
            WHEN '@yearly' THEN '0 0 1 1 *'
            WHEN '@annually' THEN '0 0 1 1 *'
            WHEN '@monthly' THEN '0 0 1 * *'
            WHEN '@weekly' THEN '0 0 * * 0'
            WHEN '@daily' THEN '0 0 * * *'
            WHEN '@midnight' THEN '0 0 * * *'
            WHEN '@hourly' THEN '0 * * * *'
            ELSE v_rule
        END;
        v_fields := regexp_split_to_array(coalesce(v_rule, ''), '\s+');
        IF cardinality(v_fields) <> 5 THEN
            RAISE EXCEPTION 'cron rule "%" must have 5 fields', v_info ->> 'rule'
                USING ERRCODE = 'PJ008';
        END IF;
        FOR i IN 1..5 LOOP
            v_values := app_jobs._cron_field(
                v_fields[i], v_mins[i], v_maxs[i],
                CASE i
                    WHEN 4 THEN ARRAY[
                        'jan', 'feb', 'mar', 'apr', 'may', 'jun',
                        'jul', 'aug', 'sep', 'oct', 'nov', 'dec'
                    ]
                    WHEN 5 THEN ARRAY['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat']
                END
            );
            v_star[i] := left(v_fields[i], 1) = '*';
            v_sets := v_sets || jsonb_build_object(v_json_keys[i], v_values);
        END LOOP;
    ELSE
        FOR i IN 1..5 LOOP
            v_key := v_json_keys[i];
            IF v_info ? v_key THEN
                IF jsonb_typeof(v_info -> v_key) <> 'array'
                    OR jsonb_array_length(v_info -> v_key) = 0
                    OR EXISTS (
                        SELECT 1 FROM jsonb_array_elements(v_info -> v_key) AS e
                        WHERE jsonb_typeof(e) <> 'number'
                            OR e::text !~ '^\d{1,4}$'
                            OR e::text::integer NOT BETWEEN v_mins[i] AND v_maxs[i]
                    ) THEN
                    RAISE EXCEPTION '% must be a non-empty array of integers in %..%',
                        v_key, v_mins[i], v_maxs[i]
                        USING ERRCODE = 'PJ008';
                END IF;
                v_values := array(
                    SELECT DISTINCT e::text::integer
                    FROM jsonb_array_elements(v_info -> v_key) AS e ORDER BY 1
                );
                v_star[i] := FALSE;
            ELSE
                v_values := array(SELECT generate_series(v_mins[i], v_maxs[i]));
            END IF;
            v_sets := v_sets || jsonb_build_object(v_key, v_values);
        END LOOP;
    END IF;

    -- 7 is Sunday too.
    v_sets := jsonb_set(v_sets, '{dayOfWeek}', to_jsonb(array(
        SELECT DISTINCT CASE WHEN d::integer = 7 THEN 0 ELSE d::integer END
        FROM jsonb_array_elements_text(v_sets -> 'dayOfWeek') AS d ORDER BY 1
    )));

    BEGIN
        v_start := (v_info ->> 'start')::timestamptz;
        v_end := (v_info ->> 'end')::timestamptz;
        v_backfill := (v_info ->> 'backfill')::interval;
    EXCEPTION WHEN data_exception THEN
        RAISE EXCEPTION 'start, end or backfill of schedule_info is not valid: %', sqlerrm
            USING ERRCODE = 'PJ008';
    END;
    -- Bounded to what clients can represent (Python's datetime ends with year 9999);
    -- infinity is no start or end at all.
    IF v_start NOT BETWEEN '1970-01-01 00:00:00+00' AND '9999-12-31 00:00:00+00'
        OR v_end NOT BETWEEN '1970-01-01 00:00:00+00' AND '9999-12-31 00:00:00+00' THEN
        RAISE EXCEPTION 'schedule start and end must lie between 1970 and 9999, got % and %',
            v_start, v_end
            USING ERRCODE = 'PJ008';
    END IF;
    IF v_end < v_start THEN
        RAISE EXCEPTION 'schedule end % is before its start %', v_end, v_start
            USING ERRCODE = 'PJ011';
    END IF;
    IF v_backfill < interval '0' THEN
        RAISE EXCEPTION 'backfill must not be negative' USING ERRCODE = 'PJ008';
    END IF;

    RETURN v_sets || jsonb_build_object(
        'dom_star', v_star[3], 'dow_star', v_star[5], 'tz', v_tz,
        'start', v_start, 'end', v_end, 'backfill', v_backfill
    );
END;
$$;

-- sql/src/502_schedule_next_run.sql
-- The instant a local slot fires: a skipped local time fires at the first valid
-- instant after it; a repeated one at its first occurrence.
CREATE FUNCTION app_jobs._local_slot_instant(p_local timestamp, p_tz text) RETURNS timestamptz
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    v_instant timestamptz := p_local AT TIME ZONE p_tz;
    v_valid timestamp := p_local;
    v_offset interval;
BEGIN
    IF (v_instant AT TIME ZONE p_tz) <> p_local THEN
        WHILE ((v_valid AT TIME ZONE p_tz) AT TIME ZONE p_tz) <> v_valid LOOP
            v_valid := v_valid + interval '1 minute';
        END LOOP;
        RETURN v_valid AT TIME ZONE p_tz;
    END IF;
    FOREACH v_offset IN ARRAY ARRAY[interval '2 hours', '1 hour', '30 minutes'] LOOP
        IF ((v_instant - v_offset) AT TIME ZONE p_tz) = p_local THEN
            RETURN v_instant - v_offset;
        END IF;
    END LOOP;
    RETURN v_instant;
END;
$$;

-- First slot of an expanded schedule (schedule_spec) strictly after p_after; NULL once ended.
CREATE FUNCTION app_jobs._spec_next_run(
    p_spec jsonb,
    p_after timestamptz
) RETURNS timestamptz
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    v_tz text := p_spec ->> 'tz';
    v_start timestamptz := (p_spec ->> 'start')::timestamptz;
    v_end timestamptz := (p_spec ->> 'end')::timestamptz;
    v_minutes integer[] := array(SELECT jsonb_array_elements_text(p_spec -> 'minute')::integer);
    v_hours integer[] := array(SELECT jsonb_array_elements_text(p_spec -> 'hour')::integer);
    v_doms integer[] := array(SELECT jsonb_array_elements_text(p_spec -> 'dayOfMonth')::integer);
    v_months integer[] := array(SELECT jsonb_array_elements_text(p_spec -> 'month')::integer);
    v_dows integer[] := array(SELECT jsonb_array_elements_text(p_spec -> 'dayOfWeek')::integer);
    v_either boolean := NOT (p_spec ->> 'dom_star')::boolean
        AND NOT (p_spec ->> 'dow_star')::boolean;
    v_after timestamptz := p_after;
    v_first timestamp;
    v_day date;
    v_from integer;
    v_slot integer;
    v_instant timestamptz;
    v_day_ok boolean;
BEGIN
    IF p_after IS NULL THEN
        RETURN NULL;
    END IF;
    IF v_start IS NOT NULL AND v_start - interval '1 microsecond' > v_after THEN
        v_after := v_start - interval '1 microsecond';
    END IF;
    v_first := date_trunc('minute', v_after AT TIME ZONE v_tz) + interval '1 minute';
    v_day := v_first::date;
    v_from := extract(HOUR FROM v_first)::integer * 60 + extract(MINUTE FROM v_first)::integer;

    -- Eight years cover every satisfiable combination (Feb 29 included).
    FOR i IN 0..2930 LOOP
        IF v_end IS NOT NULL AND (v_day::timestamp AT TIME ZONE v_tz) > v_end + interval '1 day' THEN
            RETURN NULL;
        END IF;
        IF extract(MONTH FROM v_day)::integer = ANY(v_months) THEN
            v_day_ok := CASE
                WHEN v_either THEN extract(DAY FROM v_day)::integer = ANY(v_doms)
                    OR extract(DOW FROM v_day)::integer = ANY(v_dows)
                ELSE extract(DAY FROM v_day)::integer = ANY(v_doms)
                    AND extract(DOW FROM v_day)::integer = ANY(v_dows)
            END;
            IF v_day_ok THEN
                FOR v_slot IN
                    SELECT h * 60 + m FROM unnest(v_hours) AS h, unnest(v_minutes) AS m
                    WHERE h * 60 + m >= v_from ORDER BY 1
                LOOP
                    v_instant := app_jobs._local_slot_instant(
                        v_day + make_interval(mins => v_slot), v_tz
                    );
                    IF v_instant > v_after THEN
                        IF v_end IS NOT NULL AND v_instant > v_end THEN
                            RETURN NULL;
                        END IF;
                        RETURN v_instant;
                    END IF;
                END LOOP;
            END IF;
        END IF;
        v_day := v_day + 1;
        v_from := 0;
    END LOOP;
    RETURN NULL;
END;
$$;

-- First slot of a schedule strictly after `after` (and not before its start); NULL once ended.
CREATE FUNCTION app_jobs.schedule_next_run(
    schedule_info json,
    after timestamptz
) RETURNS timestamptz
LANGUAGE sql STABLE
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
    SELECT app_jobs._spec_next_run(app_jobs._schedule_spec(schedule_info), after);
$$;

COMMENT ON FUNCTION app_jobs.schedule_next_run IS
'First slot strictly after `after`, no earlier than start; NULL once past end';

-- sql/src/510_run_due_scheduled_jobs.sql
-- Enqueue the job of every due schedule slot exactly once; safe from many workers at once.
-- One schedule that fails never stops the others: each runs in a subtransaction of its
-- own, and its error is kept on its row (last_error, last_error_at). A schedule whose
-- schedule_info no longer parses stops (next_run_at NULL) until it is rewritten; a slot
-- whose job add_job refuses is skipped. A paused schedule is skipped (paused_at).
CREATE FUNCTION app_jobs.run_due_scheduled_jobs(
    as_of timestamptz DEFAULT now()
) RETURNS SETOF app_jobs.jobs
LANGUAGE plpgsql VOLATILE
-- JIT only slows these short queries down (and the planner's row guesses invite it).
SET jit = off
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
DECLARE
    v_schedule app_jobs.scheduled_jobs;
    v_spec jsonb;
    v_backfill interval;
    v_slots timestamptz[];
    v_slot timestamptz;
    v_next timestamptz;
    v_job app_jobs.jobs;
    v_due_schedules bigint[] := '{}';
    v_due_slots timestamptz[] := '{}';
    v_job_schedules bigint[] := '{}';
    v_job_ids bigint[] := '{}';
    v_due record;
    v_failed bigint[] := '{}';
BEGIN
    -- An infinite as_of would never run out of slots.
    PERFORM app_jobs._check_run_at(as_of, 'as_of');
    -- A schedule another session is ticking is skipped: that session runs its slots,
    -- and moves next_run_at past them in the same transaction as the jobs.
    FOR v_schedule IN
        SELECT * FROM app_jobs.scheduled_jobs AS s
        WHERE s.next_run_at <= as_of AND s.paused_at IS NULL
        ORDER BY s.next_run_at, s.id
        FOR UPDATE SKIP LOCKED
    LOOP
        BEGIN
            -- Parse the schedule once; every slot below is computed from the parsed form.
            v_spec := app_jobs._schedule_spec(v_schedule.schedule_info);
            v_backfill := (v_spec ->> 'backfill')::interval;
            v_slot := v_schedule.next_run_at;
            IF v_backfill IS NULL THEN
                -- Only the latest missed slot; start looking an hour back when far behind.
                v_next := app_jobs._spec_next_run(v_spec, as_of - interval '1 hour');
                IF v_next > v_slot AND v_next <= as_of THEN
                    v_slot := v_next;
                END IF;
                LOOP
                    v_next := app_jobs._spec_next_run(v_spec, v_slot);
                    EXIT WHEN v_next IS NULL OR v_next > as_of;
                    v_slot := v_next;
                END LOOP;
                v_slots := ARRAY[v_slot];
            ELSE
                -- Every missed slot within the backfill window.
                IF v_slot < as_of - v_backfill THEN
                    v_slot := app_jobs._spec_next_run(
                        v_spec, as_of - v_backfill - interval '1 microsecond'
                    );
                END IF;
                v_slots := '{}';
                WHILE v_slot IS NOT NULL AND v_slot <= as_of LOOP
                    v_slots := v_slots || v_slot;
                    v_slot := app_jobs._spec_next_run(v_spec, v_slot);
                END LOOP;
            END IF;

            UPDATE app_jobs.scheduled_jobs AS s
            SET
                last_scheduled = coalesce(v_slots[cardinality(v_slots)], s.last_scheduled),
                next_run_at = app_jobs._spec_next_run(v_spec, as_of)
            WHERE s.id = v_schedule.id;
        EXCEPTION WHEN OTHERS THEN
            -- (Variables are not rolled back with the subtransaction: nothing of this
            -- schedule reached the arrays below.)
            UPDATE app_jobs.scheduled_jobs AS s
            SET
                next_run_at = NULL,
                last_error = format('%s: %s (the schedule stopped)', sqlstate, sqlerrm),
                last_error_at = now()
            WHERE s.id = v_schedule.id;
            v_failed := v_failed || v_schedule.id;
            CONTINUE;
        END;
        v_due_schedules := v_due_schedules
            || array_fill(v_schedule.id, ARRAY[cardinality(v_slots)]);
        v_due_slots := v_due_slots || v_slots;
    END LOOP;

    -- Enqueue in queue-name order: each job counts into its queue's row, and taking
    -- queue rows in name order is what keeps this tick from deadlocking with add_job.
    FOR v_due IN
        SELECT s.*, d.slot
        FROM unnest(v_due_schedules, v_due_slots) WITH ORDINALITY AS d (schedule_id, slot, n)
        INNER JOIN app_jobs.scheduled_jobs AS s ON d.schedule_id = s.id
        ORDER BY s.queue_name NULLS FIRST, d.n
    LOOP
        BEGIN
            v_job := app_jobs.add_job(
                db_id := v_due.database_id,
                identifier := v_due.task_identifier,
                payload := v_due.payload,
                queue_name := v_due.queue_name,
                run_at := v_due.slot,
                max_attempts := v_due.max_attempts,
                priority := v_due.priority
            );
        EXCEPTION WHEN OTHERS THEN
            UPDATE app_jobs.scheduled_jobs AS s
            SET
                last_error = format(
                    '%s: %s (the slot of %s was skipped)', sqlstate, sqlerrm, v_due.slot
                ),
                last_error_at = now()
            WHERE s.id = v_due.id;
            v_failed := v_failed || v_due.id;
            CONTINUE;
        END;
        v_job_schedules := v_job_schedules || v_due.id;
        v_job_ids := v_job_ids || v_job.id;
        RETURN NEXT v_job;
    END LOOP;

    -- Each schedule remembers the job of its latest slot; one that enqueued without a
    -- failure this time has no error any more.
    UPDATE app_jobs.scheduled_jobs AS s
    SET
        last_scheduled_id = latest.job_id,
        last_error = CASE WHEN s.id = ANY(v_failed) THEN s.last_error END,
        last_error_at = CASE WHEN s.id = ANY(v_failed) THEN s.last_error_at END
    FROM (
        SELECT DISTINCT ON (e.schedule_id) e.schedule_id, e.job_id
        FROM unnest(v_job_schedules, v_job_ids) WITH ORDINALITY AS e (schedule_id, job_id, n)
        ORDER BY e.schedule_id, e.n DESC
    ) AS latest
    WHERE s.id = latest.schedule_id;
END;
$$;

COMMENT ON FUNCTION app_jobs.run_due_scheduled_jobs IS
'Scheduler tick: enqueue every due slot once (latest missed slot, or all within backfill)';

-- sql/src/520_tg_scheduled_jobs_next_run.sql
-- Validate a schedule when it is written and compute its first slot: PJ008 for more
-- than 16 kB of schedule_info (or anything schedule_spec refuses), PJ010 for a time zone
-- that is not an IANA name (PostgreSQL would also take POSIX rules such as "5" or
-- "UTC+3", surely mistakes here), PJ042 when it would never fire (an impossible date such
-- as 0 0 31 2 *, or an end already past).
CREATE FUNCTION app_jobs._tg_scheduled_jobs_next_run() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    -- Rewriting the same schedule keeps its pending slot.
    IF tg_op = 'UPDATE' AND old.schedule_info::text = new.schedule_info::text THEN
        RETURN new;
    END IF;
    IF octet_length(new.schedule_info::text) > 16384 THEN
        RAISE EXCEPTION 'schedule_info is % bytes, more than 16384',
            octet_length(new.schedule_info::text)
            USING ERRCODE = 'PJ008';
    END IF;
    IF json_typeof(new.schedule_info) = 'object'
        AND new.schedule_info ->> 'tz' IS NOT NULL
        AND NOT EXISTS (
            SELECT 1 FROM pg_catalog.pg_timezone_names AS z
            WHERE lower(z.name) = lower(new.schedule_info ->> 'tz')
        ) THEN
        RAISE EXCEPTION 'unknown time zone %', to_json(new.schedule_info ->> 'tz')
            USING ERRCODE = 'PJ010',
            HINT = 'tz takes an IANA time zone name such as UTC or Europe/Berlin.';
    END IF;
    new.next_run_at := app_jobs.schedule_next_run(new.schedule_info, now());
    IF new.next_run_at IS NULL THEN
        RAISE EXCEPTION 'schedule % never fires', new.schedule_info::text
            USING ERRCODE = 'PJ042',
            HINT = 'Its fields name no date that exists (such as February 31), or its end '
            || 'has passed.';
    END IF;
    RETURN new;
END;
$$;

CREATE TRIGGER _200_next_run_at
BEFORE INSERT OR UPDATE OF schedule_info ON app_jobs.scheduled_jobs
FOR EACH ROW EXECUTE FUNCTION app_jobs._tg_scheduled_jobs_next_run();

-- sql/src/800_queue_stats_view.sql
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

-- sql/src/810_metrics.sql
-- A label value escaped for the Prometheus text format: backslash, double quote, newline.
CREATE FUNCTION app_jobs._metrics_label(value text) RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
    SELECT replace(
        replace(replace(coalesce(value, ''), E'\\', E'\\\\'), '"', E'\\"'), E'\n', E'\\n'
    );
$$;

COMMENT ON FUNCTION app_jobs._metrics_label IS
'Escape a Prometheus label value (backslash, double quote, newline); NULL gives ""';

-- The queue's state in the Prometheus text exposition format (for a scrape exporter, or
-- SELECT app_jobs.metrics() behind any HTTP endpoint): queue_stats, workers, the
-- notification queue, failing schedules. Samples of one family are contiguous, in label order.
CREATE FUNCTION app_jobs.metrics() RETURNS text
LANGUAGE sql STABLE
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
    WITH stats AS MATERIALIZED (
        SELECT
            app_jobs._metrics_label(q.task_identifier) AS task,
            app_jobs._metrics_label(q.queue_name) AS queue,
            q.waiting,
            q.scheduled,
            q.running,
            q.retrying,
            q.failed,
            q.blocked,
            q.oldest_waiting,
            q.completed_last_5m,
            q.failed_last_5m,
            q.cancelled_last_5m
        FROM app_jobs.queue_stats AS q
    ),

    workers AS (
        SELECT
            count(*) AS registered,
            count(*) FILTER (
                WHERE w.last_heartbeat < now() - 3 * w.heartbeat_interval
            ) AS stale
        FROM app_jobs.workers AS w
    ),

    families (family, name, kind, help) AS (
        VALUES
        (1, 'pgjobs_jobs', 'gauge', 'Jobs by task, queue and state (as in app_jobs.job_status)'),
        (
            2, 'pgjobs_oldest_waiting_seconds', 'gauge',
            'How long the longest-waiting runnable job of a task and queue has been due'
        ),
        (
            3, 'pgjobs_finished_last_5m', 'gauge',
            'Jobs that finished in the last 5 minutes by task and status (from job_history)'
        ),
        (4, 'pgjobs_history_enabled', 'gauge', '1 when job history is recorded, else 0'),
        (5, 'pgjobs_workers', 'gauge', 'Registered workers'),
        (
            6, 'pgjobs_workers_stale', 'gauge',
            'Registered workers silent for more than 3 heartbeat intervals'
        ),
        (
            7, 'pgjobs_notification_queue_usage', 'gauge',
            'Fraction of the LISTEN/NOTIFY queue in use (pg_notification_queue_usage)'
        ),
        (
            8, 'pgjobs_notifications_skipped_total', 'counter',
            'pgjobs notifications skipped: the NOTIFY queue was used up to notify_max_queue_usage'
        ),
        (
            9, 'pgjobs_schedules_failing', 'gauge',
            'Schedules whose latest due slot could not be enqueued (last_error set)'
        )
    ),

    samples (family, line) AS (
        SELECT
            1,
            format(
                'pgjobs_jobs{task="%s",queue="%s",state="%s"} %s', s.task, s.queue, v.state, v.n
            )
        FROM stats AS s
        CROSS JOIN LATERAL (
            VALUES
            ('waiting', s.waiting),
            ('scheduled', s.scheduled),
            ('running', s.running),
            ('retrying', s.retrying),
            ('failed', s.failed),
            ('blocked', s.blocked)
        ) AS v (state, n)
        UNION ALL
        SELECT
            2,
            format(
                'pgjobs_oldest_waiting_seconds{task="%s",queue="%s"} %s', s.task, s.queue,
                coalesce(round(extract(EPOCH FROM s.oldest_waiting), 3), 0)
            )
        FROM stats AS s
        UNION ALL
        SELECT
            3,
            format('pgjobs_finished_last_5m{task="%s",status="%s"} %s', t.task, v.status, v.n)
        FROM (
            SELECT
                s.task,
                sum(s.completed_last_5m) AS completed,
                sum(s.failed_last_5m) AS failed,
                sum(s.cancelled_last_5m) AS cancelled
            FROM stats AS s
            GROUP BY s.task
        ) AS t
        CROSS JOIN LATERAL (
            VALUES ('completed', t.completed), ('failed', t.failed), ('cancelled', t.cancelled)
        ) AS v (status, n)
        UNION ALL
        SELECT
            4,
            'pgjobs_history_enabled '
            || CASE WHEN app_jobs.setting('history') = 'on' THEN '1' ELSE '0' END
        UNION ALL
        SELECT 5, 'pgjobs_workers ' || w.registered FROM workers AS w
        UNION ALL
        SELECT 6, 'pgjobs_workers_stale ' || w.stale FROM workers AS w
        UNION ALL
        SELECT 7, 'pgjobs_notification_queue_usage ' || pg_notification_queue_usage()
        UNION ALL
        SELECT
            8, 'pgjobs_notifications_skipped_total ' || app_jobs._notifications_skipped_count()
        UNION ALL
        SELECT 9, 'pgjobs_schedules_failing ' || count(*)
        FROM app_jobs.scheduled_jobs AS s
        WHERE s.last_error IS NOT NULL
    ),

    lines (family, part, line) AS (
        SELECT f.family, 0, format('# HELP %s %s', f.name, f.help) FROM families AS f
        UNION ALL
        SELECT f.family, 1, format('# TYPE %s %s', f.name, f.kind) FROM families AS f
        UNION ALL
        SELECT s.family, 2, s.line FROM samples AS s
    )

    SELECT string_agg(l.line, E'\n' ORDER BY l.family, l.part, l.line COLLATE "C") || E'\n'
    FROM lines AS l;
$$;

COMMENT ON FUNCTION app_jobs.metrics IS
'Queue, worker and notification-queue gauges in the Prometheus text exposition format';

-- sql/src/900_config_dump.sql
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

-- sql/src/950_security.sql
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
