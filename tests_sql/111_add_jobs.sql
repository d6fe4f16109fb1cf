-- add_jobs: N jobs in one call, one row per job in the callers' order; NULL arrays give add_job's defaults (and the task's); the same refusals as add_job with the same SQLSTATEs, and nothing inserted; PJ043 for arrays of another length; keyed jobs with add_job's key semantics (in order, duplicates in one call too); tenancy (claim by default, PJ030 for another tenant); a task whose enqueues are ignored gives a row of NULLs; queue counts.
BEGIN;
\ir setup.psql
SELECT plan(36);

SET LOCAL jwt.claims.database_id = '';
\set a '''00000000-0000-0000-0000-00000000000a'''
\set b '''00000000-0000-0000-0000-00000000000b'''

-- 1. Defaults and order.
CREATE TEMP TABLE got AS
SELECT row_number() OVER () AS n, j.*
FROM app_jobs.add_jobs(ARRAY['t1', 't2', 't3']) AS j;
SELECT is(
    (SELECT array_agg(task_identifier ORDER BY n) FROM got), ARRAY['t1', 't2', 't3'],
    'one row per job, in the callers'' order'
);
SELECT is(
    (SELECT array_agg(id ORDER BY n) FROM got),
    (SELECT array_agg(id ORDER BY id) FROM app_jobs.jobs),
    'ids follow that order'
);
SELECT is(
    (SELECT array_agg(DISTINCT ROW(payload::text, max_attempts, priority, run_at, queue_name,
        database_id, key, timeout, origin, attempts)::text) FROM got),
    ARRAY[ROW('{}', 25, 0, now(), NULL::text, NULL::uuid, NULL::text, NULL::interval,
        NULL::text, 0)::text],
    'NULL arrays: add_job''s defaults for every job'
);
SELECT app_jobs.set_task_settings('slow', max_attempts := 3, timeout := '5 minutes') AS _ \gset
SELECT is(
    (SELECT array_agg(ROW(task_identifier, payload::text, queue_name, priority, max_attempts,
        timeout, origin, run_at, database_id)::text ORDER BY ord)
     FROM app_jobs.add_jobs(
        ARRAY['slow', 'slow', 'fast'],
        payloads := ARRAY['{"n": 1}', NULL, '{"n": 3}']::json[],
        db_ids := ARRAY[:a, NULL, :b]::uuid[],
        queue_names := ARRAY['q1', NULL, 'q1'],
        run_ats := ARRAY['2030-01-01 00:00+00', NULL, NULL]::timestamptz[],
        max_attempts := ARRAY[NULL, 7, NULL]::integer[],
        priorities := ARRAY[-1, NULL, 5],
        timeouts := ARRAY[NULL, '1 minute', NULL]::interval[],
        origins := ARRAY['o1', NULL, NULL]
     ) WITH ORDINALITY AS x (id, database_id, queue_name, task_identifier, payload, priority,
        run_at, attempts, max_attempts, key, last_error, locked_at, locked_by, created_at,
        updated_at, progress, stage, cancel_requested_at, timeout, origin, bundle_id,
        blocked_by, is_available, ord)),
    ARRAY[
        ROW('slow', '{"n": 1}', 'q1', -1, 3, interval '5 minutes', 'o1',
            '2030-01-01 00:00+00'::timestamptz, :a::uuid)::text,
        ROW('slow', '{}', NULL::text, 0, 7, interval '1 minute', NULL::text, now(),
            NULL::uuid)::text,
        ROW('fast', '{"n": 3}', 'q1', 5, 25, NULL::interval, NULL::text, now(),
            :b::uuid)::text
    ],
    'every field per job; the task''s defaults where the job says nothing; stored as given'
);
SELECT is(
    (SELECT job_count FROM app_jobs.job_queues WHERE queue_name = 'q1'), 2,
    'queue counts follow'
);
SELECT is(
    (SELECT count(*)::integer FROM app_jobs.add_jobs(ARRAY[]::text[])), 0,
    'an empty call adds nothing'
);

-- 2. Refusals: add_job's SQLSTATE for a bad job anywhere in the call, nothing inserted
-- (task defaults written past set_task_settings' bounds too).
SELECT count(*) AS before FROM app_jobs.jobs \gset
INSERT INTO app_jobs.task_settings (task_identifier, max_attempts) VALUES ('huge', 20000);
INSERT INTO app_jobs.task_settings (task_identifier, timeout) VALUES ('eternal', '101 years');
SELECT throws_ok(
    format('SELECT * FROM app_jobs.add_jobs(%s)', v.args), v.code, NULL,
    format('%s: %s', v.what, v.code)
)
FROM (VALUES
    ('identifier NULL', $$ARRAY['ok', NULL]$$, 'PJ001'),
    ('identifier of 127 characters', format('ARRAY[%L, %L]', 'ok', repeat('x', 127)), 'PJ001'),
    ('identifier with a control character', $$ARRAY['ok', E'a\x01b']$$, 'PJ031'),
    ('queue name empty', $$ARRAY['ok', 'ok'], queue_names := ARRAY['q', '']$$, 'PJ002'),
    ('queue name with a zero-width space', $$ARRAY['ok'], queue_names := ARRAY[E'q\u200b']$$, 'PJ032'),
    ('max_attempts 0', $$ARRAY['ok', 'ok'], max_attempts := ARRAY[1, 0]$$, 'PJ004'),
    ('max_attempts 10001', $$ARRAY['ok'], max_attempts := ARRAY[10001]$$, 'PJ035'),
    ('payload over max_payload_bytes', format('ARRAY[%L], payloads := ARRAY[%L]::json[]', 'ok',
        json_build_object('x', repeat('x', 300000))), 'PJ033'),
    ('payload nested 300 deep', format('ARRAY[%L], payloads := ARRAY[%L]::json[]', 'ok',
        repeat('[', 300) || repeat(']', 300)), 'PJ037'),
    ('run_at before 1970', $$ARRAY['ok'], run_ats := ARRAY['1969-12-31 00:00+00']::timestamptz[]$$, 'PJ034'),
    ('run_at infinity', $$ARRAY['ok'], run_ats := ARRAY['infinity']::timestamptz[]$$, 'PJ034'),
    ('timeout 0', $$ARRAY['ok'], timeouts := ARRAY['0 s']::interval[]$$, 'PJ017'),
    ('timeout 101 years', $$ARRAY['ok'], timeouts := ARRAY['101 years']::interval[]$$, 'PJ038'),
    ('origin empty', $$ARRAY['ok'], origins := ARRAY['']$$, 'PJ022'),
    ('job key of 513 characters', format('ARRAY[%L], job_keys := ARRAY[%L]', 'ok', repeat('k', 513)), 'PJ003'),
    ('unknown job_key_mode', $$ARRAY['ok'], job_key_mode := 'merge'$$, 'PJ021'),
    ('payloads array too short', $$ARRAY['ok', 'ok'], payloads := ARRAY['{}']::json[]$$, 'PJ043'),
    ('priorities array too long', $$ARRAY['ok'], priorities := ARRAY[1, 2]$$, 'PJ043'),
    ('task default max_attempts 20000', $$ARRAY['ok', 'huge']$$, 'PJ035'),
    ('task default timeout 101 years', $$ARRAY['eternal']$$, 'PJ038')
) AS v (what, args, code);
DELETE FROM app_jobs.task_settings WHERE task_identifier IN ('huge', 'eternal');
SELECT is((SELECT count(*) FROM app_jobs.jobs), :before::bigint, 'no refused call inserted anything');

-- 3. Keys: add_job's semantics, in order, duplicates in one call included.
SELECT is(
    (SELECT array_agg(ROW(key, payload::text)::text ORDER BY ord)
     FROM app_jobs.add_jobs(
        ARRAY['k', 'k', 'k'], ARRAY['{"v": 1}', '{"v": 2}', '{"v": 3}']::json[],
        job_keys := ARRAY['key1', NULL, 'key1']
     ) WITH ORDINALITY AS x (id, d, q, t, payload, p, r, a, m, key, e, la, lb, c, u, pr, s,
        cr, ti, o, b, bb, ia, ord)),
    ARRAY[ROW('key1', '{"v": 3}')::text, ROW(NULL::text, '{"v": 2}')::text,
        ROW('key1', '{"v": 3}')::text],
    'replace: the later job of a key replaces the earlier; both positions show the job as it ends'
);
SELECT is(
    (SELECT count(*)::integer FROM app_jobs.jobs WHERE key = 'key1'), 1, 'one job holds the key'
);
SELECT is(
    (SELECT array_agg(payload::text ORDER BY ord)
     FROM app_jobs.add_jobs(
        ARRAY['k', 'k'], ARRAY['{"v": 9}', '{"v": 8}']::json[],
        job_keys := ARRAY['key1', 'key2'], job_key_mode := 'unsafe_dedupe'
     ) WITH ORDINALITY AS x (id, d, q, t, payload, p, r, a, m, key, e, la, lb, c, u, pr, s,
        cr, ti, o, b, bb, ia, ord)),
    ARRAY['{"v": 3}', '{"v": 8}'],
    'unsafe_dedupe: the job holding a key is returned untouched, a new key is inserted'
);
SELECT throws_ok(
    format(
        'SELECT * FROM app_jobs.add_jobs(ARRAY[%L], db_ids := ARRAY[%L]::uuid[], job_keys := ARRAY[%L])',
        'k', :b, 'key1'
    ),
    'PJ030', NULL, 'a key held by another tenant''s job: PJ030, as add_job'
);

-- 4. Tenancy: the claim by default; another tenant refused.
CREATE ROLE pgjobs_t_batch NOLOGIN IN ROLE pgjobs_enqueue;
SET LOCAL ROLE pgjobs_t_batch;
SET LOCAL jwt.claims.database_id = '00000000-0000-0000-0000-00000000000a';
SELECT is(
    (SELECT array_agg(DISTINCT database_id) FROM app_jobs.add_jobs(ARRAY['mine', 'mine'])),
    ARRAY[:a::uuid], 'an enqueue role''s jobs take its claim'
);
SELECT throws_ok(
    format('SELECT * FROM app_jobs.add_jobs(ARRAY[%L, %L], db_ids := ARRAY[%L, %L]::uuid[])',
        'x', 'x', :a, :b),
    'PJ030', NULL, 'one job for another tenant: PJ030 for the whole call'
);
SELECT throws_ok(
    format('SELECT * FROM app_jobs.add_jobs(ARRAY[%L], db_ids := ARRAY[NULL]::uuid[])', 'x'),
    'PJ030', NULL, 'a job of no tenant: PJ030'
);
RESET ROLE;
SET LOCAL jwt.claims.database_id = '';

-- 5. Ignored enqueues (test helpers): a row of NULLs at that place.
SELECT set_config('pgjobs.ignore_enqueues', 'skipme', TRUE) AS _ \gset
SELECT is(
    (SELECT array_agg(coalesce(task_identifier, '-') ORDER BY ord)
     FROM app_jobs.add_jobs(ARRAY['keep', 'skipme', 'keep2']) WITH ORDINALITY AS x (id, d, q,
        task_identifier, p, pr, r, a, m, k, e, la, lb, c, u, pg, s, cr, ti, o, b, bb, ia, ord)),
    ARRAY['keep', '-', 'keep2'], 'the ignored job gives a row of NULLs, the others are added'
);
SELECT is(
    (SELECT count(*)::integer FROM app_jobs.jobs WHERE task_identifier = 'skipme'), 0,
    'and nothing of it is stored'
);
SELECT set_config('pgjobs.ignore_enqueues', '', TRUE) AS _ \gset

SELECT * FROM finish();
ROLLBACK;
