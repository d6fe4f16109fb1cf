-- get_jobs batch claim: batch_size limits, claim order, one job per named queue per batch, task filter, queue locks, batch size bounds, the plain pick never takes a queued job.
BEGIN;
\ir setup.psql
SELECT plan(24);

-- 1. batch_size limits how many unqueued jobs are claimed, best first.
INSERT INTO app_jobs.jobs (task_identifier, priority, run_at)
SELECT 'b' || g, 5 - g, now() - g * interval '1 second'
FROM generate_series(1, 5) AS g;
INSERT INTO app_jobs.jobs (task_identifier, run_at) VALUES ('future', now() + interval '1 minute');

SELECT results_eq(
    $$SELECT task_identifier FROM app_jobs.get_jobs('w1', NULL, '4 hours', 3)$$,
    ARRAY['b5', 'b4', 'b3'],
    'batch of 3 claims the 3 best jobs, in claim order'
);
SELECT is(
    (SELECT count(*)::int FROM app_jobs.jobs WHERE locked_by = 'w1' AND attempts = 1
        AND locked_at = now()),
    3,
    'each is locked by w1 with one attempt'
);
SELECT results_eq(
    $$SELECT task_identifier FROM app_jobs.get_jobs(worker_id := 'w2', batch_size := 10)$$,
    ARRAY['b2', 'b1'],
    'a larger batch claims only what is available (the future job waits)'
);
SELECT is_empty(
    $$SELECT * FROM app_jobs.get_jobs('w3', batch_size := 10)$$,
    'nothing available: an empty set'
);
SELECT results_eq(
    $$SELECT task_identifier FROM app_jobs.get_jobs('w3')$$,
    ARRAY[]::text[],
    'default batch_size with nothing available: empty set'
);

-- 2. One job per named queue per batch.
DELETE FROM app_jobs.jobs;
INSERT INTO app_jobs.jobs (task_identifier, queue_name, run_at)
VALUES
    ('a1', 'qa', now() - interval '6 s'),
    ('a2', 'qa', now() - interval '5 s'),
    ('a3', 'qa', now() - interval '4 s'),
    ('b1', 'qb', now() - interval '3 s'),
    ('n1', NULL, now() - interval '2 s'),
    ('n2', NULL, now() - interval '1 s');
SELECT results_eq(
    $$SELECT task_identifier FROM app_jobs.get_jobs('wq', NULL, '4 hours', 10)$$,
    ARRAY['a1', 'b1', 'n1', 'n2'],
    'a batch takes the first job of each queue and every unqueued job'
);
SELECT set_eq(
    $$SELECT queue_name, locked_by, locked_at FROM app_jobs.job_queues$$,
    $$VALUES ('qa', 'wq', now()), ('qb', 'wq', now())$$,
    'both queues are locked by the batch worker'
);
SELECT is_empty(
    $$SELECT * FROM app_jobs.get_jobs('wq2', batch_size := 10)$$,
    'the remaining qa jobs wait while qa runs'
);
SELECT is(
    (app_jobs.complete_job('wq', (SELECT id FROM app_jobs.jobs WHERE task_identifier = 'a1'))).task_identifier,
    'a1',
    'the batch worker completes a1'
);
SELECT results_eq(
    $$SELECT task_identifier FROM app_jobs.get_jobs('wq2', batch_size := 10)$$,
    ARRAY['a2'],
    'then exactly one more qa job is claimed'
);
SELECT is(
    (SELECT locked_by FROM app_jobs.job_queues WHERE queue_name = 'qa'), 'wq2',
    'qa is now held by wq2'
);

-- 3. A batch never exceeds batch_size and never holds two jobs of one queue.
DELETE FROM app_jobs.jobs;
INSERT INTO app_jobs.jobs (task_identifier, queue_name, run_at)
SELECT 'm', CASE WHEN g % 3 = 0 THEN NULL ELSE 'mq' || (g % 4) END,
    now() - (100 - g) * interval '1 second'
