-- pgjobs 0.8.0 -> 0.9.0: schedules can be paused and resumed, and a read-only role
-- pgjobs_viewer for the dashboard (issue 15). See CHANGELOG.md, 0.9.0. Written by hand:
-- only what changed, the functions as in sql/src.

-- NULL: the schedule is active (every existing schedule stays so).
ALTER TABLE app_jobs.scheduled_jobs ADD COLUMN paused_at timestamptz;
COMMENT ON COLUMN app_jobs.scheduled_jobs.paused_at IS
'When pause_scheduled_job paused the schedule (NULL: active); the tick skips it until '
'resume_scheduled_job';

-- from sql/src/420_get_scheduled_job.sql
-- Lock the next unlocked recurring job that is not paused for a scheduler worker.
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

-- from sql/src/430_pause_scheduled_job.sql
-- Pause a recurring job: the scheduler tick (and get_scheduled_job) leave it alone until
-- it is resumed; run_scheduled_job still runs it on demand. Pausing a paused schedule
-- keeps its paused_at. PJ009 when there is no such schedule, or it belongs to a tenant
-- the caller may not act on (it looks missing).
CREATE OR REPLACE FUNCTION app_jobs.pause_scheduled_job(
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
CREATE OR REPLACE FUNCTION app_jobs.resume_scheduled_job(
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

-- from sql/src/510_run_due_scheduled_jobs.sql
-- Enqueue the job of every due schedule slot exactly once; safe from many workers at once.
-- One schedule that fails never stops the others: each runs in a subtransaction of its
-- own, and its error is kept on its row (last_error, last_error_at). A schedule whose
-- schedule_info no longer parses stops (next_run_at NULL) until it is rewritten; a slot
-- whose job add_job refuses is skipped. A paused schedule is skipped (paused_at).
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

-- The role pgjobs_viewer, its grants and policies; EXECUTE on the new functions.
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
AS $$ SELECT '0.9.0'::text $$;
