-- add_job job_key_mode (replace, preserve_run_at, unsafe_dedupe on waiting, retrying, failed and running jobs; PJ021), origin (stored in jobs, job_history and job_status; PJ022 and the CHECK), and the pgjobs.ignore_enqueues switch ('all' and a task list).
BEGIN;
\ir setup.psql
SELECT plan(64);

-- A job's row by key, without the columns every write touches.
CREATE FUNCTION pg_temp.keyed(p_key text) RETURNS jsonb LANGUAGE sql AS $$
    SELECT to_jsonb(j) - 'updated_at' FROM app_jobs.jobs AS j WHERE j.key = p_key;
$$;

-- 1. PJ021: job_key_mode outside replace / preserve_run_at / unsafe_dedupe.
SELECT throws_ok(
    format('SELECT app_jobs.add_job(identifier := %L, job_key := %L, job_key_mode := %L)', 'km', v.k, v.m),
    'PJ021', NULL, format('PJ021: job_key_mode %s', v.what)
)
FROM (VALUES
    ('REPLACE (case matters)', 'REPLACE', 'k'),
    ('empty', '', 'k'),
    ('dedupe', 'dedupe', 'k'),
    ('preserve', 'preserve', 'k'),
    ('with a trailing space', 'replace ', 'k'),
    ('bogus without a job_key', 'bogus', NULL)
) AS v (what, m, k);
SELECT is_empty($$SELECT * FROM app_jobs.jobs$$, 'refused modes enqueue nothing');
SELECT is(
    (app_jobs.add_job(identifier := 'km', job_key := 'k0', job_key_mode := NULL)).key, 'k0',
    'job_key_mode NULL is the default (replace)'
);
SELECT is(
    (app_jobs.add_job(identifier := 'km', job_key_mode := 'unsafe_dedupe')).key, NULL,
    'a mode without a job_key is accepted and means nothing'
);
DELETE FROM app_jobs.jobs;

-- 2. replace on a waiting job: updated in place, run_at included.
SELECT id AS r1 FROM app_jobs.add_job(
    identifier := 'km', job_key := 'kr', payload := '{"v": 1}', run_at := '2030-01-01 00:00+00',
    origin := 'first'
) \gset
SELECT is(
    (SELECT ROW(id, payload::text, run_at, origin)::text
     FROM app_jobs.add_job(identifier := 'km', job_key := 'kr', payload := '{"v": 2}',
                           run_at := '2031-01-01 00:00+00', job_key_mode := 'replace',
                           origin := 'second')),
    ROW(:r1::bigint, '{"v": 2}', '2031-01-01 00:00+00'::timestamptz, 'second')::text,
    'replace: same job, new payload, run_at and origin'
);
SELECT is(
    (SELECT origin FROM app_jobs.add_job(identifier := 'km', job_key := 'kr')), NULL,
    'replace without an origin clears it'
);

