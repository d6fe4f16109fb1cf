-- complete_job and fail_job: owner only (wrong worker/unclaimed/missing job change nothing), queue release, backoff growth exp(least(attempts, 10)) s after greatest(now, run_at), permanent failure at max_attempts.
BEGIN;
\ir setup.psql
SELECT plan(53);

-- 1. complete_job.
SELECT id AS c1 FROM app_jobs.add_job(identifier := 'c', queue_name := 'qc', run_at := now() - interval '2 s') \gset
SELECT id AS c2 FROM app_jobs.add_job(identifier := 'c', queue_name := 'qc', run_at := now() - interval '1 s') \gset
SELECT is((app_jobs.get_job('w1', ARRAY['c'])).id, :c1::bigint, 'w1 claims c1');
INSERT INTO snap SELECT 'c', jsonb_agg(to_jsonb(j) ORDER BY j.id) FROM app_jobs.jobs AS j;
INSERT INTO snap SELECT 'cq', jsonb_agg(to_jsonb(q) ORDER BY q.queue_name) FROM app_jobs.job_queues AS q;

SELECT ok(app_jobs.complete_job(v.w, v.id) IS NULL, format('complete_job: %s returns a row of NULLs', v.what))
FROM (VALUES
    ('wrong worker', 'w2', :c1::bigint),
    ('job not claimed', 'w1', :c2::bigint),
    ('missing job', 'w1', -1::bigint),
    ('NULL job id', 'w1', NULL::bigint)
) AS v (what, w, id);
SELECT is(
    (SELECT jsonb_agg(to_jsonb(j) ORDER BY j.id) FROM app_jobs.jobs AS j),
    (SELECT data FROM snap WHERE label = 'c'),
    'those complete_job calls changed no job'
);
SELECT is(
    (SELECT jsonb_agg(to_jsonb(q) ORDER BY q.queue_name) FROM app_jobs.job_queues AS q),
    (SELECT data FROM snap WHERE label = 'cq'),
    'nor any queue (qc still locked by w1)'
);

SELECT to_jsonb(r) AS done FROM app_jobs.complete_job(worker_id := 'w1', job_id := :c1) AS r \gset
SELECT is(
    :'done'::jsonb,
    (SELECT data -> 0 FROM snap WHERE label = 'c'),
    'complete_job returns the job as it was'
);
SELECT is((SELECT count(*)::int FROM app_jobs.jobs WHERE id = :c1), 0, 'the completed job is deleted');
SELECT is(
    (SELECT ROW(job_count, locked_by, locked_at)::text FROM app_jobs.job_queues WHERE queue_name = 'qc'),
    ROW(1, NULL::text, NULL::timestamptz)::text,
    'its queue is released and counts the remaining job'
);
SELECT is((app_jobs.get_job('w2', ARRAY['c'])).id, :c2::bigint, 'the next queue job is claimed');
SELECT is((app_jobs.complete_job('w2', :c2)).id, :c2::bigint, 'and completed');
SELECT is(
    (SELECT count(*)::int FROM app_jobs.job_queues WHERE queue_name = 'qc'), 0,
    'the empty queue row is removed'
);
SELECT ok(app_jobs.complete_job('w2', :c2) IS NULL, 'completing twice: second call returns NULLs');

-- 2. fail_job: wrong worker etc. change nothing.
DELETE FROM app_jobs.jobs;
DELETE FROM snap;
SELECT id AS f1 FROM app_jobs.add_job(identifier := 'f', queue_name := 'qf', run_at := now() - interval '1 minute') \gset
SELECT id AS f2 FROM app_jobs.add_job(identifier := 'f2', run_at := now() - interval '1 minute') \gset
SELECT is((app_jobs.get_job('w1', ARRAY['f'])).id, :f1::bigint, 'w1 claims f1');
INSERT INTO snap SELECT 'f', jsonb_agg(to_jsonb(j) ORDER BY j.id) FROM app_jobs.jobs AS j;
INSERT INTO snap SELECT 'fq', jsonb_agg(to_jsonb(q) ORDER BY q.queue_name) FROM app_jobs.job_queues AS q;
SELECT ok(app_jobs.fail_job(v.w, v.id, 'nope') IS NULL, format('fail_job: %s returns a row of NULLs', v.what))
FROM (VALUES
    ('wrong worker', 'w2', :f1::bigint),
    ('job not claimed', 'w1', :f2::bigint),
    ('missing job', 'w1', -1::bigint),
    ('NULL job id', 'w1', NULL::bigint)
) AS v (what, w, id);
SELECT is(
    (SELECT jsonb_agg(to_jsonb(j) ORDER BY j.id) FROM app_jobs.jobs AS j),
    (SELECT data FROM snap WHERE label = 'f'),
    'those fail_job calls changed no job'
);
SELECT is(
    (SELECT jsonb_agg(to_jsonb(q) ORDER BY q.queue_name) FROM app_jobs.job_queues AS q),
    (SELECT data FROM snap WHERE label = 'fq'),
    'nor any queue'
);

