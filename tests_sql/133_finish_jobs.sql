-- finish_jobs(worker_id, outcomes jsonb): a mixed batch (completed/failed/cancelled), fencing by worker and by attempt, duplicate and missing ids, statuses completed/retrying/failed/cancelled/fenced, queues released and counted, history rows, PJ016/PJ005 refusals that change nothing.
BEGIN;
\ir setup.psql
SELECT plan(54);

-- Jobs, in claim order: a (qa), b (qb, b2 waits behind it), c (no queue, one attempt),
-- e (qe, e2 waits behind it), f (no queue), g (no queue); d is left for w2.
SELECT id AS a FROM app_jobs.add_job(identifier := 'f', queue_name := 'qa', run_at := now() - interval '9 s') \gset
SELECT id AS b FROM app_jobs.add_job(identifier := 'f', queue_name := 'qb', run_at := now() - interval '8 s') \gset
SELECT id AS b2 FROM app_jobs.add_job(identifier := 'f', queue_name := 'qb', run_at := now() - interval '1 s') \gset
SELECT id AS c FROM app_jobs.add_job(identifier := 'f', run_at := now() - interval '7 s', max_attempts := 1) \gset
SELECT id AS e FROM app_jobs.add_job(identifier := 'f', queue_name := 'qe', run_at := now() - interval '6 s') \gset
SELECT id AS e2 FROM app_jobs.add_job(identifier := 'f', queue_name := 'qe', run_at := now() - interval '1 s') \gset
SELECT id AS f FROM app_jobs.add_job(identifier := 'f', run_at := now() - interval '5 s') \gset
SELECT id AS g FROM app_jobs.add_job(identifier := 'f', run_at := now() - interval '4 s', payload := '{"g": 1}') \gset
SELECT id AS d FROM app_jobs.add_job(identifier := 'f', run_at := now() - interval '3 s') \gset

-- g has already failed once: w1's claim is its attempt 2.
UPDATE app_jobs.jobs SET attempts = 1, last_error = 'first try' WHERE id = :g;

SELECT is(
    (SELECT array_agg(id ORDER BY id) FROM app_jobs.get_jobs('w1', ARRAY['f'], batch_size := 6)),
    ARRAY[:a, :b, :c, :e, :f, :g]::bigint[],
    'w1 holds a (qa), b (qb), c, e (qe), f and g'
);
SELECT is((app_jobs.get_job('w2', ARRAY['f'])).id, :d::bigint, 'w2 holds d');
SELECT is(
    (SELECT attempts FROM app_jobs.jobs WHERE id = :g), 2, 'g is on its second attempt'
);
SELECT results_eq(
    $$SELECT queue_name, job_count, locked_by FROM app_jobs.job_queues ORDER BY queue_name$$,
    $$VALUES ('qa'::text, 1, 'w1'::text), ('qb', 2, 'w1'), ('qe', 2, 'w1')$$,
    'w1 holds qa, qb and qe; qb and qe count two jobs each'
);

-- 1. Malformed input: refused with PJ016 (or PJ005), nothing changes.
INSERT INTO snap SELECT 'jobs', jsonb_agg(to_jsonb(j) ORDER BY j.id) FROM app_jobs.jobs AS j;
INSERT INTO snap SELECT 'queues', jsonb_agg(to_jsonb(q) ORDER BY q.queue_name) FROM app_jobs.job_queues AS q;

