-- Privileges: roles pgjobs_enqueue/enqueue_any/worker/admin/viewer (NOLOGIN siblings; enqueue_any holds what enqueue holds; viewer only reads), schema USAGE, the EXECUTE matrix of every app_jobs function for PUBLIC and each role (data below; unlisted functions are granted to nobody), SECURITY DEFINER with a pinned search_path on exactly the granted functions but the trigger functions (SECURITY INVOKER), table/view/sequence rights (no writes for anyone), row-level security and its policies, job_status as security_invoker, and real calls under SET ROLE (granted calls work, the rest fail with 42501).
BEGIN;
\ir setup.psql

-- What each role may execute: PUBLIC, pgjobs_enqueue, pgjobs_worker, pgjobs_admin,
-- pgjobs_viewer.
-- Functions not listed must be granted to nobody.
CREATE TEMP TABLE expected_execute (
    name text PRIMARY KEY,
    pub boolean NOT NULL,
    enqueue boolean NOT NULL,
    worker boolean NOT NULL,
    admin boolean NOT NULL,
    viewer boolean NOT NULL
);
INSERT INTO expected_execute VALUES
-- name                        PUBLIC enqueue worker admin viewer
('pgjobs_version', TRUE, TRUE, TRUE, TRUE, TRUE),
('add_job', FALSE, TRUE, FALSE, TRUE, FALSE),
('add_jobs', FALSE, TRUE, FALSE, TRUE, FALSE),
('add_bundle', FALSE, TRUE, FALSE, TRUE, FALSE),
('add_scheduled_job', FALSE, TRUE, FALSE, TRUE, FALSE),
('pause_scheduled_job', FALSE, TRUE, FALSE, TRUE, FALSE),
('resume_scheduled_job', FALSE, TRUE, FALSE, TRUE, FALSE),
('cancel_job', FALSE, TRUE, FALSE, TRUE, FALSE),
('tg_add_job_with_row', FALSE, TRUE, FALSE, TRUE, FALSE),
('tg_add_job_with_row_id', FALSE, TRUE, FALSE, TRUE, FALSE),
('trigger_job_with_fields', FALSE, TRUE, FALSE, TRUE, FALSE),
('_enqueue_from_trigger', FALSE, TRUE, FALSE, TRUE, FALSE),
('schedule_next_run', FALSE, TRUE, TRUE, TRUE, TRUE),
('get_job', FALSE, FALSE, TRUE, TRUE, FALSE),
('get_jobs', FALSE, FALSE, TRUE, TRUE, FALSE),
('complete_job', FALSE, FALSE, TRUE, TRUE, FALSE),
('fail_job', FALSE, FALSE, TRUE, TRUE, FALSE),
('finish_jobs', FALSE, FALSE, TRUE, TRUE, FALSE),
('set_progress', FALSE, FALSE, TRUE, TRUE, FALSE),
('register_worker', FALSE, FALSE, TRUE, TRUE, FALSE),
('worker_heartbeat', FALSE, FALSE, TRUE, TRUE, FALSE),
('set_worker_wakeup', FALSE, FALSE, TRUE, TRUE, FALSE),
('unregister_worker', FALSE, FALSE, TRUE, TRUE, FALSE),
('reap_dead_workers', FALSE, FALSE, TRUE, TRUE, FALSE),
('release_jobs', FALSE, FALSE, TRUE, TRUE, FALSE),
('run_due_scheduled_jobs', FALSE, FALSE, TRUE, TRUE, FALSE),
('get_scheduled_job', FALSE, FALSE, TRUE, TRUE, FALSE),
('release_scheduled_jobs', FALSE, FALSE, TRUE, TRUE, FALSE),
('run_scheduled_job', FALSE, FALSE, TRUE, TRUE, FALSE),
('purge_job_history', FALSE, FALSE, TRUE, TRUE, FALSE),
('setting', FALSE, FALSE, TRUE, TRUE, TRUE),
('metrics', FALSE, FALSE, TRUE, TRUE, TRUE),
('complete_jobs', FALSE, FALSE, FALSE, TRUE, FALSE),
('permanently_fail_jobs', FALSE, FALSE, FALSE, TRUE, FALSE),
('reschedule_jobs', FALSE, FALSE, FALSE, TRUE, FALSE),
('remove_job', FALSE, FALSE, FALSE, TRUE, FALSE),
('force_unlock_workers', FALSE, FALSE, FALSE, TRUE, FALSE),
('retry_job', FALSE, FALSE, FALSE, TRUE, FALSE),
('delete_job', FALSE, FALSE, FALSE, TRUE, FALSE),
('delete_finished_jobs', FALSE, FALSE, FALSE, TRUE, FALSE),
('waiting_jobs', FALSE, FALSE, FALSE, TRUE, TRUE),
('failed_jobs', FALSE, FALSE, FALSE, TRUE, TRUE),
('set_setting', FALSE, FALSE, FALSE, TRUE, FALSE),
('set_task_settings', FALSE, FALSE, FALSE, TRUE, FALSE),
('set_queue_concurrency', FALSE, FALSE, FALSE, TRUE, FALSE),
-- Internal helpers: called only from the functions above, as their owner.
('_tenant_allowed', FALSE, FALSE, FALSE, FALSE, FALSE),
('_check_tenant', FALSE, FALSE, FALSE, FALSE, FALSE),
('_check_job_spec', FALSE, FALSE, FALSE, FALSE, FALSE),
('_check_worker_id', FALSE, FALSE, FALSE, FALSE, FALSE),
('_check_not_running', FALSE, FALSE, FALSE, FALSE, FALSE),
('_change_job_queue_count', FALSE, FALSE, FALSE, FALSE, FALSE),
('_finish_claim', FALSE, FALSE, FALSE, FALSE, FALSE),
('_claim_status', FALSE, FALSE, FALSE, FALSE, FALSE),
('_job_stopped', FALSE, FALSE, FALSE, FALSE, FALSE),
('_stop_jobs', FALSE, FALSE, FALSE, FALSE, FALSE),
('cancel_dependent', FALSE, FALSE, FALSE, FALSE, FALSE),
('_end_cancelled_claims', FALSE, FALSE, FALSE, FALSE, FALSE),
('_bundle_job_stopped', FALSE, FALSE, FALSE, FALSE, FALSE),
('_lock_bundles', FALSE, FALSE, FALSE, FALSE, FALSE),
('_lock_jobs', FALSE, FALSE, FALSE, FALSE, FALSE),
('_job_expiry', FALSE, FALSE, FALSE, FALSE, FALSE),
('_lock_is_free', FALSE, FALSE, FALSE, FALSE, FALSE),
('_notify_job_stopped', FALSE, FALSE, FALSE, FALSE, FALSE),
('notify_jobs_completed', FALSE, FALSE, FALSE, FALSE, FALSE),