-- The owner fails it.
SELECT to_jsonb(r) AS failed FROM app_jobs.fail_job(
    worker_id := 'w1', job_id := :f1, error_message := 'Connection timeout'
) AS r \gset
SELECT is(
    :'failed'::jsonb, (SELECT to_jsonb(j) FROM app_jobs.jobs AS j WHERE j.id = :f1),
    'fail_job returns the updated row'
);
SELECT is(
    (SELECT ROW(attempts, last_error, locked_by, locked_at, is_available, run_at)::text
     FROM app_jobs.jobs WHERE id = :f1),
    ROW(1, 'Connection timeout', NULL::text, NULL::timestamptz, true,
        now() + exp(1) * interval '1 second')::text,
    'failed: error recorded, unlocked, available, run_at = now() + e^1 seconds'
);
SELECT is(
    (SELECT ROW(job_count, locked_by, locked_at)::text FROM app_jobs.job_queues WHERE queue_name = 'qf'),
    ROW(1, NULL::text, NULL::timestamptz)::text,
    'failing releases the queue and keeps the job counted'
);
SELECT ok(app_jobs.get_job('w3', ARRAY['f']) IS NULL, 'the failed job waits for its backoff');
UPDATE app_jobs.jobs SET run_at = now() WHERE id = :f1;
SELECT is((app_jobs.get_job('w3', ARRAY['f'])).id, :f1::bigint, 'then it is retried');
SELECT is(
    (app_jobs.fail_job('w3', :f1)).last_error, NULL,
    'error_message defaults to NULL and replaces the previous error'
);

-- 3. Backoff growth: attempts 1..12, delay exp(least(attempts, 10)) seconds after now().
DELETE FROM app_jobs.jobs;
CREATE TEMP TABLE backoff (attempt integer, delay interval);
SELECT id AS b1 FROM app_jobs.add_job(identifier := 'b', max_attempts := 20) \gset
DO $$
DECLARE
    v_job app_jobs.jobs;
BEGIN
    FOR i IN 1..12 LOOP
        UPDATE app_jobs.jobs SET run_at = now() - interval '1 hour' WHERE task_identifier = 'b';
        v_job := app_jobs.get_job('wb', ARRAY['b']);
        v_job := app_jobs.fail_job('wb', v_job.id, 'attempt ' || i);
        INSERT INTO backoff VALUES (v_job.attempts, v_job.run_at - now());
    END LOOP;
END;
$$;
SELECT is(
    b.delay, exp(least(b.attempt, 10)) * interval '1 second',
    format('attempt %s: run_at pushed back by exp(%s) seconds (%s)', b.attempt,
        least(b.attempt, 10), b.delay)
)
FROM backoff AS b ORDER BY b.attempt;
SELECT results_eq(
    'SELECT attempt FROM backoff ORDER BY attempt',
    'SELECT generate_series(1, 12)',
    'each claim counted one attempt'
);
-- A run_at already in the future is the base of the backoff (greatest(now(), run_at)).
SELECT is((app_jobs.get_job('wb2', ARRAY['b'], interval '4 hours')).id, NULL, 'not due yet');
UPDATE app_jobs.jobs SET run_at = now() WHERE id = :b1;
SELECT is((app_jobs.get_job('wb2', ARRAY['b'])).attempts, 13, 'claimed for attempt 13');
UPDATE app_jobs.jobs SET run_at = now() + interval '1 day' WHERE id = :b1;
SELECT is(
    (app_jobs.fail_job('wb2', :b1, 'x')).run_at,
    now() + interval '1 day' + exp(10) * interval '1 second',
    'backoff counts from run_at when run_at is later than now()'
);

-- 4. Permanent failure at max_attempts.
DELETE FROM app_jobs.jobs;
SELECT id AS p1 FROM app_jobs.add_job(identifier := 'p', queue_name := 'qp', max_attempts := 3) \gset
DO $$
DECLARE
    v_job app_jobs.jobs;
BEGIN
    FOR i IN 1..3 LOOP
        UPDATE app_jobs.jobs SET run_at = now() - interval '1 hour' WHERE task_identifier = 'p';
        v_job := app_jobs.get_job('wp', ARRAY['p']);
        PERFORM app_jobs.fail_job('wp', v_job.id, 'failure ' || i);
    END LOOP;
END;
$$;
SELECT is(
    (SELECT ROW(attempts, max_attempts, last_error, locked_by, is_available)::text
     FROM app_jobs.jobs WHERE id = :p1),
    ROW(3, 3, 'failure 3', NULL::text, false)::text,
    'after max_attempts failures the job stays, unavailable, with its last error'
);
SELECT is(
    (SELECT job_count FROM app_jobs.job_queues WHERE queue_name = 'qp'), 1,
    'it still counts in its queue'
);
UPDATE app_jobs.jobs SET run_at = now() - interval '1 day' WHERE id = :p1;
SELECT ok(app_jobs.get_job('wp2') IS NULL, 'get_job never claims it again');
SELECT ok(
    app_jobs.get_job('wp2', ARRAY['p'], interval '1 microsecond') IS NULL,
    'not even with a tiny job_expiry'
);
SELECT is_empty(
    $$SELECT * FROM app_jobs.get_jobs('wp2', NULL, '4 hours', 100)$$,
    'nor does get_jobs'
);
SELECT is(
    (SELECT attempts FROM app_jobs.jobs WHERE id = :p1), 3, 'attempts stay at max_attempts'
);
-- A job with a single attempt fails for good at once, and completing on the last attempt works.
SELECT id AS p2 FROM app_jobs.add_job(identifier := 'p1x', max_attempts := 1) \gset
SELECT is((app_jobs.get_job('wq', ARRAY['p1x'])).id, :p2::bigint, 'single-attempt job claimed');
SELECT is(
    (app_jobs.fail_job('wq', :p2, 'once')).is_available, false,
    'one failure and it is done'
);
SELECT id AS p3 FROM app_jobs.add_job(identifier := 'p1y', max_attempts := 1) \gset
SELECT is((app_jobs.get_job('wq', ARRAY['p1y'])).id, :p3::bigint, 'another single-attempt job');
SELECT is((app_jobs.complete_job('wq', :p3)).id, :p3::bigint, 'completes on its only attempt');

SELECT * FROM finish();
ROLLBACK;