SELECT throws_ok(
    format('SELECT * FROM app_jobs.finish_jobs(%L, %L::jsonb)', 'w1', v.outcomes),
    'PJ016', NULL, 'PJ016: ' || v.what
)
FROM (VALUES
    ('outcomes not an array (object)', format('{"id": %s, "attempt": 1}', :a)),
    ('outcomes not an array (number)', '5'),
    ('outcomes not an array (JSON null)', 'null'),
    ('element not an object (number)', format('[{"id": %s, "attempt": 1}, %s]', :a, :b)),
    ('element not an object (array)', format('[{"id": %s, "attempt": 1}, [%s]]', :a, :b)),
    ('element not an object (string)', format('[{"id": %s, "attempt": 1}, "id"]', :a)),
    ('id missing', format('[{"id": %s, "attempt": 1}, {"outcome": "completed"}]', :a)),
    ('id not an integer (fraction)', format('[{"id": %s, "attempt": 1}, {"id": %s.5}]', :a, :b)),
    ('id not an integer (negative)', format('[{"id": %s, "attempt": 1}, {"id": -1}]', :a)),
    ('id not an integer (text)', format('[{"id": %s, "attempt": 1}, {"id": "b"}]', :a)),
    ('id not an integer (boolean)', format('[{"id": %s, "attempt": 1}, {"id": true}]', :a)),
    ('attempt missing', format('[{"id": %s, "attempt": 1}, {"id": %s}]', :a, :b)),
    ('attempt null', format('[{"id": %s, "attempt": 1}, {"id": %s, "attempt": null}]', :a, :b)),
    ('attempt not an integer', format('[{"id": %s, "attempt": 1}, {"id": %s, "attempt": 1.5}]', :a, :b)),
    ('bad outcome word', format('[{"id": %s, "attempt": 1}, {"id": %s, "outcome": "done"}]', :a, :b)),
    ('outcome in capitals', format('[{"id": %s, "attempt": 1}, {"id": %s, "outcome": "FAILED"}]', :a, :b)),
    ('error a number', format('[{"id": %s, "attempt": 1}, {"id": %s, "outcome": "failed", "error": 42}]', :a, :b)),
    ('error an object', format('[{"id": %s, "attempt": 1}, {"id": %s, "outcome": "failed", "error": {"m": "x"}}]', :a, :b)),
    ('error an array', format('[{"id": %s, "attempt": 1}, {"id": %s, "outcome": "failed", "error": ["x"]}]', :a, :b))
) AS v (what, outcomes);
SELECT throws_ok(
    $$SELECT * FROM app_jobs.finish_jobs('w1', NULL)$$, 'PJ016', NULL, 'PJ016: outcomes NULL'
);
SELECT throws_ok(
    format('SELECT * FROM app_jobs.finish_jobs(%L, %L::jsonb)', '', format('[{"id": %s, "attempt": 1}]', :a)),
    'PJ005', NULL, 'PJ005: empty worker id'
);
SELECT throws_ok(
    format('SELECT * FROM app_jobs.finish_jobs(NULL, %L::jsonb)', format('[{"id": %s, "attempt": 1}]', :a)),
    'PJ005', NULL, 'PJ005: NULL worker id'
);
SELECT is(
    (SELECT jsonb_agg(to_jsonb(j) ORDER BY j.id) FROM app_jobs.jobs AS j),
    (SELECT data FROM snap WHERE label = 'jobs'),
    'the refused batches changed no job'
);
SELECT is(
    (SELECT jsonb_agg(to_jsonb(q) ORDER BY q.queue_name) FROM app_jobs.job_queues AS q),
    (SELECT data FROM snap WHERE label = 'queues'),
    'nor any queue'
);
SELECT is_empty($$SELECT * FROM app_jobs.job_history$$, 'and wrote no history');
SELECT is_empty(
    $$SELECT * FROM app_jobs.finish_jobs('w1', '[]')$$, 'an empty batch finishes nothing'
);

-- 2. One batch. a completes (with a result; listed twice), b fails (retrying), c fails on
-- its last attempt (failed), e is cancelled, f gives a stale attempt, g's attempt-1 report
-- is stale, d belongs to w2, 999999999 does not exist.
CREATE TEMP TABLE done AS
SELECT * FROM app_jobs.finish_jobs('w1', jsonb_build_array(
    jsonb_build_object('id', :a, 'attempt', 1, 'outcome', 'completed', 'result', '{"sent": 3}'::jsonb),
    jsonb_build_object('id', :b, 'attempt', 1, 'outcome', 'failed', 'error', 'b broke',
                       'error_data', '{"type": "IOError"}'::jsonb),
    jsonb_build_object('id', :c, 'attempt', 1, 'outcome', 'failed', 'error', 'c broke',
                       'error_data', '{"type": "ValueError", "traceback": "..."}'::jsonb),
    jsonb_build_object('id', :e, 'attempt', 1, 'outcome', 'cancelled', 'error', 'stopped by user'),
    jsonb_build_object('id', :f, 'attempt', 2, 'outcome', 'completed'),
    jsonb_build_object('id', :g, 'attempt', 1, 'outcome', 'completed'),
    jsonb_build_object('id', :d, 'attempt', 1, 'outcome', 'completed'),
    jsonb_build_object('id', 999999999, 'attempt', 1, 'outcome', 'completed'),
    jsonb_build_object('id', :a, 'attempt', 1, 'outcome', 'failed', 'error', 'again')
));

