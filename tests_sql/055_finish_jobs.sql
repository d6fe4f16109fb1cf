-- finish_jobs: a worker's batch of outcomes (NULL error completes, text fails), only jobs the worker holds, each job once, queues released, counts kept, bad input refused with PJ012/PJ005 and nothing changed.
BEGIN;
SELECT plan(17);

SELECT id AS a FROM app_jobs.add_job(identifier := 'f', queue_name := 'qa', run_at := now() - interval '3 s') \gset
SELECT id AS b FROM app_jobs.add_job(identifier := 'f', queue_name := 'qb', run_at := now() - interval '2 s') \gset
SELECT id AS c FROM app_jobs.add_job(identifier := 'f', run_at := now() - interval '1 s') \gset
SELECT id AS d FROM app_jobs.add_job(identifier := 'f') \gset
SELECT is(
    (SELECT array_agg(id ORDER BY id) FROM app_jobs.get_jobs('w1', ARRAY['f'], batch_size := 3)),
    ARRAY[:a, :b, :c]::bigint[],
    'w1 holds a (qa), b (qb) and c (no queue)'
);
SELECT is((app_jobs.get_job('w2', ARRAY['f'])).id, :d::bigint, 'w2 holds d');

-- Bad input changes nothing.
SELECT throws_ok(
    format('SELECT * FROM app_jobs.finish_jobs(%L, %L, %L)', 'w1', ARRAY[:a, :b], ARRAY[NULL]::text[]),
    'PJ012', NULL, 'ids and errors of different lengths: PJ012'
);
SELECT throws_ok(
    format('SELECT * FROM app_jobs.finish_jobs(%L, %L, %L)', 'w1', ARRAY[:a], NULL),
    'PJ012', NULL, 'ids without errors: PJ012'
);
SELECT throws_ok(
    format('SELECT * FROM app_jobs.finish_jobs(%L, %L, %L)', '', ARRAY[:a], ARRAY[NULL]::text[]),
    'PJ005', NULL, 'empty worker id: PJ005'
);
SELECT is(
    (SELECT count(*)::integer FROM app_jobs.jobs WHERE locked_by = 'w1'), 3,
    'w1 still holds its three jobs'
);
SELECT is_empty(
    $$SELECT * FROM app_jobs.finish_jobs('w1', '{}', '{}')$$, 'an empty batch finishes nothing'
);

-- One batch: a completes, b fails, c completes; d (w2's), a listed twice and a missing id
-- are skipped.
CREATE TEMP TABLE done AS
SELECT * FROM app_jobs.finish_jobs(
    'w1',
    ARRAY[:a, :b, :c, :d, :a, -1]::bigint[],
    ARRAY[NULL, 'b broke', NULL, NULL, 'again', NULL]
);
SELECT is(
    (SELECT array_agg(id ORDER BY id) FROM done), ARRAY[:a, :b, :c]::bigint[],
    'returns the three jobs w1 held, each once'
);
SELECT is(
    (SELECT array_agg(id ORDER BY id) FROM app_jobs.jobs), ARRAY[:b, :d]::bigint[],
    'a and c are gone (completed), b and d remain'
);
SELECT is(
    (SELECT row(locked_by, locked_at, last_error, attempts)::text FROM app_jobs.jobs WHERE id = :b),
    row(NULL::text, NULL::timestamptz, 'b broke', 1)::text,
    'b is unlocked with its error and one attempt used'
);
SELECT ok(
    (SELECT run_at > now() FROM app_jobs.jobs WHERE id = :b), 'b is retried later (backoff)'
);
SELECT is(
    (SELECT locked_by FROM app_jobs.jobs WHERE id = :d), 'w2', 'd, held by w2, is untouched'
);
SELECT is(
    (SELECT last_error FROM done WHERE id = :b), 'b broke', 'the failed row is returned as failed'
);
SELECT is_empty(
    $$SELECT * FROM app_jobs.job_queues WHERE locked_by IS NOT NULL$$,
    'qa and qb are released'
);
SELECT results_eq(
    $$SELECT queue_name, job_count FROM app_jobs.job_queues ORDER BY queue_name$$,
    $$VALUES ('qb'::text, 1)$$,
    'qa (emptied) is gone; qb still counts b'
);

-- A second report of the same batch finds nothing held.
SELECT is_empty(
    format('SELECT * FROM app_jobs.finish_jobs(%L, %L, %L)', 'w1',
        ARRAY[:a, :b, :c], ARRAY[NULL, NULL, NULL]::text[]),
    'reporting again finishes nothing'
);
SELECT is(
    (SELECT count(*)::integer FROM app_jobs.jobs), 2, 'and removes nothing'
);

SELECT * FROM finish();
ROLLBACK;