-- 3. preserve_run_at: like replace, but a waiting job keeps its run_at.
SELECT id AS p1 FROM app_jobs.add_job(
    identifier := 'km', job_key := 'kp', payload := '{"v": 1}', run_at := '2030-01-01 00:00+00',
    priority := 1, max_attempts := 4
) \gset
SELECT is(
    (SELECT ROW(id, payload::text, run_at, priority, max_attempts, origin)::text
     FROM app_jobs.add_job(identifier := 'km2', job_key := 'kp', payload := '{"v": 2}',
                           run_at := '2035-01-01 00:00+00', priority := 2, max_attempts := 6,
                           job_key_mode := 'preserve_run_at', origin := 'again')),
    ROW(:p1::bigint, '{"v": 2}', '2030-01-01 00:00+00'::timestamptz, 2, 6, 'again')::text,
    'preserve_run_at: same job, new payload, priority, max_attempts, origin, but the old run_at'
);
SELECT is(
    (SELECT ROW(task_identifier, run_at)::text FROM app_jobs.jobs WHERE id = :p1),
    ROW('km2', '2030-01-01 00:00+00'::timestamptz)::text,
    'the stored row agrees'
);
-- A retrying job keeps its backoff.
UPDATE app_jobs.jobs SET attempts = 2, last_error = 'boom', run_at = now() + interval '9 minutes'
WHERE id = :p1;
SELECT is(
    (SELECT ROW(id, attempts, last_error, run_at)::text
     FROM app_jobs.add_job(identifier := 'km2', job_key := 'kp', job_key_mode := 'preserve_run_at',
                           run_at := now())),
    ROW(:p1::bigint, 0, NULL::text, now() + interval '9 minutes')::text,
    'preserve_run_at on a retrying job: attempts and last_error reset, its run_at kept'
);
SELECT is(
    (SELECT run_at FROM app_jobs.add_job(identifier := 'km', job_key := 'kp_new',
        job_key_mode := 'preserve_run_at', run_at := '2032-02-02 00:00+00')),
    '2032-02-02 00:00+00'::timestamptz,
    'preserve_run_at with no job holding the key: a new job with the given run_at'
);
-- A running job: it loses its key and its retries; a new job takes the key at the given run_at.
SELECT id AS p2 FROM app_jobs.add_job(identifier := 'km_run', job_key := 'kp_run', payload := '{"v": 1}') \gset
SELECT is((app_jobs.get_job('w1', ARRAY['km_run'])).id, :p2::bigint, 'w1 runs the keyed job');
SELECT id AS p3 FROM app_jobs.add_job(
    identifier := 'km_run', job_key := 'kp_run', payload := '{"v": 2}', job_key_mode := 'preserve_run_at',
    run_at := '2033-03-03 00:00+00'
) \gset
SELECT isnt(:p3::bigint, :p2::bigint, 'preserve_run_at on a running job: a new job');
SELECT is(
    (SELECT ROW(key, attempts, max_attempts, locked_by)::text FROM app_jobs.jobs WHERE id = :p2),
    ROW(NULL::text, 1, 1, 'w1')::text,
    'the running job keeps running without its key and without retries (max_attempts = '
    || 'its attempt, which stays as claimed)'
);
SELECT is(
    (SELECT ROW(key, payload::text, run_at)::text FROM app_jobs.jobs WHERE id = :p3),
    ROW('kp_run', '{"v": 2}', '2033-03-03 00:00+00'::timestamptz)::text,
    'the new job holds the key, with the given run_at'
);

-- 4. unsafe_dedupe: whatever job holds the key is returned untouched.
SELECT id AS u1 FROM app_jobs.add_job(
    identifier := 'km', job_key := 'ku', payload := '{"v": 1}', run_at := '2030-01-01 00:00+00',
    origin := 'orig-u'
) \gset
INSERT INTO snap SELECT 'u1', to_jsonb(j) FROM app_jobs.jobs AS j WHERE id = :u1;
SELECT count(*) AS n_before FROM app_jobs.jobs \gset
SELECT is(
    (SELECT to_jsonb(j) FROM app_jobs.add_job(
        identifier := 'other', job_key := 'ku', payload := '{"v": 2}', run_at := now(),
        priority := 9, job_key_mode := 'unsafe_dedupe', origin := 'orig-2') AS j),
    (SELECT data FROM snap WHERE label = 'u1'),
    'unsafe_dedupe on a waiting job: returns it as it was'
);
SELECT is(
    (SELECT to_jsonb(j) FROM app_jobs.jobs AS j WHERE id = :u1), (SELECT data FROM snap WHERE label = 'u1'),
    'and the stored job is unchanged (not even updated_at)'
);
SELECT is((SELECT count(*) FROM app_jobs.jobs), :n_before::bigint, 'no job was added');
-- Retrying and failed-for-good holders are returned untouched as well.
UPDATE app_jobs.jobs SET attempts = 25, last_error = 'gave up' WHERE id = :u1;
SELECT is(
    (SELECT ROW(id, attempts, last_error, payload::text)::text FROM app_jobs.add_job(
        identifier := 'km', job_key := 'ku', payload := '{"v": 3}', job_key_mode := 'unsafe_dedupe')),
    ROW(:u1::bigint, 25, 'gave up', '{"v": 1}')::text,
    'unsafe_dedupe on a job failed for good: returns it unchanged (it is not revived)'
);
-- Running holder.
SELECT id AS u2 FROM app_jobs.add_job(identifier := 'km_run2', job_key := 'ku_run') \gset
SELECT is((app_jobs.get_job('w2', ARRAY['km_run2'])).id, :u2::bigint, 'w2 runs a keyed job');
INSERT INTO snap SELECT 'u2', pg_temp.keyed('ku_run');
SELECT is(
    (SELECT ROW(id, locked_by, attempts)::text FROM app_jobs.add_job(
        identifier := 'km_run2', job_key := 'ku_run', payload := '{"v": 9}', job_key_mode := 'unsafe_dedupe')),
    ROW(:u2::bigint, 'w2', 1)::text,
    'unsafe_dedupe on a running job: returns the running job'
);
SELECT is(pg_temp.keyed('ku_run'), (SELECT data FROM snap WHERE label = 'u2'),
    'which keeps its key, retries and payload');
