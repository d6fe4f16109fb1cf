-- pgjobs 0.7.0 -> 0.8.0: SQL written once (issue 14). Internal functions take a leading
-- underscore (the public API keeps its names), one helper holds the lock order
-- (_lock_jobs), the default job expiry is the job_expiry setting, and each function's
-- SECURITY DEFINER/INVOKER and search_path are written where it is defined. See
-- CHANGELOG.md, 0.8.0. Written by hand: only what changed, the functions as in sql/src.

-- Internal functions: renamed in place (their grants, none but _enqueue_from_trigger's,
-- and their comments go with them); those whose bodies changed are replaced below.
ALTER FUNCTION app_jobs.name_problem RENAME TO _name_problem;
ALTER FUNCTION app_jobs.check_job_spec RENAME TO _check_job_spec;
ALTER FUNCTION app_jobs.check_payload RENAME TO _check_payload;
ALTER FUNCTION app_jobs.check_run_at RENAME TO _check_run_at;
ALTER FUNCTION app_jobs.check_job_expiry RENAME TO _check_job_expiry;
ALTER FUNCTION app_jobs.check_job RENAME TO _check_job;
ALTER FUNCTION app_jobs.check_worker_id RENAME TO _check_worker_id;
ALTER FUNCTION app_jobs.lock_is_free RENAME TO _lock_is_free;
ALTER FUNCTION app_jobs.queue_concurrency RENAME TO _queue_concurrency;
ALTER FUNCTION app_jobs.enqueue_ignored RENAME TO _enqueue_ignored;
ALTER FUNCTION app_jobs.notify RENAME TO _notify;
ALTER FUNCTION app_jobs.notifications_skipped_count RENAME TO _notifications_skipped_count;
ALTER FUNCTION app_jobs.notify_chunks RENAME TO _notify_chunks;
ALTER FUNCTION app_jobs.add_jobs_rows RENAME TO _add_jobs_rows;
ALTER FUNCTION app_jobs.job_stopped RENAME TO _job_stopped;
ALTER FUNCTION app_jobs.stopped_event RENAME TO _stopped_event;
ALTER FUNCTION app_jobs.notify_job_stopped RENAME TO _notify_job_stopped;
ALTER FUNCTION app_jobs.cancel_dependents RENAME TO _cancel_dependents;
ALTER FUNCTION app_jobs.finish_claim RENAME TO _finish_claim;
ALTER FUNCTION app_jobs.claim_status RENAME TO _claim_status;
ALTER FUNCTION app_jobs.end_cancelled_claims RENAME TO _end_cancelled_claims;
ALTER FUNCTION app_jobs.retry_delay RENAME TO _retry_delay;
ALTER FUNCTION app_jobs.stop_jobs RENAME TO _stop_jobs;
ALTER FUNCTION app_jobs.check_not_running RENAME TO _check_not_running;
ALTER FUNCTION app_jobs.lock_bundles RENAME TO _lock_bundles;
ALTER FUNCTION app_jobs.bundle_job_stopped RENAME TO _bundle_job_stopped;
ALTER FUNCTION app_jobs.tg_bundle_job_revived RENAME TO _tg_bundle_job_revived;
ALTER FUNCTION app_jobs.tg_timestamps RENAME TO _tg_timestamps;
ALTER FUNCTION app_jobs.change_job_queue_count RENAME TO _change_job_queue_count;
ALTER FUNCTION app_jobs.tg_increase_job_queue_count RENAME TO _tg_increase_job_queue_count;
ALTER FUNCTION app_jobs.tg_decrease_job_queue_count RENAME TO _tg_decrease_job_queue_count;
ALTER FUNCTION app_jobs.tg_move_job_queue_count RENAME TO _tg_move_job_queue_count;
ALTER FUNCTION app_jobs.tg_notify_worker RENAME TO _tg_notify_worker;
ALTER FUNCTION app_jobs.cron_value RENAME TO _cron_value;
ALTER FUNCTION app_jobs.cron_field RENAME TO _cron_field;
ALTER FUNCTION app_jobs.schedule_spec RENAME TO _schedule_spec;
ALTER FUNCTION app_jobs.local_slot_instant RENAME TO _local_slot_instant;
ALTER FUNCTION app_jobs.spec_next_run RENAME TO _spec_next_run;
ALTER FUNCTION app_jobs.tg_scheduled_jobs_next_run RENAME TO _tg_scheduled_jobs_next_run;
ALTER FUNCTION app_jobs.metrics_label RENAME TO _metrics_label;
ALTER FUNCTION app_jobs.tenant_allowed RENAME TO _tenant_allowed;
ALTER FUNCTION app_jobs.check_tenant RENAME TO _check_tenant;
ALTER FUNCTION app_jobs.enqueue_from_trigger RENAME TO _enqueue_from_trigger;