('_enqueue_ignored', FALSE, FALSE, FALSE, FALSE, FALSE),
('_queue_concurrency', FALSE, FALSE, FALSE, FALSE, FALSE),
('_retry_delay', FALSE, FALSE, FALSE, FALSE, FALSE),
('_schedule_spec', FALSE, FALSE, FALSE, FALSE, FALSE),
('_spec_next_run', FALSE, FALSE, FALSE, FALSE, FALSE),
('_local_slot_instant', FALSE, FALSE, FALSE, FALSE, FALSE),
('_cron_field', FALSE, FALSE, FALSE, FALSE, FALSE),
('_cron_value', FALSE, FALSE, FALSE, FALSE, FALSE),
('_metrics_label', FALSE, FALSE, FALSE, FALSE, FALSE),
('_tg_timestamps', FALSE, FALSE, FALSE, FALSE, FALSE),
('_tg_increase_job_queue_count', FALSE, FALSE, FALSE, FALSE, FALSE),
('_tg_decrease_job_queue_count', FALSE, FALSE, FALSE, FALSE, FALSE),
('_tg_move_job_queue_count', FALSE, FALSE, FALSE, FALSE, FALSE),
('_tg_notify_worker', FALSE, FALSE, FALSE, FALSE, FALSE),
('_tg_bundle_job_revived', FALSE, FALSE, FALSE, FALSE, FALSE),
('_tg_scheduled_jobs_next_run', FALSE, FALSE, FALSE, FALSE, FALSE);