SELECT bag_eq(
    $$SELECT job_id, attempt, status FROM done$$,
    format($$VALUES
        (%1$s::bigint, 1, 'completed'::text), (%2$s, 1, 'retrying'), (%3$s, 1, 'failed'),
        (%4$s, 1, 'cancelled'), (%5$s, 2, 'fenced'), (%6$s, 1, 'fenced'), (%7$s, 1, 'fenced'),
        (999999999, 1, 'fenced'), (%1$s, 1, 'fenced')$$,
        :a, :b, :c, :e, :f, :g, :d),
    'one row per element: completed, retrying, failed, cancelled, and fenced for the stale attempts, w2''s job, the missing id and the repeat'
);
SELECT is(
    (SELECT array_agg(id ORDER BY id) FROM app_jobs.jobs),
    ARRAY[:b, :b2, :c, :e2, :f, :g, :d]::bigint[],
    'a (completed) and e (cancelled) left the table; the rest remain'
);

-- The retrying job.
SELECT is(
    (SELECT row(locked_by, locked_at, last_error, attempts)::text FROM app_jobs.jobs WHERE id = :b),
    row(NULL::text, NULL::timestamptz, 'b broke', 1)::text,
    'b is unlocked with its error and the attempt counted'
);
SELECT is(
    (SELECT run_at FROM app_jobs.jobs WHERE id = :b), now() + exp(1) * interval '1 second',
    'b is retried exp(1) s from now'
);
-- The permanently failed job.
SELECT is(
    (SELECT row(locked_by, last_error, attempts, is_available)::text FROM app_jobs.jobs WHERE id = :c),
    row(NULL::text, 'c broke', 1, false)::text,
    'c is kept, unlocked and never available again'
);
-- Fenced jobs are untouched.
SELECT is(
    (SELECT jsonb_agg(to_jsonb(j) ORDER BY j.id) FROM app_jobs.jobs AS j WHERE j.id IN (:f, :g, :d)),
    (SELECT jsonb_agg(x ORDER BY (x ->> 'id')::bigint) FROM snap, jsonb_array_elements(data) AS x
     WHERE label = 'jobs' AND (x ->> 'id')::bigint IN (:f, :g, :d)),
    'f (stale attempt), g (attempt 1 reported during attempt 2) and d (w2''s) are unchanged'
);
SELECT is(
    (SELECT row(locked_by, attempts, last_error)::text FROM app_jobs.jobs WHERE id = :g),
    row('w1'::text, 2, 'first try'::text)::text,
    'g still runs its second attempt for w1'
);

-- Queues.
SELECT results_eq(
    $$SELECT queue_name, job_count, locked_by, locked_at FROM app_jobs.job_queues ORDER BY queue_name$$,
    $$VALUES ('qb'::text, 2, NULL::text, NULL::timestamptz), ('qe', 1, NULL, NULL)$$,
    'qa (emptied) is gone; qb keeps b and b2, qe keeps e2; both are released'
);
SELECT is(
    (SELECT array_agg(id ORDER BY id) FROM app_jobs.get_jobs('w3', ARRAY['f'], batch_size := 10)),
    ARRAY[:b2, :e2]::bigint[],
    'both released queues run their next due job (b2 overtakes b, which waits for its backoff)'
);

-- History: one row per job that reached a final state, none for retrying or fenced jobs.
SELECT results_eq(
    $$SELECT job_id, status, attempts, max_attempts, worker_id, started_at, finished_at,
             result, last_error, error_data
      FROM app_jobs.job_history ORDER BY job_id$$,
    format($$VALUES
        (%s::bigint, 'completed'::text, 1, 25, 'w1'::text, now(), now(), '{"sent": 3}'::jsonb,
         NULL::text, NULL::jsonb),
        (%s, 'failed', 1, 1, 'w1', now(), now(), NULL, 'c broke',
         '{"type": "ValueError", "traceback": "..."}'),
        (%s, 'cancelled', 1, 25, 'w1', now(), now(), NULL, 'stopped by user', NULL)$$,
        :a, :c, :e),
    'history holds a (completed, result), c (failed, error and error_data), e (cancelled)'
);
SELECT results_eq(
    $$SELECT job_id, task_identifier, queue_name, payload::text, priority
      FROM app_jobs.job_history ORDER BY job_id$$,
    format($$VALUES (%s::bigint, 'f'::text, 'qa'::text, '{}'::text, 0), (%s, 'f', NULL, '{}', 0),
                    (%s, 'f', 'qe', '{}', 0)$$, :a, :c, :e),
    'history rows copy the job''s task, queue and payload'
);
SELECT is(
    (SELECT created_at FROM app_jobs.job_history WHERE job_id = :a),
    (SELECT (x ->> 'created_at')::timestamptz FROM snap, jsonb_array_elements(data) AS x
     WHERE label = 'jobs' AND (x ->> 'id')::bigint = :a),
    'history keeps the job''s created_at'
);