-- The job_expiry setting.
ALTER TABLE app_jobs.settings DROP CONSTRAINT settings_name_check;
ALTER TABLE app_jobs.settings ADD CONSTRAINT settings_name_check CHECK (
    name IN (
        'history', 'history_retention', 'max_payload_bytes', 'notify_max_queue_usage',
        'job_expiry'
    )
);
COMMENT ON TABLE app_jobs.settings IS
'history (on/off, default on), history_retention (interval, default 7 days), '
'max_payload_bytes (1024 to 1073741824, default 262144), notify_max_queue_usage (0 to 1, '
'default 0.5), job_expiry (how long the claim of a worker that never registered holds, '
'default 4 hours)';

-- from sql/src/100_check_job_spec.sql
-- Raise a distinct SQLSTATE for each invalid field of a job or schedule.
CREATE OR REPLACE FUNCTION app_jobs._check_job_spec(
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

-- Every check of one job's fields, as add_job and add_jobs apply them (max_attempts and
-- timeout with the task's defaults applied): PJ001-PJ004, PJ017, PJ022, PJ031-PJ035,
-- PJ037, PJ038.
CREATE OR REPLACE FUNCTION app_jobs._check_job(
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

-- from sql/src/101_check_worker_id.sql
-- Raise PJ005 unless a worker id of 1 to 256 characters was given, PJ036 when it is not
-- a clean name (see name_problem).
CREATE OR REPLACE FUNCTION app_jobs._check_worker_id(p_worker_id text) RETURNS void
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
        END
    );
END;
$$;

-- How long the claim of a worker that never registered holds: p_job_expiry, or the
-- job_expiry setting when NULL.
CREATE OR REPLACE FUNCTION app_jobs._job_expiry(p_job_expiry interval DEFAULT NULL) RETURNS interval
LANGUAGE plpgsql STABLE
AS $$
BEGIN
    RETURN coalesce(p_job_expiry, app_jobs.setting('job_expiry')::interval);
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
    IF name = 'history' AND lower(v_value) IN ('on', 'off') THEN
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
            USING HINT = 'history takes on or off; history_retention an interval; '
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
'1073741824), notify_max_queue_usage (0 to 1) or job_expiry (interval); PJ014 on anything '
'else';

-- from sql/src/105_enqueue_ignored.sql
-- True when this session asked for enqueues of the task to be dropped (test helpers):
-- pgjobs.ignore_enqueues is 'all' or a comma-separated list of task identifiers (an empty
-- setting is an empty list: it ignores no task, not the task named '').
CREATE OR REPLACE FUNCTION app_jobs._enqueue_ignored(p_identifier text) RETURNS boolean
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

-- from sql/src/106_notify.sql
-- Send JSON events (each a JSON object's text) as JSON arrays, as many per notification
-- as fit well under NOTIFY's 8000-byte limit. Chunks are cut where the running total of
-- the events' byte lengths crosses a multiple of 5000 bytes, so a chunk holds less than
-- 5000 bytes plus one event; callers keep each event under 2500 bytes (names of at most
-- 126 characters, origins cut to 256 characters: at most 6 bytes each once JSON-escaped).
CREATE OR REPLACE FUNCTION app_jobs._notify_chunks(p_channel text, p_events text[]) RETURNS void
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

-- from sql/src/107_lock_jobs.sql
-- Lock job rows p_job_ids in the order every writer of pgjobs follows, so that no two
-- of them (nor add_job, which takes a queue row, and get_jobs) can deadlock: the job
-- rows by id, then their bundles by id, then their queues by name. Waits for each row,
-- or with p_skip_locked leaves out the jobs whose row, or whose queue's row, another
-- session holds (bundles are always waited for: only jobs of a bundle hold them, and
-- briefly). Returns the ids of the jobs locked, with their queue row, in id order.
CREATE OR REPLACE FUNCTION app_jobs._lock_jobs(
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

-- from sql/src/108_tenant.sql
-- Raise PJ030 unless the caller may act on tenant p_db_id (see tenant_allowed).
CREATE OR REPLACE FUNCTION app_jobs._check_tenant(p_db_id uuid) RETURNS void
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

-- from sql/src/111_add_jobs.sql
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

-- from sql/src/120_get_jobs.sql
-- Claim up to batch_size available jobs for a worker, within each named queue's
-- concurrency (one at a time unless queue_settings says more) and each task's rate limit.
-- job_expiry NULL (the default) means the job_expiry setting.
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
    ORDER BY cl.priority, cl.run_at, cl.id;
END;
$$;

COMMENT ON FUNCTION app_jobs.get_jobs IS
'Claim up to batch_size jobs (one per named queue) for worker_id';

-- from sql/src/121_get_job.sql
-- Claim the next available job for a worker; a row of NULLs when there is none.
-- job_expiry NULL (the default) means the job_expiry setting.
CREATE OR REPLACE FUNCTION app_jobs.get_job(
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

-- from sql/src/125_job_stopped.sql
-- Everything that follows a job reaching a final state (completed, failed for good,
-- cancelled): its history row, the jobs:stopped event, its dependents (unblocked, or
-- cancelled when it did not complete) and its bundle. The caller holds the job's row
-- and its bundle's row.
CREATE OR REPLACE FUNCTION app_jobs._job_stopped(
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

-- Tell listeners on jobs:stopped that a job stopped.
CREATE OR REPLACE FUNCTION app_jobs._notify_job_stopped(
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
CREATE OR REPLACE FUNCTION app_jobs._cancel_dependents(
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

-- from sql/src/130_finish_claim.sql
-- End one claim, fenced by (job id, worker, attempt): completed or cancelled jobs leave
-- the table, failed ones retry after retry_delay (from p_failed_at) until max_attempts. A
-- worker that no longer holds the claim changes nothing and gets NULL.
CREATE OR REPLACE FUNCTION app_jobs._finish_claim(
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

-- from sql/src/131_complete_job.sql
-- Finish a job successfully: only the worker holding its lock may do so.
CREATE OR REPLACE FUNCTION app_jobs.complete_job(
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

-- from sql/src/132_fail_job.sql
-- Record a failed attempt: unlock the job and push run_at back exponentially.
CREATE OR REPLACE FUNCTION app_jobs.fail_job(
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
    v_locked bigint[];
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
    v_locked := app_jobs._lock_jobs(ARRAY(
        SELECT o.id
        FROM unnest(v_ids, v_attempts, v_first) AS o (id, attempt, first)
        WHERE o.first AND EXISTS (
            SELECT 1 FROM app_jobs.jobs AS j
            WHERE j.id = o.id
                -- coalesce keeps the planner on the primary key (not jobs_locked_by_idx).
                AND coalesce(j.locked_by, '') = finish_jobs.worker_id
                AND j.attempts = o.attempt
        )
    ), TRUE);
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
        INNER JOIN unnest(v_locked) AS l (id) ON o.id = l.id
        CROSS JOIN LATERAL (
            SELECT j.id, j.bundle_id, j.cancel_requested_at
            FROM app_jobs.jobs AS j
            WHERE j.id = o.id
                AND coalesce(j.locked_by, '') = finish_jobs.worker_id
                AND j.attempts = o.attempt
        ) AS j
        WHERE o.first
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

-- from sql/src/134_set_progress.sql
-- Store a running job's progress (0-100) and stage (at most 1000 characters, so the
-- jobs:progress notification stays far below NOTIFY's 8000-byte limit) and announce it;
-- false when the worker no longer holds the claim, NULL (nothing stored, never waited
-- for) while another session has the job's row locked: progress is a hint, report again.
CREATE OR REPLACE FUNCTION app_jobs.set_progress(
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

-- from sql/src/135_cancel_job.sql
-- Cancel a job: a waiting one ends now; a running one gets a cancel request its worker
-- acts on. Returns the job's status afterwards, NULL when there is no such job.
CREATE OR REPLACE FUNCTION app_jobs.cancel_job(job_id bigint) RETURNS text
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

-- from sql/src/136_end_cancelled_claims.sql
-- Claims being handed back whose job was asked to cancel end cancelled instead of
-- returning to the queue (a cancelled job never runs again). Returns how many ended.
CREATE OR REPLACE FUNCTION app_jobs._end_cancelled_claims(p_job_ids bigint[]) RETURNS integer
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

-- from sql/src/138_stop_jobs.sql
-- End jobs by hand (admin functions): p_status completed or cancelled deletes them,
-- failed keeps them with their attempts used up; each goes through job_stopped
-- (history, events, dependents, bundle). Jobs a live worker holds are skipped; a job
-- that had already failed for good stopped once already: it is only deleted, or (failed
-- again) given the new last_error and returned, as the original permanently_fail_jobs.
CREATE OR REPLACE FUNCTION app_jobs._stop_jobs(
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

-- from sql/src/140_complete_jobs.sql
-- Remove jobs by id as done, skipping jobs a live worker holds.
CREATE OR REPLACE FUNCTION app_jobs.complete_jobs(job_ids bigint[]) RETURNS SETOF app_jobs.jobs
LANGUAGE sql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
    SELECT * FROM app_jobs._stop_jobs(job_ids, 'completed');
$$;

COMMENT ON FUNCTION app_jobs.complete_jobs IS
'Admin: delete jobs by id unless a worker holds them';

-- from sql/src/141_permanently_fail_jobs.sql
-- Mark jobs by id as failed for good, skipping jobs a live worker holds.
CREATE OR REPLACE FUNCTION app_jobs.permanently_fail_jobs(
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

-- from sql/src/142_reschedule_jobs.sql
-- Change when and how jobs run, skipping jobs a live worker holds.
CREATE OR REPLACE FUNCTION app_jobs.reschedule_jobs(
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

-- from sql/src/143_remove_job.sql
-- Delete the job with a key, or strip the key from it if a worker holds it.
CREATE OR REPLACE FUNCTION app_jobs.remove_job(job_key text) RETURNS app_jobs.jobs
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

-- from sql/src/144_release_jobs.sql
-- Hand back the jobs (all, or only job_ids) and queues a worker holds, refunding the attempt.
CREATE OR REPLACE FUNCTION app_jobs.release_jobs(
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

-- from sql/src/145_force_unlock_workers.sql
-- Unlock the jobs and queues of workers known to be dead.
CREATE OR REPLACE FUNCTION app_jobs.force_unlock_workers(worker_ids text[]) RETURNS void
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

-- from sql/src/150_workers.sql
-- Register (or re-register) a worker process; it must then heartbeat every interval.
CREATE OR REPLACE FUNCTION app_jobs.register_worker(
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
CREATE OR REPLACE FUNCTION app_jobs.set_worker_wakeup(worker_id text, wakeup text) RETURNS void
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
CREATE OR REPLACE FUNCTION app_jobs.worker_heartbeat(worker_id text)
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

-- Free the jobs of workers silent for dead_for: each running job counts a failed attempt
-- (backoff from the last heartbeat), a cancel-requested one ends cancelled. Safe to run
-- from every worker at once. Each dead worker is reaped in a subtransaction of its own:
-- one that cannot be (a lock wait timing out, say) is reported with status 'error' and a
-- WARNING, stays registered for the next reap, and the others are reaped. PJ013 when
-- dead_for is under 3 heartbeat intervals.
CREATE OR REPLACE FUNCTION app_jobs.reap_dead_workers(dead_for interval DEFAULT '20 seconds')
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

-- from sql/src/161_manage_jobs.sql
-- Give a failed or retrying job a fresh set of attempts, to run now (its past errors
-- stay in job_history).
CREATE OR REPLACE FUNCTION app_jobs.retry_job(job_id bigint) RETURNS app_jobs.jobs
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
CREATE OR REPLACE FUNCTION app_jobs.delete_job(job_id bigint) RETURNS app_jobs.jobs
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

-- from sql/src/180_bundles.sql
-- Count p_count stopped jobs of a bundle (none for a NULL status); when they were the
-- last (or the bundle is empty), stop the bundle: outcome,
-- the follow-up job (payload: bundle id, outcome, counts, the follow-up's own payload)
-- and a jobs:bundle_stopped event.
CREATE OR REPLACE FUNCTION app_jobs._bundle_job_stopped(
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
CREATE OR REPLACE FUNCTION app_jobs.add_bundle(
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

-- from sql/src/210_tg_job_queue_count.sql
-- Count a statement's inserted jobs into their named queues, in queue-name order.
CREATE OR REPLACE FUNCTION app_jobs._tg_increase_job_queue_count() RETURNS trigger
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
CREATE OR REPLACE FUNCTION app_jobs._tg_decrease_job_queue_count() RETURNS trigger
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
CREATE OR REPLACE FUNCTION app_jobs._tg_move_job_queue_count() RETURNS trigger
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

-- from sql/src/220_tg_notify_worker.sql
-- Wake listening workers once per statement that adds jobs.
CREATE OR REPLACE FUNCTION app_jobs._tg_notify_worker() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM app_jobs._notify('jobs:insert', '');
    RETURN NULL;
END;
$$;

-- from sql/src/300_trigger_helpers.sql
-- Row trigger: enqueue TG_ARGV[0] with payload {"id": <row id>}.
CREATE OR REPLACE FUNCTION app_jobs.tg_add_job_with_row_id() RETURNS trigger
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
CREATE OR REPLACE FUNCTION app_jobs.tg_add_job_with_row() RETURNS trigger
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
CREATE OR REPLACE FUNCTION app_jobs.trigger_job_with_fields() RETURNS trigger
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

-- from sql/src/400_add_scheduled_job.sql
-- Create a recurring job, or update the one that has the same key; a key belongs to the
-- tenant of the schedule holding it (PJ030 for another tenant's key, whoever calls).
CREATE OR REPLACE FUNCTION app_jobs.add_scheduled_job(
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

-- from sql/src/410_run_scheduled_job.sql
-- Enqueue one job now from a recurring job's definition, with the schedule's key (an
-- upsert, as add_job does). Refused with PJ041 (message ALREADY_SCHEDULED, as the
-- original app_jobs.run_scheduled_job) while the job it enqueued last is still waiting
-- (or waiting to retry), or has been running for less than job_expiry.
CREATE OR REPLACE FUNCTION app_jobs.run_scheduled_job(
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

-- from sql/src/420_get_scheduled_job.sql
-- Lock the next unlocked recurring job for a scheduler worker.
CREATE OR REPLACE FUNCTION app_jobs.get_scheduled_job(
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
        WHERE n.locked_at IS NULL
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
'Lock the next unlocked scheduled job for worker_id; NULLs when none';

-- Unlock the recurring jobs a scheduler worker holds (all, or the given ids).
CREATE OR REPLACE FUNCTION app_jobs.release_scheduled_jobs(
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

-- from sql/src/500_cron_field.sql
-- The sorted values a cron field (lists, ranges, steps, names, *) matches.
CREATE OR REPLACE FUNCTION app_jobs._cron_field(
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

-- from sql/src/501_schedule_spec.sql
-- Validate schedule_info and expand it into the sets of matching values.
CREATE OR REPLACE FUNCTION app_jobs._schedule_spec(p_info json) RETURNS jsonb
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

-- from sql/src/502_schedule_next_run.sql
-- First slot of an expanded schedule (schedule_spec) strictly after p_after; NULL once ended.
CREATE OR REPLACE FUNCTION app_jobs._spec_next_run(
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
CREATE OR REPLACE FUNCTION app_jobs.schedule_next_run(
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

-- from sql/src/510_run_due_scheduled_jobs.sql
-- Enqueue the job of every due schedule slot exactly once; safe from many workers at once.
-- One schedule that fails never stops the others: each runs in a subtransaction of its
-- own, and its error is kept on its row (last_error, last_error_at). A schedule whose
-- schedule_info no longer parses stops (next_run_at NULL) until it is rewritten; a slot
-- whose job add_job refuses is skipped.
CREATE OR REPLACE FUNCTION app_jobs.run_due_scheduled_jobs(
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
        WHERE s.next_run_at <= as_of
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

-- from sql/src/810_metrics.sql
-- The queue's state in the Prometheus text exposition format (for a scrape exporter, or
-- SELECT app_jobs.metrics() behind any HTTP endpoint): queue_stats, workers, the
-- notification queue, failing schedules. Samples of one family are contiguous, in label order.
CREATE OR REPLACE FUNCTION app_jobs.metrics() RETURNS text
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

-- from sql/src/950_security.sql (re-runnable)
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
            || 'pgjobs_worker, pgjobs_admin',
            v_fn.sig
        );
    END LOOP;

    FOR v_fn IN
        SELECT l.name, g.grantees, p.oid::regprocedure AS sig
        FROM (
            VALUES
            -- name, enqueue, worker, admin
            ('add_job', TRUE, FALSE, TRUE),
            ('add_jobs', TRUE, FALSE, TRUE),
            ('add_bundle', TRUE, FALSE, TRUE),
            ('add_scheduled_job', TRUE, FALSE, TRUE),
            ('cancel_job', TRUE, FALSE, TRUE),
            ('tg_add_job_with_row', TRUE, FALSE, TRUE),
            ('tg_add_job_with_row_id', TRUE, FALSE, TRUE),
            ('trigger_job_with_fields', TRUE, FALSE, TRUE),
            ('_enqueue_from_trigger', TRUE, FALSE, TRUE),
            ('schedule_next_run', TRUE, TRUE, TRUE),
            ('get_job', FALSE, TRUE, TRUE),
            ('get_jobs', FALSE, TRUE, TRUE),
            ('complete_job', FALSE, TRUE, TRUE),
            ('fail_job', FALSE, TRUE, TRUE),
            ('finish_jobs', FALSE, TRUE, TRUE),
            ('set_progress', FALSE, TRUE, TRUE),
            ('register_worker', FALSE, TRUE, TRUE),
            ('worker_heartbeat', FALSE, TRUE, TRUE),
            ('set_worker_wakeup', FALSE, TRUE, TRUE),
            ('unregister_worker', FALSE, TRUE, TRUE),
            ('reap_dead_workers', FALSE, TRUE, TRUE),
            ('release_jobs', FALSE, TRUE, TRUE),
            ('run_due_scheduled_jobs', FALSE, TRUE, TRUE),
            ('get_scheduled_job', FALSE, TRUE, TRUE),
            ('release_scheduled_jobs', FALSE, TRUE, TRUE),
            ('run_scheduled_job', FALSE, TRUE, TRUE),
            ('purge_job_history', FALSE, TRUE, TRUE),
            ('setting', FALSE, TRUE, TRUE),
            ('metrics', FALSE, TRUE, TRUE),
            ('complete_jobs', FALSE, FALSE, TRUE),
            ('permanently_fail_jobs', FALSE, FALSE, TRUE),
            ('reschedule_jobs', FALSE, FALSE, TRUE),
            ('remove_job', FALSE, FALSE, TRUE),
            ('force_unlock_workers', FALSE, FALSE, TRUE),
            ('retry_job', FALSE, FALSE, TRUE),
            ('delete_job', FALSE, FALSE, TRUE),
            ('delete_finished_jobs', FALSE, FALSE, TRUE),
            ('waiting_jobs', FALSE, FALSE, TRUE),
            ('failed_jobs', FALSE, FALSE, TRUE),
            ('set_setting', FALSE, FALSE, TRUE),
            ('set_task_settings', FALSE, FALSE, TRUE),
            ('set_queue_concurrency', FALSE, FALSE, TRUE)
        ) AS l (name, enqueue, worker, admin)
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
            -- Renamed or dropped without updating the list (tests_sql/950_privileges fails).
            RAISE WARNING 'pgjobs: app_jobs.% is granted in 950_security.sql but does not exist',
                v_fn.name;
            CONTINUE;
        END IF;
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
AS $$ SELECT '0.8.0'::text $$;