-- Tables, views and sequences: the privileges each grantee holds (SELECT, INSERT, UPDATE,
-- DELETE, TRUNCATE, REFERENCES, TRIGGER; sequences USAGE, SELECT, UPDATE). A relation
-- not listed: SELECT for worker, admin and viewer (tables and views), nothing else.
CREATE TEMP TABLE expected_relation (
    name text PRIMARY KEY,
    pub text NOT NULL,
    enqueue text NOT NULL,
    worker text NOT NULL,
    admin text NOT NULL,
    viewer text NOT NULL
);
INSERT INTO expected_relation VALUES
('jobs', '', 'SELECT', 'SELECT', 'SELECT', 'SELECT'),
('job_history', '', 'SELECT', 'SELECT', 'SELECT', 'SELECT'),
('job_bundles', '', 'SELECT', 'SELECT', 'SELECT', 'SELECT'),
('scheduled_jobs', '', 'SELECT', 'SELECT', 'SELECT', 'SELECT'),
('job_status', '', 'SELECT', 'SELECT', 'SELECT', 'SELECT'),
('job_queues', '', '', 'SELECT', 'SELECT', 'SELECT'),
('workers', '', '', 'SELECT', 'SELECT', 'SELECT'),
('settings', '', '', 'SELECT', 'SELECT', 'SELECT'),
('job_dependencies', '', '', 'SELECT', 'SELECT', 'SELECT'),
('task_settings', '', '', 'SELECT', 'SELECT', 'SELECT'),
('queue_settings', '', '', 'SELECT', 'SELECT', 'SELECT'),
('jobs_id_seq', '', '', '', '', ''),
('job_history_id_seq', '', '', '', '', ''),
('job_bundles_id_seq', '', '', '', '', ''),
('scheduled_jobs_id_seq', '', '', '', '', '');

CREATE FUNCTION pg_temp.relation_privileges(p_role text, p_rel oid) RETURNS text
LANGUAGE sql STABLE
AS $$
    SELECT coalesce(string_agg(p.priv, ',' ORDER BY p.n), '')
    FROM unnest(
        CASE WHEN (SELECT relkind FROM pg_class WHERE oid = p_rel) = 'S'
            THEN ARRAY['USAGE', 'SELECT', 'UPDATE']
            ELSE ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER']
        END
    ) WITH ORDINALITY AS p (priv, n)
    WHERE CASE WHEN (SELECT relkind FROM pg_class WHERE oid = p_rel) = 'S'
        THEN has_sequence_privilege(p_role, p_rel, p.priv)
        ELSE has_table_privilege(p_role, p_rel, p.priv)
    END;
$$;

SELECT plan(
    112
    + (SELECT count(*)::integer FROM pg_proc WHERE pronamespace = 'app_jobs'::regnamespace)
    + (SELECT count(*)::integer FROM pg_class
        WHERE relnamespace = 'app_jobs'::regnamespace AND relkind IN ('r', 'v', 'm', 'S'))
);

-- 1. Roles.
SELECT has_role(r, format('role %s exists', r))
FROM unnest(ARRAY[
    'pgjobs_enqueue', 'pgjobs_enqueue_any', 'pgjobs_worker', 'pgjobs_admin', 'pgjobs_viewer'
]) AS r;
SELECT results_eq(
    $$SELECT rolname::text COLLATE "default", rolcanlogin, rolsuper, rolcreaterole, rolcreatedb, rolbypassrls,
        rolreplication
      FROM pg_roles WHERE rolname LIKE 'pgjobs\_%' ORDER BY rolname$$,
    $$VALUES ('pgjobs_admin', FALSE, FALSE, FALSE, FALSE, FALSE, FALSE),
             ('pgjobs_enqueue', FALSE, FALSE, FALSE, FALSE, FALSE, FALSE),
             ('pgjobs_enqueue_any', FALSE, FALSE, FALSE, FALSE, FALSE, FALSE),
             ('pgjobs_viewer', FALSE, FALSE, FALSE, FALSE, FALSE, FALSE),
             ('pgjobs_worker', FALSE, FALSE, FALSE, FALSE, FALSE, FALSE)$$,
    'the five roles are plain NOLOGIN roles (pgjobs_viewer without BYPASSRLS)'
);
SELECT is_empty(
    $$SELECT g.rolname, m.rolname FROM pg_auth_members AS a
      JOIN pg_roles AS g ON g.oid = a.roleid JOIN pg_roles AS m ON m.oid = a.member
      WHERE g.rolname LIKE 'pgjobs\_%' AND m.rolname LIKE 'pgjobs\_%'$$,
    'the roles are siblings: none is a member of another'
);

-- 2. Schema.
SELECT is(
    ARRAY[
        has_schema_privilege(r, 'app_jobs', 'USAGE'),
        has_schema_privilege(r, 'app_jobs', 'CREATE')
    ],
    ARRAY[r <> 'public', FALSE],
    format('schema app_jobs for %s: USAGE %s, CREATE never', r, r <> 'public')
)
FROM unnest(ARRAY[
    'public', 'pgjobs_enqueue', 'pgjobs_enqueue_any', 'pgjobs_worker', 'pgjobs_admin',
    'pgjobs_viewer'
]) AS r;

