-- Bad input: every rejected call raises its own SQLSTATE (PJ001..PJ009) and leaves jobs, job_queues, scheduled_jobs and their sequences exactly as they were.
BEGIN;
\ir setup.psql
SELECT plan(141);

-- Fixture: a waiting keyed job in a queue, a running job, a job with an expired lock, a schedule.
SELECT id AS waiting FROM app_jobs.add_job(identifier := 'waiting', job_key := 'k_existing', queue_name := 'q1') \gset
SELECT id AS running FROM app_jobs.add_job(identifier := 'running', queue_name := 'q2') \gset
SELECT id AS expired FROM app_jobs.add_job(identifier := 'expired') \gset
SELECT app_jobs.get_job('w1', ARRAY['running']) IS NULL AS _ \gset
SELECT app_jobs.get_job('w_dead', ARRAY['expired']) IS NULL AS _ \gset
UPDATE app_jobs.jobs SET locked_at = now() - interval '5 hours' WHERE id = :expired;
SELECT id AS sched FROM app_jobs.add_scheduled_job(
    identifier := 'sched', schedule_info := '{"rule": "* * * * *"}', job_key := 's_existing'
) \gset
CREATE TEMP TABLE user_rows (id integer);
CREATE TRIGGER no_task AFTER INSERT ON user_rows
FOR EACH ROW EXECUTE FUNCTION app_jobs.tg_add_job_with_row_id();

CREATE FUNCTION pg_temp.state() RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_build_object(
        'jobs', (SELECT jsonb_agg(to_jsonb(j) ORDER BY j.id) FROM app_jobs.jobs AS j),
        'job_queues', (SELECT jsonb_agg(to_jsonb(q) ORDER BY q.queue_name) FROM app_jobs.job_queues AS q),
        'scheduled_jobs', (SELECT jsonb_agg(to_jsonb(s) ORDER BY s.id) FROM app_jobs.scheduled_jobs AS s),
        -- Sequences are not rolled back with a failed statement: an unchanged
        -- sequence shows the call was rejected before it tried to insert.
        'jobs_seq', (SELECT ARRAY[last_value::text, is_called::text] FROM app_jobs.jobs_id_seq),
        'scheduled_jobs_seq', (SELECT ARRAY[last_value::text, is_called::text] FROM app_jobs.scheduled_jobs_id_seq),
        'user_rows', (SELECT count(*) FROM user_rows)
    );
$$;
SELECT pg_temp.state() AS before \gset

