-- pgjobs 0.6.0 -> 0.7.0: connection poolers (issue 13): workers record how new jobs wake
-- them (listen, silent or poll; pgjobs status shows it). See README, "Changes in 0.7.0".
-- Written by hand: only what changed, the functions as in sql/src.

ALTER TABLE app_jobs.workers ADD COLUMN wakeup text;
ALTER TABLE app_jobs.workers ADD CONSTRAINT workers_wakeup_check CHECK (
    wakeup IN ('listen', 'silent', 'poll')
);

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

-- from sql/src/150_workers.sql
-- Record how new jobs wake a worker (listen, silent or poll; PJ044 otherwise); PJ019
-- when the worker is not registered.
CREATE OR REPLACE FUNCTION app_jobs.set_worker_wakeup(worker_id text, wakeup text) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    PERFORM app_jobs.check_worker_id(worker_id);
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
            ('set_worker_wakeup', FALSE, TRUE, TRUE, TRUE),
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
AS $$ SELECT '0.7.0'::text $$;