SELECT is(
    (SELECT count(*)::integer FROM app_jobs.jobs WHERE task_identifier = 'km_run2'), 1,
    'and no second job is made'
);
SELECT is(
    (SELECT ROW(key, payload::text, origin)::text FROM app_jobs.add_job(
        identifier := 'km', job_key := 'ku_new', payload := '{"v": 1}', job_key_mode := 'unsafe_dedupe',
        origin := 'o')),
    ROW('ku_new', '{"v": 1}', 'o')::text,
    'unsafe_dedupe with no job holding the key: a new job'
);
-- replace, for contrast, on the same running job.
SELECT isnt(
    (app_jobs.add_job(identifier := 'km_run2', job_key := 'ku_run', job_key_mode := 'replace')).id,
    :u2::bigint,
    'replace on that running job makes a new job instead'
);

-- 5. origin: stored, bounded (PJ022), kept in history and job_status.
DELETE FROM app_jobs.jobs;
SELECT throws_ok(
    format('SELECT app_jobs.add_job(identifier := %L, origin := %L, job_key := %L)', 'o', v.o, v.k),
    'PJ022', NULL, 'PJ022: origin ' || v.what
)
FROM (VALUES
    ('empty', '', NULL),
    ('of 257 characters', repeat('o', 257), NULL),
    ('of 257 multibyte characters', repeat('é', 257), NULL),
    ('empty, with a job_key', '', 'ko'),
    ('too long, with a job_key', repeat('o', 300), 'ko')
) AS v (what, o, k);
SELECT is_empty($$SELECT * FROM app_jobs.jobs$$, 'refused origins enqueue nothing');
SELECT is(
    (app_jobs.add_job(identifier := 'o', origin := repeat('o', 256))).origin, repeat('o', 256),
    'an origin of 256 characters is accepted'
);
SELECT is(
    (app_jobs.add_job(identifier := 'o', origin := repeat('é', 256))).origin, repeat('é', 256),
    '256 multibyte characters too (characters, not bytes)'
);
SELECT is((app_jobs.add_job(identifier := 'o')).origin, NULL, 'origin defaults to NULL');
SELECT throws_ok(
    $$INSERT INTO app_jobs.jobs (task_identifier, origin) VALUES ('o', '')$$,
    '23514', NULL, 'a direct INSERT with an empty origin breaks the CHECK'
);
SELECT id AS o1 FROM app_jobs.add_job(identifier := 'o_done', origin := 'api:/v1/import', run_at := now() - interval '1 hour') \gset
SELECT id AS o2 FROM app_jobs.add_job(identifier := 'o_fail', origin := 'cron', max_attempts := 1, run_at := now() - interval '1 hour') \gset
SELECT id AS o3 FROM app_jobs.add_job(identifier := 'o_wait', origin := 'ui') \gset
SELECT is(
    (SELECT ROW(status, origin)::text FROM app_jobs.job_status WHERE id = :o3),
    ROW('waiting', 'ui')::text,
    'job_status shows a live job''s origin'
);
SELECT is((app_jobs.get_job('w3', ARRAY['o_done'])).origin, 'api:/v1/import', 'a claimed job carries its origin');
SELECT is((app_jobs.complete_job('w3', :o1)).id, :o1::bigint, 'and completes');
SELECT is((app_jobs.get_job('w3', ARRAY['o_fail'])).id, :o2::bigint, 'another is claimed');
SELECT is((app_jobs.fail_job('w3', :o2, 'x')).origin, 'cron', 'and fails for good');
SELECT is(app_jobs.cancel_job(:o3), 'cancelled', 'a third is cancelled');
SELECT results_eq(
    $$SELECT job_id, status, origin FROM app_jobs.job_history ORDER BY job_id$$,
    format($$VALUES (%s::bigint, 'completed', 'api:/v1/import'), (%s, 'failed', 'cron'), (%s, 'cancelled', 'ui')$$,
           :o1, :o2, :o3),
    'history keeps each job''s origin'
);
SELECT results_eq(
    format($$SELECT id, status, origin FROM app_jobs.job_status WHERE id IN (%s, %s, %s) ORDER BY id$$,
           :o1, :o2, :o3),
    format($$VALUES (%s::bigint, 'completed', 'api:/v1/import'), (%s, 'failed', 'cron'), (%s, 'cancelled', 'ui')$$,
           :o1, :o2, :o3),
    'job_status shows the origin of finished jobs'
);