-- 3. EXECUTE matrix: one test per function of app_jobs.
SELECT is(
    ARRAY[
        has_function_privilege('public', p.oid, 'EXECUTE'),
        has_function_privilege('pgjobs_enqueue', p.oid, 'EXECUTE'),
        has_function_privilege('pgjobs_worker', p.oid, 'EXECUTE'),
        has_function_privilege('pgjobs_admin', p.oid, 'EXECUTE'),
        has_function_privilege('pgjobs_viewer', p.oid, 'EXECUTE')
    ],
    ARRAY[
        coalesce(e.pub, FALSE), coalesce(e.enqueue, FALSE),
        coalesce(e.worker, FALSE), coalesce(e.admin, FALSE), coalesce(e.viewer, FALSE)
    ],
    format(
        '%s: EXECUTE for PUBLIC/enqueue/worker/admin/viewer%s', p.oid::regprocedure,
        CASE WHEN e.name IS NULL THEN ' (unlisted: nobody)' ELSE '' END
    )
)
FROM pg_proc AS p
LEFT JOIN expected_execute AS e ON e.name = p.proname
WHERE p.pronamespace = 'app_jobs'::regnamespace
ORDER BY p.proname, p.oid;

SELECT is_empty(
    $$SELECT p.oid::regprocedure FROM pg_proc AS p
      WHERE p.pronamespace = 'app_jobs'::regnamespace
        AND has_function_privilege('pgjobs_enqueue_any', p.oid, 'EXECUTE')
        <> has_function_privilege('pgjobs_enqueue', p.oid, 'EXECUTE')$$,
    'pgjobs_enqueue_any may execute exactly what pgjobs_enqueue may'
);
SELECT is_empty(
    $$SELECT p.oid::regprocedure FROM pg_proc AS p
      WHERE p.pronamespace = 'app_jobs'::regnamespace
        AND has_function_privilege('pgjobs_viewer', p.oid, 'EXECUTE')
        AND (p.provolatile = 'v' OR NOT has_function_privilege('pgjobs_admin', p.oid, 'EXECUTE'))$$,
    'pgjobs_viewer may execute only STABLE or IMMUTABLE functions that admins may'
);
SELECT is_empty(
    $$SELECT e.name FROM expected_execute AS e
      WHERE (e.enqueue OR e.worker OR e.admin)
        AND NOT EXISTS (SELECT 1 FROM pg_proc AS p
            WHERE p.proname = e.name AND p.pronamespace = 'app_jobs'::regnamespace)$$,
    'every function granted above exists'
);
SELECT is_empty(
    $$SELECT p.oid::regprocedure FROM pg_proc AS p
      WHERE p.pronamespace = 'app_jobs'::regnamespace
        AND EXISTS (SELECT 1 FROM aclexplode(p.proacl) AS a
            WHERE a.grantee <> p.proowner AND a.is_grantable)$$,
    'nobody may pass EXECUTE on'
);

