-- set_progress (stored, PJ015/PJ005, false when fenced by worker or attempt, reset by a new claim) and cancel_job (waiting/scheduled/retrying -> cancelled now with history, running -> cancelling then cancelled whatever the handler reports and never retried, permanently failed -> failed unchanged, missing -> NULL).
BEGIN;
\ir setup.psql
SELECT plan(61);

-- 1. set_progress.
SELECT id AS p FROM app_jobs.add_job(identifier := 'p', run_at := now() - interval '2 minutes') \gset
SELECT id AS p2 FROM app_jobs.add_job(identifier := 'p2', run_at := now() - interval '1 minute') \gset
SELECT is((app_jobs.get_job('w1', ARRAY['p'])).id, :p::bigint, 'w1 claims p');
SELECT is(
    (SELECT row(progress, stage)::text FROM app_jobs.jobs WHERE id = :p),
    row(NULL::integer, NULL::text)::text,
    'a fresh claim has no progress or stage'
);
SELECT ok(app_jobs.set_progress('w1', :p, 40, 'downloading'), 'set_progress by the holder returns true');
SELECT is(
    (SELECT row(progress, stage)::text FROM app_jobs.jobs WHERE id = :p),
    row(40, 'downloading'::text)::text,
    'progress and stage are stored'
);
SELECT ok(
    app_jobs.set_progress(worker_id := 'w1', job_id := :p, progress := 55, stage := 'parsing', attempt := 1),
    'with the current attempt: true'
);
SELECT is(
    (SELECT row(progress, stage)::text FROM app_jobs.jobs WHERE id = :p),
    row(55, 'parsing'::text)::text,
    'and stored'
);
SELECT ok(app_jobs.set_progress('w1', :p, 0), 'progress 0 is accepted');
SELECT ok(app_jobs.set_progress('w1', :p, 100, 'done'), 'progress 100 is accepted');
SELECT is(
    (SELECT row(progress, stage, cancel_requested)::text FROM app_jobs.job_status WHERE id = :p),
    row(100, 'done'::text, false)::text,
    'job_status shows the running job''s progress and stage'
);
INSERT INTO snap SELECT 'p', to_jsonb(j) FROM app_jobs.jobs AS j WHERE j.id = :p;
SELECT is(app_jobs.set_progress(v.w, v.id, 70, 'x', v.att), false, 'set_progress false: ' || v.what)
FROM (VALUES
    ('stale attempt', 'w1', :p::bigint, 2),
    ('attempt 0', 'w1', :p::bigint, 0),
    ('another worker', 'w2', :p::bigint, NULL),
    ('another worker with the right attempt', 'w2', :p::bigint, 1),
    ('job not running', 'w1', :p2::bigint, NULL),
    ('missing job', 'w1', -1::bigint, NULL),
    ('NULL job id', 'w1', NULL::bigint, NULL)
) AS v (what, w, id, att);
SELECT throws_ok(
    format('SELECT app_jobs.set_progress(%L, %s, %s)', v.w, :p, v.progress), v.code, NULL, v.what
)
FROM (VALUES
    ('PJ015: progress -1', 'w1', '-1', 'PJ015'),
    ('PJ015: progress 101', 'w1', '101', 'PJ015'),
    ('PJ015: progress NULL', 'w1', 'NULL', 'PJ015'),
    ('PJ005: empty worker id', '', '50', 'PJ005'),
    ('PJ005: NULL worker id', NULL, '50', 'PJ005')
) AS v (what, w, progress, code);
SELECT is(
    (SELECT to_jsonb(j) FROM app_jobs.jobs AS j WHERE j.id = :p),
    (SELECT data FROM snap WHERE label = 'p'),
    'the refused and fenced calls changed nothing'
);
-- (The jobs:progress notification, sent for the holder's report only, is received by a
-- listener in tests_py/test_notify.py.)
-- A failed attempt keeps the last progress for inspection; the next claim starts afresh.
SELECT is((app_jobs.fail_job('w1', :p, 'oops')).progress, 100, 'fail_job leaves the progress');
UPDATE app_jobs.jobs SET run_at = now() - interval '2 minutes' WHERE id = :p;
SELECT is(
    (SELECT row(id, attempts, progress, stage)::text FROM app_jobs.get_job('w2', ARRAY['p'])),
    row(:p::bigint, 2, NULL::integer, NULL::text)::text,
    'the next claim (attempt 2) resets progress and stage'
);
SELECT is(app_jobs.set_progress('w2', :p, 10, NULL, 1), false, 'attempt 1''s report is now stale');
SELECT is(app_jobs.set_progress('w2', :p, 10, NULL, 2), true, 'attempt 2''s is current');

