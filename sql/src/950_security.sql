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