-- 4. SECURITY DEFINER exactly on the granted functions (pgjobs_version touches nothing),
-- but for the trigger functions and their helper, which read the caller's row and so run
-- as the caller; each with a search_path that puts pg_catalog first and pg_temp last.
CREATE TEMP TABLE invoker_api (name text PRIMARY KEY);
INSERT INTO invoker_api VALUES
('tg_add_job_with_row'), ('tg_add_job_with_row_id'), ('trigger_job_with_fields'),
('_enqueue_from_trigger');
SELECT is_empty(
    $$SELECT p.oid::regprocedure FROM pg_proc AS p
      WHERE p.pronamespace = 'app_jobs'::regnamespace AND p.proname <> 'pgjobs_version'
        AND (has_function_privilege('pgjobs_enqueue', p.oid, 'EXECUTE')
            OR has_function_privilege('pgjobs_worker', p.oid, 'EXECUTE')
            OR has_function_privilege('pgjobs_admin', p.oid, 'EXECUTE'))
        AND p.prosecdef = (p.proname IN (SELECT name FROM invoker_api))$$,
    'every function granted to a role is SECURITY DEFINER, but the trigger functions'
);
SELECT is_empty(
    $$SELECT i.name, p.proconfig FROM invoker_api AS i
      LEFT JOIN pg_proc AS p
        ON p.proname = i.name AND p.pronamespace = 'app_jobs'::regnamespace
      WHERE p.oid IS NULL OR p.prosecdef
        OR NOT coalesce('search_path=pg_catalog, app_jobs, pg_temp' = ANY(p.proconfig), FALSE)$$,
    'the trigger functions run as the caller (SECURITY INVOKER), with a pinned search_path'
);
SELECT is_empty(
    $$SELECT p.oid::regprocedure FROM pg_proc AS p
      WHERE p.pronamespace = 'app_jobs'::regnamespace AND p.prosecdef
        AND NOT has_function_privilege('pgjobs_admin', p.oid, 'EXECUTE')$$,
    'no internal helper is SECURITY DEFINER'
);
SELECT is_empty(
    $$SELECT p.oid::regprocedure, p.proconfig FROM pg_proc AS p
      WHERE p.pronamespace = 'app_jobs'::regnamespace AND p.prosecdef
        AND NOT coalesce('search_path=pg_catalog, app_jobs, pg_temp' = ANY(p.proconfig), FALSE)$$,
    'every SECURITY DEFINER function pins search_path = pg_catalog, app_jobs, pg_temp'
);
SELECT is(
    (SELECT count(*)::integer FROM pg_proc
        WHERE pronamespace = 'app_jobs'::regnamespace AND prosecdef),
    (SELECT count(*)::integer FROM pg_proc AS p JOIN expected_execute AS e ON e.name = p.proname
        WHERE p.pronamespace = 'app_jobs'::regnamespace
            AND (e.enqueue OR e.worker OR e.admin) AND p.proname <> 'pgjobs_version'
            AND p.proname NOT IN (SELECT name FROM invoker_api)),
    'as many SECURITY DEFINER functions as granted ones, less the trigger functions'
);
SELECT is(
    (SELECT proconfig FROM pg_proc WHERE oid = 'app_jobs.get_jobs'::regproc),
    ARRAY['jit=off', 'search_path=pg_catalog, app_jobs, pg_temp'],
    'get_jobs keeps its own jit = off next to the search_path'
);

-- 5. Relations: one test per table, view and sequence of app_jobs.
SELECT is(
    ARRAY[
        pg_temp.relation_privileges('public', c.oid),
        pg_temp.relation_privileges('pgjobs_enqueue', c.oid),
        pg_temp.relation_privileges('pgjobs_worker', c.oid),
        pg_temp.relation_privileges('pgjobs_admin', c.oid),
        pg_temp.relation_privileges('pgjobs_viewer', c.oid)
    ],
    CASE
        WHEN e.name IS NOT NULL THEN ARRAY[e.pub, e.enqueue, e.worker, e.admin, e.viewer]
        WHEN c.relkind = 'S' THEN ARRAY['', '', '', '', '']
        ELSE ARRAY['', '', 'SELECT', 'SELECT', 'SELECT']
    END,
    format(
        '%s: privileges of PUBLIC/enqueue/worker/admin/viewer%s', c.oid::regclass,
        CASE WHEN e.name IS NULL THEN ' (unlisted: worker, admin and viewer read)' ELSE '' END
    )
)
FROM pg_class AS c
LEFT JOIN expected_relation AS e ON e.name = c.relname
WHERE c.relnamespace = 'app_jobs'::regnamespace AND c.relkind IN ('r', 'v', 'm', 'S')
ORDER BY c.relname;

SELECT is_empty(
    $$SELECT c.oid::regclass FROM pg_class AS c
      WHERE c.relnamespace = 'app_jobs'::regnamespace AND c.relkind IN ('r', 'v', 'm', 'S')
        AND pg_temp.relation_privileges('pgjobs_enqueue_any', c.oid)
        <> pg_temp.relation_privileges('pgjobs_enqueue', c.oid)$$,
    'pgjobs_enqueue_any holds on tables, views and sequences what pgjobs_enqueue holds'
);
SELECT is_empty(
    $$SELECT a.attrelid::regclass, a.attname FROM pg_attribute AS a
      JOIN pg_class AS c ON c.oid = a.attrelid
      WHERE c.relnamespace = 'app_jobs'::regnamespace AND a.attacl IS NOT NULL$$,
    'no column-level grants'
);

