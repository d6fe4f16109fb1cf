-- Scheduled jobs: add_scheduled_job (defaults, named args, key upsert), run_scheduled_job (job fields and key, last_scheduled, ALREADY_SCHEDULED while its last job waits or runs within job_expiry), get_scheduled_job and release_scheduled_jobs.
BEGIN;
\ir setup.psql
SELECT plan(46);

-- 1. add_scheduled_job defaults.
SELECT set_config('jwt.claims.database_id', '00000000-0000-0000-0000-0000000000d1', true) AS _ \gset
SELECT id AS s1 FROM app_jobs.add_scheduled_job(
    identifier := 'tick', schedule_info := '{"rule": "*/5 * * * *"}'
) \gset
SELECT is(
    to_jsonb(s) ->> v.col, v.expected, format('default %s', v.col)
)
FROM app_jobs.scheduled_jobs AS s,
    (VALUES
        ('database_id', '00000000-0000-0000-0000-0000000000d1'),
        ('task_identifier', 'tick'),
        ('payload', '{}'),
        ('schedule_info', '{"rule": "*/5 * * * *"}'),
        ('queue_name', NULL),
        ('key', NULL),
        ('priority', '0'),
        ('max_attempts', '25'),
        ('locked_at', NULL),
        ('locked_by', NULL),
        ('last_scheduled', NULL),
        ('last_scheduled_id', NULL),
        ('created_at', to_jsonb(now()) #>> '{}'),
        ('updated_at', to_jsonb(now()) #>> '{}')
    ) AS v (col, expected)
WHERE s.id = :s1;

-- 2. Every argument, then a key upsert.
INSERT INTO app_jobs.scheduled_jobs (database_id, task_identifier, schedule_info, key, created_at)
VALUES ('00000000-0000-0000-0000-0000000000d2', 'old', '{}', 'nightly', '2001-01-01 00:00:00+00')
RETURNING id AS s2 \gset
SELECT count(*) AS sched_before FROM app_jobs.scheduled_jobs \gset
SELECT is(
    (app_jobs.add_scheduled_job(
        db_id := '00000000-0000-0000-0000-0000000000d2'::uuid,
        identifier := 'nightly_report',
        payload := '{"kind": "full"}'::json,
        schedule_info := '{"hour": [2], "minute": [0]}'::json,
        job_key := 'nightly',
        queue_name := 'reports',
        max_attempts := 3,
        priority := -1
    )).id,
    :s2::bigint,
    'add_scheduled_job with an existing key returns the same schedule'
);
SELECT is(
    (SELECT count(*) FROM app_jobs.scheduled_jobs), :sched_before::bigint, 'no schedule was added'
);
SELECT is(
    (SELECT ROW(database_id, task_identifier, payload::text, schedule_info::text, key, queue_name,
                max_attempts, priority, created_at, updated_at)::text
     FROM app_jobs.scheduled_jobs WHERE id = :s2),
    ROW('00000000-0000-0000-0000-0000000000d2'::uuid, 'nightly_report', '{"kind": "full"}',
        '{"hour": [2], "minute": [0]}', 'nightly', 'reports', 3, -1,
        '2001-01-01 00:00:00+00'::timestamptz, now())::text,
    'upsert replaced every field, kept created_at, touched updated_at'
);
SELECT is(
    (SELECT ROW(payload::text, max_attempts, priority)::text
     FROM app_jobs.add_scheduled_job(identifier := 'n', schedule_info := '{}', payload := NULL,
                                     max_attempts := NULL, priority := NULL)),
    ROW('{}', 25, 0)::text,
    'NULL payload/max_attempts/priority take the defaults'
);

-- 3. run_scheduled_job enqueues a job from the schedule.
SELECT to_jsonb(r) AS ran FROM app_jobs.run_scheduled_job(scheduled_job_id := :s2) AS r \gset
SELECT is(
    (SELECT to_jsonb(j) FROM app_jobs.jobs AS j WHERE j.id = (:'ran'::jsonb ->> 'id')::bigint),
    :'ran'::jsonb,
    'run_scheduled_job returns the job it added'
);
SELECT is(
    (SELECT ROW(database_id, task_identifier, payload::text, queue_name, max_attempts, priority,
                run_at, attempts, key)::text
     FROM app_jobs.jobs WHERE id = (:'ran'::jsonb ->> 'id')::bigint),
    ROW('00000000-0000-0000-0000-0000000000d2'::uuid, 'nightly_report', '{"kind": "full"}',
        'reports', 3, -1, now(), 0, 'nightly')::text,
    'the job copies database_id, task, payload, queue, max_attempts, priority and the '
    || 'schedule''s key; runs now'
);
SELECT is(
    (SELECT ROW(last_scheduled, last_scheduled_id)::text FROM app_jobs.scheduled_jobs WHERE id = :s2),
    ROW(now(), (:'ran'::jsonb ->> 'id')::bigint)::text,
    'the schedule records when and which job it last spawned'
);
SELECT is(
    (SELECT job_count FROM app_jobs.job_queues WHERE queue_name = 'reports'), 1,
    'the job counts in its queue'
);
-- Running it again is refused while the job it added waits, and while that job runs
-- within job_expiry (as the original: ALREADY_SCHEDULED).
SELECT throws_ok(
    format('SELECT app_jobs.run_scheduled_job(%s)', :s2), 'PJ041', 'ALREADY_SCHEDULED',
    'running it again while its job waits: PJ041 ALREADY_SCHEDULED'
);
SELECT is(
    (app_jobs.get_job('w', ARRAY['nightly_report'])).id,
    (:'ran'::jsonb ->> 'id')::bigint,
    'the spawned job is claimable like any other'
);
SELECT throws_ok(
    format('SELECT app_jobs.run_scheduled_job(%s)', :s2), 'PJ041', 'ALREADY_SCHEDULED',
    'while it runs (locked within the default job_expiry of 1 hour): refused'
);
SELECT throws_ok(
    format('SELECT app_jobs.run_scheduled_job(%s, %L)', :s2, '0 seconds'), 'PJ040', NULL,
    'job_expiry must be positive (PJ040)'
);
SELECT is(
    (SELECT count(*)::int FROM app_jobs.jobs WHERE task_identifier = 'nightly_report'), 1,
    'the refusals added nothing'
);
UPDATE app_jobs.jobs SET locked_at = now() - interval '2 minutes'
WHERE id = (:'ran'::jsonb ->> 'id')::bigint;
SELECT isnt(
    (app_jobs.run_scheduled_job(:s2, job_expiry := '1 minute')).id,
    (:'ran'::jsonb ->> 'id')::bigint,
    'locked for longer than job_expiry: another job is added'
);
SELECT is(
    (SELECT array_agg(ROW(key, locked_by)::text ORDER BY id) FROM app_jobs.jobs
     WHERE task_identifier = 'nightly_report'),
    ARRAY[ROW(NULL::text, 'w')::text, ROW('nightly', NULL::text)::text],
    'the new job takes the key; the running one keeps running without it'
);
SELECT is(
    (SELECT last_scheduled_id FROM app_jobs.scheduled_jobs WHERE id = :s2),
    (SELECT max(id) FROM app_jobs.jobs WHERE task_identifier = 'nightly_report'),
    'last_scheduled_id follows the newest job'
);
SELECT count(*) AS _ FROM app_jobs.permanently_fail_jobs(ARRAY(
    SELECT max(id) FROM app_jobs.jobs WHERE task_identifier = 'nightly_report'
)) \gset
SELECT lives_ok(
    format('SELECT app_jobs.run_scheduled_job(%s)', :s2),
    'a job that failed for good does not hold the schedule back'
);
SELECT is(
    (SELECT count(*)::int FROM app_jobs.jobs WHERE task_identifier = 'nightly_report'), 2,
    'the failed job was replaced by the new one (same key): still two jobs'
);
SELECT set_config('jwt.claims.database_id', '', true) AS _ \gset
SELECT is(
    (app_jobs.run_scheduled_job(:s1)).database_id,
    '00000000-0000-0000-0000-0000000000d1'::uuid,
    'the job takes the schedule''s database_id, not the current setting'
);

-- 4. get_scheduled_job / release_scheduled_jobs.
DELETE FROM app_jobs.scheduled_jobs;
INSERT INTO app_jobs.scheduled_jobs (task_identifier, schedule_info, priority)
VALUES ('sa', '{}', 5), ('sb', '{}', 0), ('sc', '{}', 0), ('sd', '{}', -1);
SELECT is(
    (app_jobs.get_scheduled_job(v.w, v.filter)).task_identifier, v.expected,
    format('get_scheduled_job(%s, %s) takes %s', v.w, coalesce(v.filter::text, 'NULL'),
        coalesce(v.expected, 'nothing'))
)
FROM (VALUES
    (1, 'w1', NULL::text[], 'sd'),
    (2, 'w1', NULL, 'sb'),
    (3, 'w2', ARRAY['sa'], 'sa'),
    (4, 'w2', ARRAY['zz'], NULL),
    (5, 'w2', NULL, 'sc'),
    (6, 'w3', NULL, NULL)
) AS v (n, w, filter, expected)
ORDER BY v.n;
SELECT set_eq(
    'SELECT task_identifier, locked_by, locked_at FROM app_jobs.scheduled_jobs',
    $$VALUES ('sd', 'w1', now()), ('sb', 'w1', now()), ('sa', 'w2', now()), ('sc', 'w2', now())$$,
    'each schedule is locked by the worker that took it'
);
SELECT lives_ok(
    $$SELECT app_jobs.release_scheduled_jobs('w2', ARRAY(SELECT id FROM app_jobs.scheduled_jobs WHERE task_identifier = 'sa'))$$,
    'release one schedule by id'
);
SELECT set_eq(
    'SELECT task_identifier FROM app_jobs.scheduled_jobs WHERE locked_by IS NULL',
    ARRAY['sa'],
    'only that one is free'
);
SELECT lives_ok($$SELECT app_jobs.release_scheduled_jobs(worker_id := 'w1')$$, 'release all of w1');
SELECT set_eq(
    'SELECT task_identifier FROM app_jobs.scheduled_jobs WHERE locked_by IS NULL',
    ARRAY['sa', 'sb', 'sd'],
    'w1''s schedules are free, w2 keeps sc'
);
SELECT lives_ok(
    $$SELECT app_jobs.release_scheduled_jobs('w1', ARRAY(SELECT id FROM app_jobs.scheduled_jobs WHERE task_identifier = 'sc'))$$,
    'w1 cannot release w2''s schedule'
);
SELECT is(
    (SELECT locked_by FROM app_jobs.scheduled_jobs WHERE task_identifier = 'sc'), 'w2', 'sc is still w2''s'
);

SELECT * FROM finish();
ROLLBACK;