-- 2. cancel_job on jobs that are not running: they end now.
DELETE FROM app_jobs.jobs;
SELECT id AS w FROM app_jobs.add_job(identifier := 'c', queue_name := 'qc', payload := '{"w": 1}', run_at := now() - interval '1 minute') \gset
SELECT id AS w2 FROM app_jobs.add_job(identifier := 'c', queue_name := 'qc', run_at := now() - interval '30 seconds') \gset
SELECT id AS s FROM app_jobs.add_job(identifier := 'c', run_at := now() + interval '1 hour', job_key := 'sk') \gset
SELECT id AS rt FROM app_jobs.add_job(identifier := 'c', run_at := now() + interval '1 hour') \gset
UPDATE app_jobs.jobs SET attempts = 2, last_error = 'earlier failure' WHERE id = :rt;

SELECT is(app_jobs.cancel_job(:w), 'cancelled', 'cancel_job on a waiting job: cancelled');
SELECT is((SELECT count(*)::integer FROM app_jobs.jobs WHERE id = :w), 0, 'it is gone');
SELECT results_eq(
    format($$SELECT status, attempts, worker_id, started_at, finished_at, last_error,
                    queue_name, payload::text
             FROM app_jobs.job_history WHERE job_id = %s$$, :w),
    $$VALUES ('cancelled'::text, 0, NULL::text, NULL::timestamptz, now(), 'cancelled'::text,
              'qc'::text, '{"w": 1}'::text)$$,
    'history records it cancelled, never started, by no worker'
);
SELECT results_eq(
    $$SELECT queue_name, job_count FROM app_jobs.job_queues$$,
    $$VALUES ('qc'::text, 1)$$,
    'its queue counts one job less'
);
SELECT is(app_jobs.cancel_job(:s), 'cancelled', 'cancel_job on a scheduled (future) job: cancelled');
SELECT is(
    (SELECT count(*)::integer FROM app_jobs.jobs WHERE key = 'sk'), 0, 'it is gone, freeing its key'
);
SELECT is(app_jobs.cancel_job(:rt), 'cancelled', 'cancel_job on a retrying job: cancelled');
SELECT results_eq(
    format($$SELECT status, attempts FROM app_jobs.job_history WHERE job_id = %s$$, :rt),
    $$VALUES ('cancelled'::text, 2)$$,
    'its history keeps the attempts it used'
);
SELECT is(app_jobs.cancel_job(:w), NULL, 'cancelling it again: NULL (no such job)');
SELECT is(app_jobs.cancel_job(-1), NULL, 'missing job: NULL');
SELECT is(app_jobs.cancel_job(NULL), NULL, 'NULL id: NULL');
SELECT is(
    (SELECT count(*)::integer FROM app_jobs.job_history), 3, 'exactly three history rows so far'
);

-- 3. cancel_job on a permanently failed job changes nothing.
SELECT id AS pf FROM app_jobs.add_job(identifier := 'c', max_attempts := 1, run_at := now() - interval '1 hour') \gset
UPDATE app_jobs.jobs SET attempts = 1, last_error = 'gave up' WHERE id = :pf;
INSERT INTO snap SELECT 'pf', to_jsonb(j) FROM app_jobs.jobs AS j WHERE j.id = :pf;
SELECT is(app_jobs.cancel_job(:pf), 'failed', 'cancel_job on a permanently failed job: failed');
SELECT is(
    (SELECT to_jsonb(j) FROM app_jobs.jobs AS j WHERE j.id = :pf),
    (SELECT data FROM snap WHERE label = 'pf'),
    'it is unchanged'
);
SELECT is_empty(
    format('SELECT * FROM app_jobs.job_history WHERE job_id = %s', :pf), 'and gets no history row'
);