-- 6. Row-level security and policies.
SELECT results_eq(
    $$SELECT relname::text COLLATE "default", relrowsecurity, relforcerowsecurity FROM pg_class
      WHERE relnamespace = 'app_jobs'::regnamespace AND relkind IN ('r', 'p') AND relrowsecurity
      ORDER BY relname$$,
    $$VALUES ('job_bundles', TRUE, FALSE), ('job_history', TRUE, FALSE),
             ('jobs', TRUE, FALSE), ('scheduled_jobs', TRUE, FALSE)$$,
    'row-level security on jobs, job_history, job_bundles, scheduled_jobs (owner exempt)'
);
SELECT results_eq(
    $$SELECT format('%s.%s %s %s to %s using %s check %s', tablename, policyname, permissive,
            cmd, roles, qual, with_check) COLLATE "default"
      FROM pg_policies WHERE schemaname = 'app_jobs' ORDER BY tablename, policyname$$,
    $$SELECT format('%s.%s PERMISSIVE SELECT to %s using %s check %s', t, p, r, q, NULL)
      FROM unnest(ARRAY['job_bundles', 'job_history', 'jobs', 'scheduled_jobs']) AS t
      CROSS JOIN (VALUES
          ('enqueue_own_tenant', '{pgjobs_enqueue}',
           '(database_id = (NULLIF(current_setting(''jwt.claims.database_id''::text, true), ''''::text))::uuid)'),
          ('viewer_all', '{pgjobs_viewer}', 'true'),
          ('worker_admin_all', '{pgjobs_admin,pgjobs_enqueue_any,pgjobs_worker}', 'true')
      ) AS x (p, r, q)
      ORDER BY t, p$$,
    'policies: enqueue reads its jwt.claims.database_id rows; enqueue_any, worker, admin and viewer all rows'
);
SELECT is(
    (SELECT reloptions FROM pg_class WHERE oid = 'app_jobs.job_status'::regclass),
    ARRAY['security_invoker=true'],
    'job_status reads with the caller''s rights (row-level security applies)'
);

-- 7. Real calls under SET ROLE. Fixtures as the owner: jobs of two tenants.
SET LOCAL jwt.claims.database_id = '';
SELECT id AS j1 FROM app_jobs.add_job(
    db_id := '00000000-0000-0000-0000-00000000000a', identifier := 'priv_a'
) \gset
SELECT id AS j2 FROM app_jobs.add_job(
    db_id := '00000000-0000-0000-0000-00000000000b', identifier := 'priv_b'
) \gset

SET LOCAL ROLE pgjobs_enqueue;
SET LOCAL jwt.claims.database_id = '00000000-0000-0000-0000-00000000000a';
SELECT is(current_user::text, 'pgjobs_enqueue', 'now running as pgjobs_enqueue');
SELECT is(
    (SELECT database_id FROM app_jobs.add_job(identifier := 'priv_e')),
    '00000000-0000-0000-0000-00000000000a'::uuid,
    'enqueue: add_job works (db_id from the claim)'
);
SELECT lives_ok(
    $$SELECT app_jobs.add_bundle('priv_bundle', '[{"identifier": "priv_e"}]')$$,
    'enqueue: add_bundle works'
);
SELECT lives_ok(
    $$SELECT app_jobs.add_scheduled_job(identifier := 'priv_s', schedule_info := '{"rule": "* * * * *"}')$$,
    'enqueue: add_scheduled_job works'
);
SELECT is(app_jobs.cancel_job(:j1), 'cancelled', 'enqueue: cancel_job works on its tenant''s job');
SELECT ok(
    app_jobs.schedule_next_run('{"rule": "0 * * * *"}', now()) > now(),
    'enqueue: schedule_next_run works'
);
SELECT is(app_jobs.pgjobs_version(), (SELECT extversion FROM pg_extension WHERE extname = 'pgjobs'),
    'enqueue: pgjobs_version works');
SELECT throws_ok(c, '42501', NULL, 'enqueue refused: ' || c)
FROM unnest(ARRAY[
    $$SELECT app_jobs.get_job('w_priv')$$,
    $$SELECT app_jobs.complete_job('w_priv', 1)$$,
    $$SELECT app_jobs.set_task_settings('priv_e')$$,
    $$SELECT app_jobs.complete_jobs(ARRAY[1]::bigint[])$$,
    $$SELECT app_jobs._finish_claim('w_priv', 1, 1, 'completed')$$,
    $$SELECT app_jobs._check_tenant(NULL)$$,
    $$INSERT INTO app_jobs.jobs (task_identifier) VALUES ('x')$$,
    $$UPDATE app_jobs.jobs SET priority = 1$$,
    $$DELETE FROM app_jobs.job_history$$,
    $$SELECT * FROM app_jobs.workers$$,
    $$SELECT nextval('app_jobs.jobs_id_seq')$$
]) AS c;
RESET ROLE;

SET LOCAL ROLE pgjobs_worker;
SET LOCAL jwt.claims.database_id = '';
SELECT lives_ok($$SELECT app_jobs.register_worker('w_priv')$$, 'worker: register_worker works');
SELECT is(
    (SELECT count(*)::integer FROM app_jobs.get_jobs('w_priv', ARRAY['priv_b'], '4 hours', 10)),
    1,
    'worker: get_jobs claims another tenant''s job'
);
SELECT is(
    (SELECT array_agg(status) FROM app_jobs.finish_jobs('w_priv', format('[{"id": %s, "attempt": 1}]', :j2)::jsonb)),
    ARRAY['completed'],
    'worker: finish_jobs works'
);
SELECT lives_ok(c, 'worker: ' || c)
FROM unnest(ARRAY[
    $$SELECT * FROM app_jobs.worker_heartbeat('w_priv')$$,
    $$SELECT app_jobs.set_progress('w_priv', 1, 50)$$,
    $$SELECT * FROM app_jobs.reap_dead_workers('1 hour')$$,
    $$SELECT * FROM app_jobs.run_due_scheduled_jobs()$$,
    $$SELECT app_jobs.purge_job_history()$$,
    $$SELECT app_jobs.setting('history')$$,
    $$SELECT app_jobs.metrics()$$,
    $$SELECT count(*) FROM app_jobs.workers$$,
    $$SELECT app_jobs.unregister_worker('w_priv')$$
]) AS c;
SELECT throws_ok(c, '42501', NULL, 'worker refused: ' || c)
FROM unnest(ARRAY[
    $$SELECT app_jobs.set_task_settings('priv_e')$$,
    $$SELECT app_jobs.set_setting('history', 'off')$$,
    $$SELECT app_jobs.add_job(identifier := 'x')$$,
    $$SELECT app_jobs.complete_jobs(ARRAY[1]::bigint[])$$,
    $$DELETE FROM app_jobs.jobs$$,
    $$UPDATE app_jobs.settings SET value = 'off'$$
]) AS c;
RESET ROLE;

SET LOCAL ROLE pgjobs_admin;
SELECT lives_ok(c, 'admin: ' || c)
FROM unnest(ARRAY[
    $$SELECT app_jobs.set_task_settings('priv_e', max_attempts := 3)$$,
    $$SELECT app_jobs.set_setting('history_retention', '1 day')$$,
    $$SELECT app_jobs.set_queue_concurrency('priv_q', 2)$$,
    $$SELECT app_jobs.add_job(db_id := '00000000-0000-0000-0000-00000000000b', identifier := 'x')$$,
    $$SELECT * FROM app_jobs.waiting_jobs()$$,
    $$SELECT * FROM app_jobs.failed_jobs()$$,
    $$SELECT * FROM app_jobs.reschedule_jobs(ARRAY(SELECT id FROM app_jobs.jobs), priority := 5)$$,
    $$SELECT app_jobs.get_job('w_admin')$$,
    $$SELECT app_jobs.force_unlock_workers(ARRAY['w_admin'])$$,
    $$SELECT * FROM app_jobs.complete_jobs(ARRAY(SELECT id FROM app_jobs.jobs))$$,
    $$SELECT app_jobs.delete_finished_jobs()$$
]) AS c;
SELECT throws_ok(
    $$INSERT INTO app_jobs.jobs (task_identifier) VALUES ('x')$$, '42501', NULL,
    'admin refused: direct INSERT into jobs'
);
RESET ROLE;

-- pgjobs_viewer reads every tenant's rows, through row-level security (no BYPASSRLS),
-- and every read-only function granted to it; everything else is refused.
SET LOCAL jwt.claims.database_id = '';
SELECT id AS v1 FROM app_jobs.add_job(
    db_id := '00000000-0000-0000-0000-00000000000a', identifier := 'view_a'
) \gset
SELECT app_jobs.add_job(db_id := '00000000-0000-0000-0000-00000000000b', identifier := 'view_b');
SELECT id AS vs FROM app_jobs.add_scheduled_job(
    db_id := '00000000-0000-0000-0000-00000000000b', identifier := 'view_s',
    schedule_info := '{"rule": "@daily"}'
) \gset
SET LOCAL ROLE pgjobs_viewer;
SELECT is(current_user::text, 'pgjobs_viewer', 'now running as pgjobs_viewer');
SELECT is(
    (SELECT array_agg(task_identifier ORDER BY task_identifier)::text[] FROM app_jobs.jobs
     WHERE task_identifier LIKE 'view\_%'),
    ARRAY['view_a', 'view_b'],
    'viewer: reads the jobs of every tenant (no claim set)'
);
SELECT is(
    (SELECT count(*)::integer FROM app_jobs.scheduled_jobs
     WHERE database_id = '00000000-0000-0000-0000-00000000000b'),
    1,
    'viewer: reads another tenant''s schedule'
);
SELECT lives_ok(c, 'viewer: ' || c)
FROM unnest(ARRAY[
    $$SELECT count(*) FROM app_jobs.job_history$$,
    $$SELECT count(*) FROM app_jobs.job_bundles$$,
    $$SELECT count(*) FROM app_jobs.job_status$$,
    $$SELECT count(*) FROM app_jobs.queue_stats$$,
    $$SELECT count(*) FROM app_jobs.job_queues$$,
    $$SELECT count(*) FROM app_jobs.workers$$,
    $$SELECT count(*) FROM app_jobs.settings$$,
    $$SELECT count(*) FROM app_jobs.job_dependencies$$,
    $$SELECT count(*) FROM app_jobs.task_settings$$,
    $$SELECT count(*) FROM app_jobs.queue_settings$$,
    $$SELECT app_jobs.metrics()$$,
    $$SELECT app_jobs.setting('history')$$,
    $$SELECT * FROM app_jobs.waiting_jobs()$$,
    $$SELECT * FROM app_jobs.failed_jobs()$$,
    $$SELECT app_jobs.schedule_next_run('{"rule": "@daily"}', now())$$
]) AS c;
SELECT throws_ok(c, '42501', NULL, 'viewer refused: ' || c)
FROM unnest(ARRAY[
    $$SELECT app_jobs.add_job(identifier := 'x')$$,
    format('SELECT app_jobs.cancel_job(%s)', :v1),
    format('SELECT app_jobs.retry_job(%s)', :v1),
    format('SELECT app_jobs.delete_job(%s)', :v1),
    format('SELECT app_jobs.run_scheduled_job(%s)', :vs),
    format('SELECT app_jobs.pause_scheduled_job(%s)', :vs),
    format('SELECT app_jobs.resume_scheduled_job(%s)', :vs),
    $$SELECT app_jobs.set_setting('history', 'off')$$,
    $$SELECT app_jobs.get_jobs('w_view')$$,
    $$SELECT * FROM app_jobs.run_due_scheduled_jobs()$$,
    $$INSERT INTO app_jobs.jobs (task_identifier) VALUES ('x')$$,
    $$UPDATE app_jobs.scheduled_jobs SET priority = 1$$,
    $$DELETE FROM app_jobs.job_history$$,
    $$TRUNCATE app_jobs.settings$$,
    $$SELECT nextval('app_jobs.jobs_id_seq')$$
]) AS c;
RESET ROLE;

-- A role with none of the pgjobs roles: not even the schema.
CREATE ROLE pgjobs_test_nobody NOLOGIN;
SET LOCAL ROLE pgjobs_test_nobody;
SELECT throws_ok(
    $$SELECT app_jobs.add_job(identifier := 'x')$$, '42501', NULL,
    'a role without a pgjobs role cannot call add_job'
);
RESET ROLE;

-- Membership is what counts: with INHERIT a member uses the role's rights directly; a
-- NOINHERIT member (a PostgREST-style authenticator) only after SET ROLE.
CREATE ROLE pgjobs_test_app NOLOGIN INHERIT IN ROLE pgjobs_enqueue;
CREATE ROLE pgjobs_test_authenticator NOLOGIN NOINHERIT IN ROLE pgjobs_enqueue;
SET LOCAL ROLE pgjobs_test_app;
SET LOCAL jwt.claims.database_id = '00000000-0000-0000-0000-00000000000a';
SELECT lives_ok($$SELECT app_jobs.add_job(identifier := 'x')$$, 'an INHERIT member may add jobs');
RESET ROLE;
SET LOCAL ROLE pgjobs_test_authenticator;
SELECT throws_ok(
    $$SELECT app_jobs.add_job(identifier := 'x')$$, '42501', NULL,
    'a NOINHERIT member may not, until it sets the role'
);
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
