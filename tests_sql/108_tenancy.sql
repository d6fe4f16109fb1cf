-- Tenancy: tenant_allowed/check_tenant (the caller is the SET ROLE role, else session_user; worker, admin and owner act on every tenant, anyone else only on its jwt.claims.database_id, none without one), row-level security (pgjobs_enqueue reads only its tenant's jobs, job_status, job_history, job_bundles, scheduled_jobs; worker and admin read all), and the API refusing other tenants (PJ030) for add_job, add_bundle, add_scheduled_job, job triggers, job keys of another tenant's job or schedule, and cancel_job treating another tenant's job as missing; every refusal is unconditional and leaves the other tenant's rows as they were.
BEGIN;
\ir setup.psql
SELECT plan(66);

\set a '''00000000-0000-0000-0000-00000000000a'''
\set b '''00000000-0000-0000-0000-00000000000b'''
SET LOCAL jwt.claims.database_id = '';

-- Fixtures, as the owner: per tenant a waiting job, a completed one (history), a bundle,
-- a schedule; and a job of no tenant.
SELECT id AS a1 FROM app_jobs.add_job(db_id := :a, identifier := 't_wait') \gset
SELECT id AS a2 FROM app_jobs.add_job(db_id := :a, identifier := 't_done') \gset
SELECT id AS b1 FROM app_jobs.add_job(db_id := :b, identifier := 't_wait') \gset
SELECT id AS b2 FROM app_jobs.add_job(db_id := :b, identifier := 't_done') \gset
SELECT id AS n1 FROM app_jobs.add_job(identifier := 't_wait') \gset
SELECT count(*) AS claimed FROM app_jobs.get_jobs('w_t', ARRAY['t_done'], '4 hours', 10) \gset
SELECT count(*) AS finished FROM app_jobs.finish_jobs(
    'w_t', format('[{"id": %s, "attempt": 1}, {"id": %s, "attempt": 1}]', :a2, :b2)::jsonb
) \gset
SELECT id AS ab FROM app_jobs.add_bundle(
    'tb', '[{"identifier": "t_bundled"}]', db_id := :a
) \gset
SELECT id AS bb FROM app_jobs.add_bundle(
    'tb', '[{"identifier": "t_bundled"}]', db_id := :b
) \gset
SELECT id AS asch FROM app_jobs.add_scheduled_job(
    db_id := :a, identifier := 't_sched', schedule_info := '{"rule": "0 0 1 1 *"}'
) \gset
SELECT id AS bsch FROM app_jobs.add_scheduled_job(
    db_id := :b, identifier := 't_sched', schedule_info := '{"rule": "0 0 1 1 *"}'
) \gset

-- What each tenant should see, computed as the owner.
SELECT
    (SELECT array_agg(id ORDER BY id) FROM app_jobs.jobs WHERE database_id = :a) AS a_jobs,
    (SELECT array_agg(id ORDER BY id) FROM app_jobs.jobs WHERE database_id = :b) AS b_jobs,
    (SELECT count(*) FROM app_jobs.jobs) AS all_jobs,
    (SELECT count(*) FROM app_jobs.job_status) AS all_status,
    (SELECT count(*) FROM app_jobs.job_history) AS all_history
\gset
SELECT is(:'a_jobs'::bigint[] && :'b_jobs'::bigint[], FALSE, 'fixtures: two tenants, distinct jobs');

-- 1. tenant_allowed / check_tenant themselves (granted here only to test them directly).
GRANT EXECUTE ON FUNCTION app_jobs._tenant_allowed(uuid), app_jobs._check_tenant(uuid)
TO pgjobs_enqueue, pgjobs_worker, pgjobs_admin;
CREATE ROLE pgjobs_test_tenant_app NOLOGIN INHERIT IN ROLE pgjobs_enqueue;
CREATE ROLE pgjobs_test_both NOLOGIN INHERIT IN ROLE pgjobs_enqueue, pgjobs_worker;

SELECT is(
    ARRAY[app_jobs._tenant_allowed(:b), app_jobs._tenant_allowed(NULL)], ARRAY[TRUE, TRUE],
    'the owner (a superuser, no SET ROLE) may act on any tenant, NULL included'
);

SET LOCAL ROLE pgjobs_enqueue;
SET LOCAL jwt.claims.database_id = '00000000-0000-0000-0000-00000000000a';
SELECT is(
    ARRAY[app_jobs._tenant_allowed(:a), app_jobs._tenant_allowed(:b), app_jobs._tenant_allowed(NULL)],
    ARRAY[TRUE, FALSE, FALSE],
    'enqueue with claim A: tenant A only (not B, not NULL)'
);
SELECT lives_ok(
    format('SELECT app_jobs._check_tenant(%L)', :a), 'check_tenant passes for the own tenant'
);
SELECT throws_ok(
    format('SELECT app_jobs._check_tenant(%L)', :b),
    'PJ030', 'permission denied for database_id 00000000-0000-0000-0000-00000000000b',
    'check_tenant raises PJ030 for another tenant'
);
SELECT throws_ok(
    'SELECT app_jobs._check_tenant(NULL)', 'PJ030', 'permission denied for database_id NULL',
    'check_tenant raises PJ030 for no tenant'
);
SET LOCAL jwt.claims.database_id = '';
SELECT is(
    ARRAY[app_jobs._tenant_allowed(:a), app_jobs._tenant_allowed(NULL)], ARRAY[FALSE, FALSE],
    'enqueue without a claim (empty): no tenant at all'
);
RESET jwt.claims.database_id;
SELECT is(
    ARRAY[app_jobs._tenant_allowed(:a), app_jobs._tenant_allowed(NULL)], ARRAY[FALSE, FALSE],
    'enqueue without a claim (reset): no tenant at all'
);
SET LOCAL jwt.claims.database_id = 'not-a-uuid';
SELECT throws_ok(
    format('SELECT app_jobs._tenant_allowed(%L)', :a), '22P02', NULL,
    'a malformed claim is an error, never a match'
);
SET LOCAL jwt.claims.database_id = '00000000-0000-0000-0000-00000000000a';
RESET ROLE;

-- The session user is a superuser, yet after SET ROLE the role set is what counts (as
-- with PostgREST / PostGraphile, whose authenticator switches to the user's role).
SET LOCAL ROLE pgjobs_test_tenant_app;
SELECT is(
    ARRAY[app_jobs._tenant_allowed(:a), app_jobs._tenant_allowed(:b)], ARRAY[TRUE, FALSE],
    'a member of pgjobs_enqueue (superuser session, SET ROLE): tenant A only'
);
RESET ROLE;
SET LOCAL ROLE pgjobs_worker;
SELECT is(app_jobs._tenant_allowed(:b), TRUE, 'pgjobs_worker may act on any tenant');
RESET ROLE;
SET LOCAL ROLE pgjobs_admin;
SELECT is(app_jobs._tenant_allowed(:b), TRUE, 'pgjobs_admin may act on any tenant');
RESET ROLE;
SET LOCAL ROLE pgjobs_test_both;
SELECT is(
    app_jobs._tenant_allowed(:b), TRUE,
    'a member of pgjobs_enqueue and pgjobs_worker may act on any tenant'
);
RESET ROLE;
REVOKE EXECUTE ON FUNCTION app_jobs._tenant_allowed(uuid), app_jobs._check_tenant(uuid)
FROM pgjobs_enqueue, pgjobs_worker, pgjobs_admin;

-- 2. Row-level security: what pgjobs_enqueue reads.
SET LOCAL ROLE pgjobs_enqueue;
SELECT is(
    (SELECT array_agg(id ORDER BY id) FROM app_jobs.jobs), :'a_jobs'::bigint[],
    'claim A: jobs shows exactly A''s live jobs'
);
SELECT is(
    (SELECT array_agg(DISTINCT database_id) FROM app_jobs.jobs), ARRAY[:a::uuid],
    'claim A: no job of B or of no tenant'
);
SELECT is(
    (SELECT array_agg(id ORDER BY id) FROM app_jobs.job_status),
    (SELECT array_agg(x ORDER BY x) FROM unnest(:'a_jobs'::bigint[] || :a2::bigint) AS x),
    'claim A: job_status shows A''s live jobs and A''s finished one'
);
SELECT is(
    (SELECT status FROM app_jobs.job_status WHERE id = :a2), 'completed',
    'claim A: job_status reads A''s history'
);
SELECT is(
    (SELECT count(*)::integer FROM app_jobs.job_status WHERE id IN (:b1, :b2, :n1)), 0,
    'claim A: job_status hides B''s jobs (live and finished) and the tenant-less one'
);
SELECT is(
    (SELECT array_agg(job_id) FROM app_jobs.job_history), ARRAY[:a2::bigint],
    'claim A: job_history shows only A''s record'
);
SELECT is(
    (SELECT array_agg(id) FROM app_jobs.job_bundles), ARRAY[:ab::bigint],
    'claim A: job_bundles shows only A''s bundle'
);
SELECT is(
    (SELECT array_agg(id) FROM app_jobs.scheduled_jobs), ARRAY[:asch::bigint],
    'claim A: scheduled_jobs shows only A''s schedule'
);
SELECT is(
    (SELECT database_id FROM app_jobs.add_job(identifier := 't_new')), :a::uuid,
    'claim A: add_job without db_id adds a job of A'
);
SELECT is(
    (SELECT count(*)::integer FROM app_jobs.jobs WHERE task_identifier = 't_new'), 1,
    'claim A: and sees it'
);

SET LOCAL jwt.claims.database_id = '00000000-0000-0000-0000-00000000000b';
SELECT is(
    (SELECT array_agg(id ORDER BY id) FROM app_jobs.jobs), :'b_jobs'::bigint[],
    'claim B: jobs shows exactly B''s live jobs'
);
SELECT is(
    (SELECT array_agg(job_id) FROM app_jobs.job_history), ARRAY[:b2::bigint],
    'claim B: job_history shows only B''s record'
);

SET LOCAL jwt.claims.database_id = '';
SELECT is(
    ARRAY[
        (SELECT count(*) FROM app_jobs.jobs),
        (SELECT count(*) FROM app_jobs.job_status),
        (SELECT count(*) FROM app_jobs.job_history),
        (SELECT count(*) FROM app_jobs.job_bundles),
        (SELECT count(*) FROM app_jobs.scheduled_jobs)
    ]::integer[],
    ARRAY[0, 0, 0, 0, 0],
    'no claim: no rows at all (not even tenant-less ones)'
);
RESET ROLE;

SET LOCAL ROLE pgjobs_worker;
SET LOCAL jwt.claims.database_id = '00000000-0000-0000-0000-00000000000a';
SELECT is(
    ARRAY[
        (SELECT count(*) FROM app_jobs.jobs),
        (SELECT count(*) FROM app_jobs.job_status),
        (SELECT count(*) FROM app_jobs.job_history)
    ]::integer[],
    ARRAY[:all_jobs + 1, :all_status + 1, :all_history]::integer[],
    'worker (even with a claim): every row of every tenant'
);
SELECT is(
    (SELECT count(*)::integer FROM app_jobs.job_bundles), 2, 'worker: both bundles'
);
SELECT is(
    (SELECT array_agg(database_id ORDER BY database_id) FROM app_jobs.get_jobs(
        'w_t2', ARRAY['t_wait'], '4 hours', 10)),
    ARRAY[:a::uuid, :b::uuid, NULL],
    'worker: claims the jobs of every tenant'
);
RESET ROLE;

SET LOCAL ROLE pgjobs_admin;
SELECT is(
    ARRAY[
        (SELECT count(*) FROM app_jobs.jobs),
        (SELECT count(*) FROM app_jobs.job_history),
        (SELECT count(*) FROM app_jobs.scheduled_jobs)
    ]::integer[],
    ARRAY[:all_jobs + 1, :all_history, 2]::integer[],
    'admin: every row of every tenant'
);
SELECT is(
    (SELECT database_id FROM app_jobs.add_job(db_id := :b, identifier := 't_admin')), :b::uuid,
    'admin with claim A: adds a job for B'
);
RESET ROLE;

-- A job trigger on a table of the application, fired by an enqueue member.
CREATE TEMP TABLE tenant_rows (id integer, database_id uuid);
CREATE TRIGGER tenant_rows_job AFTER INSERT ON tenant_rows
FOR EACH ROW EXECUTE FUNCTION app_jobs.tg_add_job_with_row_id('t_trigger');
GRANT INSERT ON tenant_rows TO pgjobs_enqueue;
SET LOCAL ROLE pgjobs_enqueue;
SELECT lives_ok(
    format('INSERT INTO tenant_rows VALUES (1, %L)', :a),
    'trigger: a row of the own tenant enqueues (the trigger function runs as the owner)'
);
SELECT is(
    (SELECT database_id FROM app_jobs.jobs WHERE task_identifier = 't_trigger'), :a::uuid,
    'trigger: the job belongs to the row''s tenant'
);
RESET ROLE;

-- 3. The API refuses other tenants, whatever the function's source says: every call
-- below is made, and must fail with PJ030, as an enqueue member held to tenant A.
SELECT id AS bk FROM app_jobs.add_job(db_id := :b, identifier := 't_keyed', job_key := 'b_key') \gset
SELECT id AS bsk FROM app_jobs.add_scheduled_job(
    db_id := :b, identifier := 't_sched', schedule_info := '{"rule": "0 0 1 1 *"}',
    job_key := 'b_sched_key'
) \gset
SELECT id AS brun FROM app_jobs.add_job(db_id := :b, identifier := 't_run') \gset
SELECT id AS arun FROM app_jobs.add_job(db_id := :a, identifier := 't_run') \gset
SELECT id AS await FROM app_jobs.add_job(db_id := :a, identifier := 't_a_wait') \gset
SELECT is(
    (SELECT array_agg(id ORDER BY id) FROM app_jobs.get_jobs('w_t3', ARRAY['t_run'], '4 hours', 10)),
    ARRAY[:brun, :arun]::bigint[],
    'fixtures: a running job of B and one of A'
);
-- Everything of B and of no tenant, as the owner sees it, before the refused calls.
CREATE FUNCTION pg_temp.others() RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_build_object(
        'jobs', (SELECT jsonb_agg(to_jsonb(j) ORDER BY j.id) FROM app_jobs.jobs AS j
                 WHERE j.database_id IS DISTINCT FROM '00000000-0000-0000-0000-00000000000a'),
        'schedules', (SELECT jsonb_agg(to_jsonb(s) ORDER BY s.id) FROM app_jobs.scheduled_jobs AS s
                      WHERE s.database_id IS DISTINCT FROM '00000000-0000-0000-0000-00000000000a'),
        'bundles', (SELECT jsonb_agg(to_jsonb(b) ORDER BY b.id) FROM app_jobs.job_bundles AS b)
    );
$$;
SELECT pg_temp.others() AS others_before \gset

CREATE TEMP TABLE refusals (n serial, claim text, what text, call text, msg text);
GRANT SELECT ON refusals TO PUBLIC;
INSERT INTO refusals (claim, what, call, msg) VALUES
    ('a', 'add_job for B',
     format('SELECT app_jobs.add_job(db_id := %L, identifier := %L)', :b, 't_x'),
     'permission denied for database_id 00000000-0000-0000-0000-00000000000b'),
    ('a', 'add_job for no tenant (db_id NULL)',
     'SELECT app_jobs.add_job(db_id := NULL, identifier := ''t_x'')',
     'permission denied for database_id NULL'),
    ('a', 'add_job for B with a fresh job_key',
     format('SELECT app_jobs.add_job(db_id := %L, identifier := %L, job_key := %L)', :b, 't_x', 'fresh_key'),
     NULL),
    ('a', 'add_job for A with the key of B''s job (replace)',
     'SELECT app_jobs.add_job(identifier := ''t_x'', job_key := ''b_key'')', NULL),
    ('a', 'add_job for A with the key of B''s job (unsafe_dedupe returns it)',
     'SELECT app_jobs.add_job(identifier := ''t_x'', job_key := ''b_key'', job_key_mode := ''unsafe_dedupe'')',
     NULL),
    ('a', 'add_job for B with depends_on',
     format('SELECT app_jobs.add_job(db_id := %L, identifier := %L, depends_on := ARRAY[%s]::bigint[])', :b, 't_x', :a1),
     NULL),
    ('a', 'add_job for A depending on B''s job',
     format('SELECT app_jobs.add_job(identifier := %L, depends_on := ARRAY[%s]::bigint[])', 't_x', :b1),
     NULL),
    ('a', 'add_bundle for B',
     format('SELECT app_jobs.add_bundle(%L, %L, db_id := %L)', 'tb', '[{"identifier": "t_x"}]', :b),
     'permission denied for database_id 00000000-0000-0000-0000-00000000000b'),
    ('a', 'add_bundle for no tenant',
     'SELECT app_jobs.add_bundle(''tb'', ''[{"identifier": "t_x"}]'', db_id := NULL)', NULL),
    ('a', 'add_scheduled_job for B',
     format('SELECT app_jobs.add_scheduled_job(db_id := %L, identifier := %L, schedule_info := %L)',
        :b, 't_x', '{"rule": "* * * * *"}'),
     'permission denied for database_id 00000000-0000-0000-0000-00000000000b'),
    ('a', 'add_scheduled_job for no tenant',
     'SELECT app_jobs.add_scheduled_job(db_id := NULL, identifier := ''t_x'', schedule_info := ''{"rule": "* * * * *"}'')',
     NULL),
    ('a', 'add_scheduled_job for A with the key of B''s schedule (it would take it over)',
     'SELECT app_jobs.add_scheduled_job(identifier := ''t_x'', schedule_info := ''{"rule": "* * * * *"}'', job_key := ''b_sched_key'')',
     NULL),
    ('a', 'trigger: a row of B',
     format('INSERT INTO tenant_rows VALUES (2, %L)', :b), NULL),
    ('', 'add_job', 'SELECT app_jobs.add_job(identifier := ''t_x'')', NULL),
    ('', 'add_bundle', 'SELECT app_jobs.add_bundle(''tb'', ''[{"identifier": "t_x"}]'')', NULL),
    ('', 'add_scheduled_job',
     'SELECT app_jobs.add_scheduled_job(identifier := ''t_x'', schedule_info := ''{"rule": "* * * * *"}'')', NULL),
    ('', 'trigger row without a tenant',
     'INSERT INTO tenant_rows VALUES (3, NULL)', NULL);

SET LOCAL ROLE pgjobs_enqueue;
SET LOCAL jwt.claims.database_id = '00000000-0000-0000-0000-00000000000a';
SELECT throws_ok(r.call, 'PJ030', r.msg, format('enqueue with claim A: %s is refused (PJ030)', r.what))
FROM refusals AS r WHERE r.claim = 'a' ORDER BY r.n;
SET LOCAL jwt.claims.database_id = '';
SELECT throws_ok(r.call, 'PJ030', r.msg, format('enqueue without a claim: %s is refused (PJ030)', r.what))
FROM refusals AS r WHERE r.claim = '' ORDER BY r.n;
SET LOCAL jwt.claims.database_id = '00000000-0000-0000-0000-00000000000a';

-- cancel_job: another tenant's job (waiting or running) and a tenant-less one look missing;
-- the caller's own jobs are cancelled (so NULL above is not just a broken cancel_job).
SELECT is(app_jobs.cancel_job(:b1), NULL, 'enqueue with claim A: cancel_job of B''s waiting job is NULL (as if missing)');
SELECT is(app_jobs.cancel_job(:brun), NULL, 'enqueue with claim A: cancel_job of B''s running job is NULL');
SELECT is(app_jobs.cancel_job(:n1), NULL, 'enqueue with claim A: cancel_job of a job of no tenant is NULL');
SELECT is(app_jobs.cancel_job(:await), 'cancelled', 'enqueue with claim A: cancel_job of A''s waiting job cancels it');
SELECT is(app_jobs.cancel_job(:arun), 'cancelling', 'enqueue with claim A: cancel_job of A''s running job asks its worker');
SET LOCAL jwt.claims.database_id = '';
SELECT is(app_jobs.cancel_job(:b1), NULL, 'enqueue without a claim: cancel_job of B''s job is NULL');
RESET ROLE;
SELECT pg_temp.others() AS others_after \gset
SET LOCAL ROLE pgjobs_enqueue;

-- Positive controls: the same calls for the own tenant work.
SET LOCAL jwt.claims.database_id = '00000000-0000-0000-0000-00000000000a';
SELECT is(
    (SELECT database_id FROM app_jobs.add_job(db_id := :a, identifier := 't_x')), :a::uuid,
    'enqueue with claim A: add_job for A (explicit db_id) works'
);
SELECT is(
    (SELECT database_id FROM app_jobs.add_bundle('tb', '[{"identifier": "t_x"}]', db_id := :a)), :a::uuid,
    'enqueue with claim A: add_bundle for A works'
);
SELECT is(
    (SELECT database_id FROM app_jobs.add_scheduled_job(
        identifier := 't_x', schedule_info := '{"rule": "* * * * *"}', job_key := 'a_sched_key')),
    :a::uuid,
    'enqueue with claim A: add_scheduled_job for A works'
);
RESET ROLE;

SELECT is(
    :'others_after'::jsonb -> k, :'others_before'::jsonb -> k,
    format('after the refusals: %s of B (and of no tenant) are exactly as before', k)
)
FROM unnest(ARRAY['jobs', 'schedules', 'bundles']) AS k;
SELECT is(
    pg_temp.others() -> 'jobs', :'others_before'::jsonb -> 'jobs',
    'at the end: B''s jobs and the tenant-less job are still as they were'
);
SELECT is(
    (SELECT array_agg(job_id ORDER BY job_id) FROM app_jobs.job_history WHERE status = 'cancelled'),
    ARRAY[:await]::bigint[],
    'the only cancellation recorded is A''s own job'
);
SELECT is(
    (SELECT ROW(locked_by, cancel_requested_at IS NULL)::text FROM app_jobs.jobs WHERE id = :brun),
    ROW('w_t3', TRUE)::text,
    'B''s running job got no cancel request'
);

SELECT * FROM finish();
ROLLBACK;
