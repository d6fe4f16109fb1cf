-- add_job with job_key: upsert of a waiting job in place (fields, attempts/last_error reset, queue moves), of a failed job, and of a running job (it loses its key and its retries; a new job takes the key).
BEGIN;
\ir setup.psql
SELECT plan(48);

-- A. Waiting job: replaced in place. It has failed twice already, long ago
-- (inserted directly: the timestamps trigger would not let an UPDATE set created_at).
INSERT INTO app_jobs.jobs (
    database_id, task_identifier, payload, key, queue_name, run_at, max_attempts,
    priority, attempts, last_error, created_at, updated_at
) VALUES (
    'aaaaaaaa-0000-0000-0000-000000000001', 'task_a', '{"v": 1}', 'k_a', 'qa',
    '2020-01-01 00:00:00+00', 5, 3, 2, 'boom', '2000-01-01 00:00:00+00',
    '2000-01-01 00:00:00+00'
) RETURNING id AS a1 \gset
SELECT count(*) AS before_a FROM app_jobs.jobs \gset

SELECT is(
    (app_jobs.add_job(
        db_id := 'aaaaaaaa-0000-0000-0000-000000000001'::uuid,
        identifier := 'task_a2', payload := '{"v": 2}'::json, job_key := 'k_a',
        queue_name := 'qb', run_at := '2021-01-01 00:00:00+00', max_attempts := 7,
        priority := 1
    )).id,
    :a1::bigint,
    'upsert of a waiting job returns the same job id'
);
SELECT is((SELECT count(*) FROM app_jobs.jobs), :before_a::bigint, 'no job was added');
SELECT is(
    (SELECT count(*)::int FROM app_jobs.jobs WHERE key = 'k_a'), 1, 'one job has the key'
);
SELECT is(
    to_jsonb(j) ->> v.col, v.expected, format('upsert updated %s', v.col)
)
FROM app_jobs.jobs AS j,
    (VALUES
        ('database_id', 'aaaaaaaa-0000-0000-0000-000000000001'),
        ('task_identifier', 'task_a2'),
        ('payload', '{"v": 2}'),
        ('queue_name', 'qb'),
        ('run_at', to_jsonb('2021-01-01 00:00:00+00'::timestamptz) #>> '{}'),
        ('max_attempts', '7'),
        ('priority', '1'),
        ('attempts', '0'),
        ('last_error', NULL),
        ('key', 'k_a'),
        ('is_available', 'true'),
        ('created_at', to_jsonb('2000-01-01 00:00:00+00'::timestamptz) #>> '{}'),
        ('updated_at', to_jsonb(now()) #>> '{}')
    ) AS v (col, expected)
WHERE j.id = :a1;
SELECT is(
    (SELECT count(*)::int FROM app_jobs.job_queues WHERE queue_name = 'qa'), 0,
    'queue change: the old queue row is gone (its count reached zero)'
);
SELECT is(
    (SELECT job_count FROM app_jobs.job_queues WHERE queue_name = 'qb'), 1,
    'queue change: the new queue counts the job'
);

-- Same queue again: counts unchanged.
SELECT app_jobs.add_job(db_id := 'aaaaaaaa-0000-0000-0000-000000000001', identifier := 'task_a2', job_key := 'k_a', queue_name := 'qb') IS NOT NULL
    AS _ \gset
SELECT is(
    (SELECT job_count FROM app_jobs.job_queues WHERE queue_name = 'qb'), 1,
    'upsert into the same queue keeps job_count at 1'
);
-- Queue removed by the upsert.
SELECT app_jobs.add_job(db_id := 'aaaaaaaa-0000-0000-0000-000000000001', identifier := 'task_a2', job_key := 'k_a') IS NOT NULL AS _ \gset
SELECT is(
    (SELECT count(*)::int FROM app_jobs.job_queues WHERE queue_name = 'qb'), 0,
    'upsert without a queue removes the job from its old queue'
);
SELECT is(
    (SELECT queue_name FROM app_jobs.jobs WHERE id = :a1), NULL, 'queue_name is now NULL'
);
-- And into a queue from none.
SELECT app_jobs.add_job(db_id := 'aaaaaaaa-0000-0000-0000-000000000001', identifier := 'task_a2', job_key := 'k_a', queue_name := 'qc') IS NOT NULL
    AS _ \gset
SELECT is(
    (SELECT job_count FROM app_jobs.job_queues WHERE queue_name = 'qc'), 1,
    'upsert from no queue into a queue counts it'
);
SELECT is(
    (SELECT ROW(payload::text, run_at, max_attempts, priority)::text
     FROM app_jobs.jobs WHERE id = :a1),
    ROW('{}', now(), 25, 0)::text,
    'omitted arguments reset to their defaults on upsert'
);

-- B. A permanently failed job with the key comes back to life.
SELECT id AS b1 FROM app_jobs.add_job(identifier := 'task_b', job_key := 'k_b', max_attempts := 2) \gset
UPDATE app_jobs.jobs SET attempts = 2, last_error = 'gave up' WHERE id = :b1;
SELECT is(
    (SELECT is_available FROM app_jobs.jobs WHERE id = :b1), false,
    'failed job is not available'
);
SELECT is(
    (app_jobs.add_job(identifier := 'task_b', job_key := 'k_b', max_attempts := 2)).id,
    :b1::bigint,
    'upsert of a failed job keeps its id'
);
SELECT is(
    (SELECT ROW(attempts, last_error, is_available)::text FROM app_jobs.jobs WHERE id = :b1),
    ROW(0, NULL::text, true)::text,
    'failed job: attempts and last_error reset, available again'
);

-- C. Running job: it keeps running without its key and without retries.
SELECT id AS c1 FROM app_jobs.add_job(
    identifier := 'task_c', payload := '{"v": 1}'::json, job_key := 'k_c',
    queue_name := 'qk', max_attempts := 4
) \gset
SELECT is(
    (app_jobs.get_job('w_c', ARRAY['task_c'])).id, :c1::bigint, 'w_c claims the keyed job'
);
SELECT id AS c2 FROM app_jobs.add_job(
    identifier := 'task_c', payload := '{"v": 2}'::json, job_key := 'k_c', queue_name := 'qk',
    max_attempts := 4
) \gset
SELECT isnt(:c2::bigint, :c1::bigint, 'upsert of a running job inserts a new job');
SELECT is(
    (SELECT ROW(key, attempts, max_attempts, locked_by, payload::text)::text
     FROM app_jobs.jobs WHERE id = :c1),
    ROW(NULL::text, 1, 1, 'w_c', '{"v": 1}')::text,
    'running job: key removed, max_attempts = attempts (its claim''s attempt is unchanged, '
    || 'so its worker''s outcome still counts), still locked, payload untouched'
);
SELECT is(
    (SELECT ROW(key, attempts, locked_by, payload::text, is_available)::text
     FROM app_jobs.jobs WHERE id = :c2),
    ROW('k_c', 0, NULL::text, '{"v": 2}', true)::text,
    'new job holds the key, waiting'
);
SELECT is(
    (SELECT count(*)::int FROM app_jobs.jobs WHERE key = 'k_c'), 1, 'still one job per key'
);
SELECT is(
    (SELECT job_count FROM app_jobs.job_queues WHERE queue_name = 'qk'), 2,
    'both jobs count in their queue'
);
SELECT is(
    (app_jobs.get_job('w_c2', ARRAY['task_c'])).id, NULL,
    'the new job waits while its queue runs the old one'
);
-- Upsert again while the old one still runs: the waiting new job is updated in place.
SELECT is(
    (app_jobs.add_job(
        identifier := 'task_c', payload := '{"v": 3}'::json, job_key := 'k_c',
        queue_name := 'qk', max_attempts := 4
    )).id,
    :c2::bigint,
    'a second upsert replaces the waiting new job, not the running one'
);
SELECT is(
    (SELECT payload::text FROM app_jobs.jobs WHERE id = :c2), '{"v": 3}', 'payload replaced'
);
-- The old job fails: it is kept, never retried.
SELECT is(
    (app_jobs.fail_job('w_c', :c1, 'crashed')).id, :c1::bigint, 'the old job can still be failed'
);
SELECT is(
    (SELECT ROW(attempts, max_attempts, is_available, last_error)::text
     FROM app_jobs.jobs WHERE id = :c1),
    ROW(1, 1, false, 'crashed')::text,
    'the failed old job stays, unavailable (failed for good after its one attempt)'
);
SELECT is(
    (app_jobs.get_job('w_c2', ARRAY['task_c'])).id, :c2::bigint,
    'the queue is free again: the new job is claimed'
);
UPDATE app_jobs.jobs SET run_at = '2000-01-01' WHERE id = :c1;
SELECT is(
    (app_jobs.get_job('w_c3', ARRAY['task_c'])).id, NULL,
    'the old job is never claimed again'
);

-- D. Running job that completes normally after losing its key.
SELECT id AS d1 FROM app_jobs.add_job(identifier := 'task_d', job_key := 'k_d') \gset
SELECT is((app_jobs.get_job('w_d', ARRAY['task_d'])).id, :d1::bigint, 'w_d claims the keyed job');
SELECT id AS d2 FROM app_jobs.add_job(identifier := 'task_d', job_key := 'k_d') \gset
SELECT is(
    (app_jobs.complete_job('w_d', :d1)).id, :d1::bigint,
    'the keyless running job completes'
);
SELECT is(
    (SELECT array_agg(id ORDER BY id) FROM app_jobs.jobs WHERE task_identifier = 'task_d'),
    ARRAY[:d2]::bigint[],
    'only the new keyed job remains'
);
SELECT is(
    (app_jobs.get_job('w_d', ARRAY['task_d'])).id, :d2::bigint, 'and it is claimable'
);

-- E. Running job whose lock has expired is still treated as running by add_job.
SELECT id AS e1 FROM app_jobs.add_job(identifier := 'task_e', job_key := 'k_e') \gset
SELECT is((app_jobs.get_job('w_e', ARRAY['task_e'])).id, :e1::bigint, 'w_e claims');
UPDATE app_jobs.jobs SET locked_at = now() - interval '5 hours' WHERE id = :e1;
SELECT id AS e2 FROM app_jobs.add_job(identifier := 'task_e', job_key := 'k_e') \gset
SELECT isnt(
    :e2::bigint, :e1::bigint,
    'a locked job (even with an old lock) is not replaced in place'
);
SELECT is(
    (SELECT ROW(key, attempts = max_attempts)::text FROM app_jobs.jobs WHERE id = :e1),
    ROW(NULL::text, true)::text,
    'it lost its key and its retries'
);

-- Keys of different jobs do not interfere: after all scenarios each key is held by the
-- job its scenario left holding it, and the jobs that lost theirs hold none.
SELECT results_eq(
    $$SELECT key, id FROM app_jobs.jobs WHERE key IS NOT NULL ORDER BY key$$,
    format(
        $$VALUES ('k_a'::text, %s::bigint), ('k_b', %s), ('k_c', %s), ('k_d', %s), ('k_e', %s)$$,
        :a1, :b1, :c2, :d2, :e2
    ),
    'each key is held by the job its scenario left holding it'
);
SELECT results_eq(
    $$SELECT id FROM app_jobs.jobs WHERE key IS NULL ORDER BY id$$,
    format($$VALUES (%s::bigint), (%s)$$, :c1, :e1),
    'the two jobs that lost their key while running hold none; no other keyless job exists'
);

SELECT * FROM finish();
ROLLBACK;