-- 4. cancel_job on running jobs: a request the worker acts on.
DELETE FROM app_jobs.jobs;
DELETE FROM app_jobs.job_history;
SELECT id AS r1 FROM app_jobs.add_job(identifier := 'run', queue_name := 'qr', run_at := now() - interval '5 minutes') \gset
SELECT id AS r2 FROM app_jobs.add_job(identifier := 'run', run_at := now() - interval '4 minutes', max_attempts := 1) \gset
SELECT id AS r3 FROM app_jobs.add_job(identifier := 'run', run_at := now() - interval '3 minutes') \gset
SELECT id AS r4 FROM app_jobs.add_job(identifier := 'run', run_at := now() - interval '2 minutes') \gset
SELECT id AS rq FROM app_jobs.add_job(identifier := 'run', queue_name := 'qr', run_at := now() - interval '1 minute') \gset
SELECT is(
    (SELECT array_agg(id ORDER BY id) FROM app_jobs.get_jobs('w1', ARRAY['run'], batch_size := 4)),
    ARRAY[:r1, :r2, :r3, :r4]::bigint[],
    'w1 runs r1 (qr), r2 (last attempt), r3 and r4'
);
SELECT is(app_jobs.cancel_job(:r1), 'cancelling', 'cancel_job on a running job: cancelling');
UPDATE app_jobs.jobs SET cancel_requested_at = now() - interval '10 seconds' WHERE id = :r1;
SELECT is(app_jobs.cancel_job(:r1), 'cancelling', 'asking again: still cancelling');
SELECT is(
    (SELECT row(locked_by, attempts, cancel_requested_at)::text FROM app_jobs.jobs WHERE id = :r1),
    row('w1'::text, 1, now() - interval '10 seconds')::text,
    'the job keeps running; the first request time is kept'
);
SELECT is(app_jobs.cancel_job(:r2), 'cancelling', 'r2 asked to cancel');
SELECT is(app_jobs.cancel_job(:r3), 'cancelling', 'r3 asked to cancel');
SELECT is(app_jobs.cancel_job(:r4), 'cancelling', 'r4 asked to cancel');
SELECT results_eq(
    $$SELECT id, status, cancel_requested FROM app_jobs.job_status ORDER BY id$$,
    format($$VALUES (%s::bigint, 'running'::text, true), (%s, 'running', true), (%s, 'running', true),
                    (%s, 'running', true), (%s, 'waiting', false)$$, :r1, :r2, :r3, :r4, :rq),
    'job_status: the cancel-requested jobs run on, flagged'
);
-- The handler fails (the cancellation interrupted it): cancelled, not retried.
SELECT is((app_jobs.fail_job('w1', :r1, 'CancelledError')).id, :r1::bigint, 'w1 fails r1');
SELECT is((SELECT count(*)::integer FROM app_jobs.jobs WHERE id = :r1), 0, 'r1 is gone, never retried');
SELECT results_eq(
    format($$SELECT status, last_error, worker_id, started_at FROM app_jobs.job_history WHERE job_id = %s$$, :r1),
    $$VALUES ('cancelled'::text, 'CancelledError'::text, 'w1'::text, now())$$,
    'r1''s history: cancelled, with the handler''s error'
);
SELECT results_eq(
    $$SELECT queue_name, job_count, locked_by FROM app_jobs.job_queues$$,
    $$VALUES ('qr'::text, 1, NULL::text)$$,
    'its queue is released and counts rq only'
);
-- In a finish_jobs batch: failed on the last attempt, or cancelled, both end cancelled;
-- a handler that completed before it noticed the request completes.
SELECT bag_eq(
    format($$SELECT job_id, status FROM app_jobs.finish_jobs('w1', '[
        {"id": %s, "attempt": 1, "outcome": "failed", "error": "interrupted"},
        {"id": %s, "attempt": 1, "outcome": "cancelled"},
        {"id": %s, "attempt": 1, "outcome": "completed", "result": 7}]')$$, :r2, :r3, :r4),
    format($$VALUES (%s::bigint, 'cancelled'::text), (%s, 'cancelled'), (%s, 'completed')$$,
           :r2, :r3, :r4),
    'finish_jobs: r2 (failed, last attempt) and r3 are cancelled, r4 completed'
);
SELECT results_eq(
    $$SELECT job_id, status, last_error FROM app_jobs.job_history ORDER BY job_id$$,
    format($$VALUES (%s::bigint, 'cancelled'::text, 'CancelledError'::text),
                    (%s, 'cancelled', 'interrupted'), (%s, 'cancelled', 'cancelled'),
                    (%s, 'completed', NULL)$$, :r1, :r2, :r3, :r4),
    'history: one row each; a cancel without an error message says cancelled'
);
SELECT is_empty(
    format('SELECT * FROM app_jobs.jobs WHERE id IN (%s, %s, %s, %s)', :r1, :r2, :r3, :r4),
    'none of them is left to retry'
);
SELECT results_eq(
    $$SELECT id, status FROM app_jobs.job_status ORDER BY id$$,
    format($$VALUES (%s::bigint, 'cancelled'::text), (%s, 'cancelled'), (%s, 'cancelled'),
                    (%s, 'completed'), (%s, 'waiting')$$, :r1, :r2, :r3, :r4, :rq),
    'job_status shows each of them once, in its final state'
);

-- 5. A cancel-requested job whose worker hands it back (release_jobs at shutdown,
-- unregister_worker, an expired lock) must not run again: "never retried".
DELETE FROM app_jobs.jobs;
SELECT id AS h1 FROM app_jobs.add_job(identifier := 'h', run_at := now() - interval '1 minute') \gset
SELECT is((app_jobs.get_job('w1', ARRAY['h'])).id, :h1::bigint, 'w1 runs h1');
SELECT is(app_jobs.cancel_job(:h1), 'cancelling', 'h1 is asked to cancel');
SELECT lives_ok(
    format('SELECT app_jobs.release_jobs(%L, ARRAY[%s]::bigint[])', 'w1', :h1),
    'w1 shuts down and releases h1 before its handler stopped'
);
SELECT is(
    (SELECT id FROM app_jobs.get_jobs('w2', ARRAY['h'], batch_size := 5)),
    NULL,
    'the released cancel-requested job is not claimed again'
);

SELECT * FROM finish();
ROLLBACK;