CREATE TEMP TABLE cases (n serial, sqlstate text, call text);
INSERT INTO cases (sqlstate, call) VALUES
    -- PJ001: task identifier NULL, empty or 127+ characters.
    ('PJ001', 'SELECT app_jobs.add_job()'),
    ('PJ001', 'SELECT app_jobs.add_job(identifier := NULL)'),
    ('PJ001', 'SELECT app_jobs.add_job(identifier := '''')'),
    ('PJ001', format('SELECT app_jobs.add_job(identifier := %L)', repeat('x', 127))),
    ('PJ001', format('SELECT app_jobs.add_job(identifier := %L)', repeat('x', 1000))),
    ('PJ001', 'SELECT app_jobs.add_job(NULL::uuid, NULL::text, ''{}''::json)'),
    ('PJ001', 'SELECT app_jobs.add_job(identifier := NULL, job_key := ''k_existing'')'),
    ('PJ001', 'SELECT app_jobs.add_job(identifier := '''', queue_name := '''', job_key := '''', max_attempts := 0)'),
    ('PJ001', 'SELECT app_jobs.add_scheduled_job(identifier := NULL, schedule_info := ''{}'')'),
    ('PJ001', format('SELECT app_jobs.add_scheduled_job(identifier := %L, schedule_info := ''{}'')', repeat('x', 127))),
    ('PJ001', 'SELECT app_jobs.add_scheduled_job(identifier := NULL, schedule_info := ''{}'', job_key := ''s_existing'')'),
    -- PJ002: queue name empty or 127+ characters.
    ('PJ002', 'SELECT app_jobs.add_job(identifier := ''t'', queue_name := '''')'),
    ('PJ002', format('SELECT app_jobs.add_job(identifier := ''t'', queue_name := %L)', repeat('q', 127))),
    ('PJ002', format('SELECT app_jobs.add_job(identifier := ''t'', queue_name := %L)', repeat('q', 1000))),
    ('PJ002', 'SELECT app_jobs.add_job(identifier := ''t'', queue_name := '''', job_key := ''k_existing'')'),
    ('PJ002', 'SELECT app_jobs.add_job(identifier := ''t'', queue_name := '''', job_key := '''', max_attempts := 0)'),
    ('PJ002', 'SELECT app_jobs.add_scheduled_job(identifier := ''t'', schedule_info := ''{}'', queue_name := '''')'),
    ('PJ002', format('SELECT app_jobs.add_scheduled_job(identifier := ''t'', schedule_info := ''{}'', queue_name := %L)', repeat('q', 127))),
    -- PJ003: key empty or 513+ characters.
    ('PJ003', 'SELECT app_jobs.add_job(identifier := ''t'', job_key := '''')'),
    ('PJ003', format('SELECT app_jobs.add_job(identifier := ''t'', job_key := %L)', repeat('k', 513))),
    ('PJ003', format('SELECT app_jobs.add_job(identifier := ''t'', job_key := %L)', repeat('k', 5000))),
    ('PJ003', 'SELECT app_jobs.add_job(identifier := ''t'', job_key := '''', max_attempts := 0)'),
    ('PJ003', 'SELECT app_jobs.add_scheduled_job(identifier := ''t'', schedule_info := ''{}'', job_key := '''')'),
    ('PJ003', format('SELECT app_jobs.add_scheduled_job(identifier := ''t'', schedule_info := ''{}'', job_key := %L)', repeat('k', 513))),
    -- PJ004: max_attempts below 1.
    ('PJ004', 'SELECT app_jobs.add_job(identifier := ''t'', max_attempts := 0)'),
    ('PJ004', 'SELECT app_jobs.add_job(identifier := ''t'', max_attempts := -1)'),
    ('PJ004', 'SELECT app_jobs.add_job(identifier := ''t'', max_attempts := -2147483648)'),
    ('PJ004', 'SELECT app_jobs.add_job(identifier := ''waiting'', job_key := ''k_existing'', max_attempts := 0)'),
    ('PJ004', 'SELECT app_jobs.add_scheduled_job(identifier := ''t'', schedule_info := ''{}'', max_attempts := 0)'),
    ('PJ004', format('SELECT * FROM app_jobs.reschedule_jobs(ARRAY[%s], max_attempts := 0)', :waiting)),
    ('PJ004', format('SELECT * FROM app_jobs.reschedule_jobs(ARRAY[%s], run_at := now(), max_attempts := -5)', :waiting)),
    -- PJ005: NULL or empty worker_id.
    ('PJ005', 'SELECT app_jobs.get_job(NULL)'),
    ('PJ005', 'SELECT app_jobs.get_job('''')'),
    ('PJ005', 'SELECT app_jobs.get_job(worker_id := NULL, task_identifiers := ARRAY[''expired''], job_expiry := ''1 hour'')'),
    ('PJ005', 'SELECT * FROM app_jobs.get_jobs(NULL)'),
    ('PJ005', 'SELECT * FROM app_jobs.get_jobs('''', NULL, ''4 hours'', 10)'),
    ('PJ005', 'SELECT * FROM app_jobs.get_jobs(NULL, NULL, ''4 hours'', 0)'),
    ('PJ005', format('SELECT app_jobs.complete_job(NULL, %s)', :running)),
    ('PJ005', format('SELECT app_jobs.complete_job('''', %s)', :running)),
    ('PJ005', format('SELECT app_jobs.fail_job(NULL, %s, ''e'')', :running)),
    ('PJ005', format('SELECT app_jobs.fail_job(worker_id := '''', job_id := %s)', :running)),
    ('PJ005', 'SELECT app_jobs.release_jobs(NULL)'),
    ('PJ005', 'SELECT app_jobs.release_jobs('''')'),
    ('PJ005', format('SELECT app_jobs.release_jobs(NULL, ARRAY[%s]::bigint[])', :running)),
    ('PJ005', 'SELECT app_jobs.get_scheduled_job(NULL)'),
    ('PJ005', 'SELECT app_jobs.get_scheduled_job('''')'),
    ('PJ005', 'SELECT app_jobs.release_scheduled_jobs(NULL)'),
    ('PJ005', 'SELECT app_jobs.release_scheduled_jobs('''')'),
    -- PJ006: batch size outside 1..10000.
    ('PJ006', 'SELECT * FROM app_jobs.get_jobs(''w'', NULL, ''4 hours'', 0)'),
    ('PJ006', 'SELECT * FROM app_jobs.get_jobs(''w'', NULL, ''4 hours'', -1)'),
    ('PJ006', 'SELECT * FROM app_jobs.get_jobs(''w'', NULL, ''4 hours'', NULL)'),
    ('PJ006', 'SELECT * FROM app_jobs.get_jobs(''w'', NULL, ''4 hours'', 10001)'),
    ('PJ006', 'SELECT * FROM app_jobs.get_jobs(worker_id := ''w'', batch_size := 2147483647)'),
    -- PJ007: trigger helper without its task argument.
    ('PJ007', 'INSERT INTO user_rows VALUES (1)'),
    -- PJ008: schedule_info NULL or not a JSON object.
    ('PJ008', 'SELECT app_jobs.add_scheduled_job(identifier := ''t'')'),
    ('PJ008', 'SELECT app_jobs.add_scheduled_job(identifier := ''t'', schedule_info := NULL)'),
    ('PJ008', 'SELECT app_jobs.add_scheduled_job(identifier := ''t'', schedule_info := ''null'')'),
    ('PJ008', 'SELECT app_jobs.add_scheduled_job(identifier := ''t'', schedule_info := ''[]'')'),
    ('PJ008', 'SELECT app_jobs.add_scheduled_job(identifier := ''t'', schedule_info := ''"* * * * *"'')'),
    ('PJ008', 'SELECT app_jobs.add_scheduled_job(identifier := ''t'', schedule_info := ''1'')'),
    ('PJ008', 'SELECT app_jobs.add_scheduled_job(identifier := ''sched'', schedule_info := ''[]'', job_key := ''s_existing'')'),
    -- PJ009: run_scheduled_job of a missing id.
    ('PJ009', 'SELECT app_jobs.run_scheduled_job(-1)'),
    ('PJ009', 'SELECT app_jobs.run_scheduled_job(NULL)'),
    ('PJ009', format('SELECT * FROM app_jobs.run_scheduled_job(scheduled_job_id := %s)', :sched + 1000));

-- Each case: the right SQLSTATE, and nothing changed.
SELECT throws_ok(c.call, c.sqlstate, NULL, format('%s: %s', c.sqlstate, left(c.call, 110)))
    || E'\n'
    || is(pg_temp.state(), :'before'::jsonb, format('  ... and case %s changed nothing', c.n))
FROM cases AS c
ORDER BY c.n;

SELECT is((SELECT count(*)::int FROM cases), 64, 'all 64 cases ran');

-- Every code is covered.
SELECT set_eq(
    'SELECT DISTINCT sqlstate FROM cases',
    ARRAY['PJ001', 'PJ002', 'PJ003', 'PJ004', 'PJ005', 'PJ006', 'PJ007', 'PJ008', 'PJ009'],
    'every SQLSTATE PJ001..PJ009 is exercised'
);

-- The messages say what is wrong.
SELECT throws_ok(c.call, c.sqlstate, c.msg, format('%s message: %s', c.sqlstate, c.msg))
FROM (VALUES
    (1, 'SELECT app_jobs.add_job(identifier := NULL)', 'PJ001',
     'task identifier must be 1 to 126 characters, got NULL'),
    (2, format('SELECT app_jobs.add_job(identifier := %L)', repeat('x', 127)), 'PJ001',
     'task identifier must be 1 to 126 characters, got 127 characters'),
    (3, 'SELECT app_jobs.add_job(identifier := ''t'', queue_name := '''')', 'PJ002',
     'queue name must be 1 to 126 characters, got 0'),
    (4, format('SELECT app_jobs.add_job(identifier := ''t'', job_key := %L)', repeat('k', 513)), 'PJ003',
     'job key must be 1 to 512 characters, got 513'),
    (5, 'SELECT app_jobs.add_job(identifier := ''t'', max_attempts := 0)', 'PJ004',
     'max_attempts must be at least 1, got 0'),
    (6, 'SELECT app_jobs.get_job(NULL)', 'PJ005', 'worker_id is required'),
    (7, 'SELECT * FROM app_jobs.get_jobs(''w'', NULL, NULL, NULL)', 'PJ006',
     'batch_size must be 1 to 10000, got NULL'),
    (8, 'SELECT app_jobs.add_scheduled_job(identifier := ''t'')', 'PJ008',
     'schedule_info must be a JSON object'),
    (9, 'SELECT app_jobs.run_scheduled_job(-1)', 'PJ009', 'scheduled job -1 does not exist')
) AS c (n, call, sqlstate, msg)
ORDER BY c.n;

SELECT is(pg_temp.state(), :'before'::jsonb, 'at the end, everything is as it was');
SELECT is(
    (SELECT ROW(locked_by, attempts)::text FROM app_jobs.jobs WHERE id = :expired),
    ROW('w_dead', 1)::text,
    'the expired lock was not reclaimed by a rejected get_job/get_jobs'
);

SELECT * FROM finish();
ROLLBACK;