FROM generate_series(1, 40) AS g;
CREATE TEMP TABLE batch AS SELECT * FROM app_jobs.get_jobs('wm', NULL, '4 hours', 7);
SELECT cmp_ok((SELECT count(*)::int FROM batch), '<=', 7, 'batch of 7: at most 7 jobs');
SELECT cmp_ok((SELECT count(*)::int FROM batch), '>=', 1, 'batch of 7: at least one job');
SELECT is(
    (SELECT count(*)::int FROM batch WHERE queue_name IS NOT NULL),
    (SELECT count(DISTINCT queue_name)::int FROM batch),
    'batch of 7: no named queue twice'
);
SELECT is(
    (SELECT count(*)::int FROM batch), (SELECT count(*)::int FROM app_jobs.jobs WHERE locked_by = 'wm'),
    'every returned job, and only those, is locked'
);
SELECT set_eq(
    $$SELECT DISTINCT queue_name FROM batch WHERE queue_name IS NOT NULL$$,
    $$SELECT queue_name FROM app_jobs.job_queues WHERE locked_by = 'wm'$$,
    'exactly the queues of the batch are locked'
);
-- Drain everything in batches: every job is claimed exactly once.
DO $$
DECLARE
    v_n integer;
BEGIN
    LOOP
        -- Finish what was claimed so the queues free up.
        PERFORM app_jobs.complete_job(j.locked_by, j.id)
        FROM app_jobs.jobs AS j WHERE j.locked_by IS NOT NULL;
        INSERT INTO batch SELECT * FROM app_jobs.get_jobs('wm', NULL, '4 hours', 7);
        GET DIAGNOSTICS v_n = ROW_COUNT;
        EXIT WHEN v_n = 0;
    END LOOP;
END;
$$;
SELECT is(
    (SELECT ROW(count(*), count(DISTINCT id))::text FROM batch), ROW(40, 40)::text,
    'draining in batches claims all 40 jobs, each once'
);
SELECT is((SELECT count(*)::int FROM app_jobs.jobs), 0, 'and all were completed');

-- 4. Task filter in a batch.
INSERT INTO app_jobs.jobs (task_identifier) VALUES ('x'), ('y'), ('x'), ('z');
SELECT results_eq(
    $$SELECT task_identifier FROM app_jobs.get_jobs('wf', ARRAY['x', 'z'], '4 hours', 10)$$,
    ARRAY['x', 'x', 'z'],
    'get_jobs honours task_identifiers'
);

-- 5. Named arguments and the batch size bounds.
SELECT lives_ok(
    $$SELECT * FROM app_jobs.get_jobs(
        worker_id := 'wn', task_identifiers := NULL, job_expiry := interval '1 hour',
        batch_size := 10000
    )$$,
    'batch_size 10000 is accepted'
);
SELECT throws_ok(
    format('SELECT * FROM app_jobs.get_jobs(%L, NULL, %L, %s)', 'wb', '4 hours', v.b),
    'PJ006', NULL, format('batch_size %s is rejected with PJ006', v.b)
)
FROM (VALUES ('0'), ('10001')) AS v (b);

-- 6. The plain pick (no queue row exists) takes jobs without a queue only. A queued job
-- committed between its check and its claim is what the row below stands for: its queue
-- row is missing here because the queue-count trigger is switched off for the insert.
DELETE FROM app_jobs.jobs;
DELETE FROM app_jobs.job_queues;
SET LOCAL session_replication_role = replica;
INSERT INTO app_jobs.jobs (task_identifier, queue_name, priority) VALUES ('racy', 'qr', -1);
SET LOCAL session_replication_role = origin;
INSERT INTO app_jobs.jobs (task_identifier) VALUES ('plain');
SELECT results_eq(
    $$SELECT task_identifier FROM app_jobs.get_jobs('wp', NULL, '4 hours', 10)$$,
    ARRAY['plain'],
    'the plain pick leaves a job whose queue it did not lock'
);
SELECT is(
    (SELECT locked_by FROM app_jobs.jobs WHERE task_identifier = 'racy'), NULL,
    'so a queue''s concurrency and lock order hold'
);

SELECT * FROM finish();
ROLLBACK;