-- 3. Reporting the same batch again: everything is fenced, nothing changes.
DELETE FROM snap;
INSERT INTO snap SELECT 'jobs', jsonb_agg(to_jsonb(j) ORDER BY j.id) FROM app_jobs.jobs AS j;
SELECT is(
    (SELECT array_agg(DISTINCT status) FROM app_jobs.finish_jobs('w1', jsonb_build_array(
        jsonb_build_object('id', :a, 'attempt', 1),
        jsonb_build_object('id', :b, 'attempt', 1, 'outcome', 'failed', 'error', 'x'),
        jsonb_build_object('id', :c, 'attempt', 1, 'outcome', 'failed'),
        jsonb_build_object('id', :e, 'attempt', 1, 'outcome', 'cancelled')
    ))),
    ARRAY['fenced'],
    'a repeated report is fenced throughout'
);
SELECT is(
    (SELECT jsonb_agg(to_jsonb(j) ORDER BY j.id) FROM app_jobs.jobs AS j),
    (SELECT data FROM snap WHERE label = 'jobs'),
    'and changes no job'
);
SELECT is((SELECT count(*)::integer FROM app_jobs.job_history), 3, 'nor adds history');

-- 4. Defaults: no outcome means completed; an outcome without its attempt is refused
-- (the fence needs it); the right attempt finishes g; id and attempt may be JSON strings
-- of digits.
SELECT throws_ok(
    format($$SELECT * FROM app_jobs.finish_jobs('w1', '[{"id": %s}]')$$, :f),
    'PJ016', NULL, 'an element without its attempt is refused: it would skip the fence'
);
SELECT is(
    (SELECT row(locked_by, attempts)::text FROM app_jobs.jobs WHERE id = :f),
    row('w1'::text, 1)::text,
    'and f is still held by w1 at attempt 1'
);
SELECT results_eq(
    format($$SELECT job_id, attempt, status FROM app_jobs.finish_jobs('w1', '[{"id": %s, "attempt": 1}]')$$, :f),
    format($$VALUES (%s::bigint, 1, 'completed'::text)$$, :f),
    'an element with an id and its attempt completes the job'
);
SELECT results_eq(
    format($$SELECT job_id, attempt, status FROM app_jobs.finish_jobs(
        'w1', '[{"id": "%s", "attempt": "2", "outcome": "failed", "error": null}]')$$, :g),
    format($$VALUES (%s::bigint, 2, 'retrying'::text)$$, :g),
    'the current attempt is honoured (digits in strings accepted); a null error fails with no message'
);
SELECT is(
    (SELECT row(locked_by, attempts, last_error)::text FROM app_jobs.jobs WHERE id = :g),
    row(NULL::text, 2, NULL::text)::text,
    'g is unlocked, attempts 2, last_error cleared to NULL'
);
SELECT is(
    (SELECT run_at FROM app_jobs.jobs WHERE id = :g), now() + exp(2) * interval '1 second',
    'g is retried exp(2) s from now'
);
SELECT is(
    (SELECT status FROM app_jobs.finish_jobs('w2', format('[{"id": %s, "attempt": 1, "outcome": "completed"}]', :d)::jsonb)),
    'completed',
    'w2 completes its own job d'
);
SELECT is(
    (SELECT array_agg(job_id ORDER BY job_id) FROM app_jobs.job_history WHERE worker_id = 'w2'),
    ARRAY[:d]::bigint[],
    'with w2 as the history worker_id'
);
SELECT is_empty(
    $$SELECT * FROM app_jobs.jobs WHERE locked_by IN ('w1', 'w2')$$,
    'w1 and w2 hold nothing any more'
);

SELECT * FROM finish();
ROLLBACK;