-- 6. pgjobs.ignore_enqueues.
DELETE FROM app_jobs.jobs;
SELECT id AS kept FROM app_jobs.add_job(identifier := 'task_a', job_key := 'ka', payload := '{"v": 1}', queue_name := 'iq') \gset
SELECT set_config('pgjobs.ignore_enqueues', 'all', TRUE) AS _ \gset
SELECT ok(app_jobs.add_job(identifier := 'task_a') IS NULL, '''all'': add_job returns NULL');
SELECT is((app_jobs.add_job(identifier := 'task_z', queue_name := 'iq2')).id, NULL, 'for any task');
SELECT is(
    (app_jobs.add_job(identifier := 'task_a', job_key := 'ka', payload := '{"v": 2}', queue_name := 'iq')).id,
    NULL, 'also with a job_key'
);
SELECT is(
    (SELECT array_agg(ROW(id, payload::text)::text) FROM app_jobs.jobs),
    ARRAY[ROW(:kept::bigint, '{"v": 1}')::text],
    'nothing was inserted and the keyed job was not replaced'
);
SELECT is(
    (SELECT array_agg(ROW(queue_name, job_count)::text) FROM app_jobs.job_queues),
    ARRAY[ROW('iq', 1)::text], 'queue counts are untouched'
);
SELECT set_config('pgjobs.ignore_enqueues', 'task_a,task_b', TRUE) AS _ \gset
SELECT ok(app_jobs.add_job(identifier := 'task_a') IS NULL, 'a task list: task_a is ignored');
SELECT ok(app_jobs.add_job(identifier := 'task_b') IS NULL, 'task_b is ignored');
SELECT is((app_jobs.add_job(identifier := 'task_c')).task_identifier, 'task_c', 'task_c is enqueued');
SELECT is((app_jobs.add_job(identifier := 'TASK_A')).task_identifier, 'TASK_A', 'names match exactly (case matters)');
SELECT is((app_jobs.add_job(identifier := 'task')).task_identifier, 'task', 'and whole (no prefix match)');
SELECT set_config('pgjobs.ignore_enqueues', 'task_b', TRUE) AS _ \gset
SELECT is((app_jobs.add_job(identifier := 'task_a')).task_identifier, 'task_a', 'a single name: other tasks are enqueued');
SELECT ok(app_jobs.add_job(identifier := 'task_b') IS NULL, 'and the named one ignored');
SELECT set_config('pgjobs.ignore_enqueues', '', TRUE) AS _ \gset
SELECT is((app_jobs.add_job(identifier := 'task_b')).task_identifier, 'task_b', 'an empty setting ignores nothing');
SELECT is(
    (SELECT array_agg(task_identifier ORDER BY id) FROM app_jobs.jobs),
    ARRAY['task_a', 'task_c', 'TASK_A', 'task', 'task_a', 'task_b'],
    'exactly the jobs not ignored exist'
);
SELECT ok(NOT app_jobs._enqueue_ignored('task_a'), 'enqueue_ignored: false with the setting empty');
SELECT set_config('pgjobs.ignore_enqueues', 'x,task_a', TRUE) AS _ \gset
SELECT ok(app_jobs._enqueue_ignored('task_a'), 'enqueue_ignored: true for a listed task');
SELECT ok(NOT app_jobs._enqueue_ignored(NULL), 'enqueue_ignored(NULL): false');

SELECT * FROM finish();
ROLLBACK;
