-- get_job: claim order (priority asc, run_at, id), task_identifiers filter, future run_at, claimed row contents, named-queue serialization, expired-lock reclaim (default, NULL and custom job_expiry; the job_expiry setting as the default, for claims and admin functions, PJ014 for bad values).
BEGIN;
\ir setup.psql
SELECT plan(65);

CREATE TEMP TABLE claimed (n serial, task text, id bigint);

-- 1. Order: lower priority first, then earlier run_at, then lower id.
-- Inserted in an order that differs from the claim order.
INSERT INTO app_jobs.jobs (task_identifier, priority, run_at)
SELECT t, p, now() - r
FROM (VALUES
    ('p0_1m', 0, interval '1 minute'),
    ('p10_1h', 10, interval '1 hour'),
    ('p0_2m_a', 0, interval '2 minutes'),
    ('p5_10h', 5, interval '10 hours'),
    ('pneg_1s', -5, interval '1 second'),
    ('p0_2m_b', 0, interval '2 minutes'),
    ('p0_now', 0, interval '0'),
    ('p5_10h_b', 5, interval '10 hours')
) AS v (t, p, r)
ORDER BY random();
-- Same priority and run_at: the lower id goes first, whatever the insert order above.
UPDATE app_jobs.jobs AS j SET task_identifier = s.t
FROM (
    SELECT id, CASE row_number() OVER (ORDER BY id) WHEN 1 THEN 'p0_2m_a' ELSE 'p0_2m_b' END AS t
    FROM app_jobs.jobs WHERE task_identifier LIKE 'p0_2m_%'
) AS s
WHERE j.id = s.id;
UPDATE app_jobs.jobs AS j SET task_identifier = s.t
FROM (
    SELECT id, CASE row_number() OVER (ORDER BY id) WHEN 1 THEN 'p5_10h' ELSE 'p5_10h_b' END AS t
    FROM app_jobs.jobs WHERE task_identifier LIKE 'p5_10h%'
) AS s
WHERE j.id = s.id;

DO $$
BEGIN
    FOR i IN 1..9 LOOP
        INSERT INTO claimed (task, id)
        SELECT g.task_identifier, g.id FROM app_jobs.get_job('w_order') AS g;
    END LOOP;
END;
$$;
SELECT results_eq(
    'SELECT task FROM claimed ORDER BY n',
    ARRAY[
        'pneg_1s', 'p0_2m_a', 'p0_2m_b', 'p0_1m', 'p0_now', 'p5_10h', 'p5_10h_b',
        'p10_1h', NULL
    ],
    'claim order: priority ascending, then run_at, then id; then a row of NULLs'
);
SELECT ok(
    (SELECT bool_and(id IS NULL) FROM claimed WHERE n = 9),
    'nothing left: get_job returns a row whose id is NULL'
);
SELECT ok(
    app_jobs.get_job('w_order') IS NULL, 'nothing left: every column of the row is NULL'
);

-- 2. The claimed row.
DELETE FROM app_jobs.jobs;
SELECT id AS c1 FROM app_jobs.add_job(identifier := 'one', run_at := now() - interval '1 minute') \gset
SELECT to_jsonb(g) AS got FROM app_jobs.get_job(worker_id := 'w_row') AS g \gset
SELECT is(
    (SELECT to_jsonb(j) FROM app_jobs.jobs AS j WHERE j.id = :c1), :'got'::jsonb,
    'get_job returns the claimed row as stored'
);
SELECT is(
    (SELECT ROW(attempts, locked_by, locked_at, is_available, updated_at)::text
     FROM app_jobs.jobs WHERE id = :c1),
    ROW(1, 'w_row', now(), false, now())::text,
    'claim: attempts 1, locked_by/locked_at set, no longer available, updated_at touched'
);
SELECT ok(
    app_jobs.get_job('w_row2') IS NULL, 'a locked job is not claimed by another worker'
);
SELECT ok(
    app_jobs.get_job('w_row') IS NULL, 'nor again by the same worker'
);

-- 3. task_identifiers filter.
DELETE FROM app_jobs.jobs;
INSERT INTO app_jobs.jobs (task_identifier, run_at)
VALUES ('ta', now() - interval '3 s'), ('tb', now() - interval '2 s'), ('tc', now() - interval '1 s'),
       ('td', now());
SELECT is(
    (app_jobs.get_job('w', task_identifiers := v.filter)).task_identifier, v.expected,
    format('filter %s claims %s', coalesce(v.filter::text, 'NULL'), coalesce(v.expected, 'nothing'))
)
FROM (VALUES
    (1, ARRAY['tb'], 'tb'),
    (2, ARRAY['zz'], NULL),
    (3, ARRAY[]::text[], NULL),
    (4, ARRAY['zz', 'tc'], 'tc'),
    (5, NULL, 'ta'),
    (6, ARRAY['ta', 'tb', 'tc'], NULL),
    (7, NULL::text[], 'td'),
    (8, NULL::text[], NULL)
) AS v (n, filter, expected)
ORDER BY v.n;

-- 4. run_at in the future is not claimed; run_at = now() is.
DELETE FROM app_jobs.jobs;
SELECT id AS f1 FROM app_jobs.add_job(identifier := 'later', run_at := now() + interval '1 second') \gset
SELECT id AS f2 FROM app_jobs.add_job(identifier := 'much_later', run_at := now() + interval '1 year', priority := -100) \gset
SELECT ok(app_jobs.get_job('w_f') IS NULL, 'jobs whose run_at is in the future are not claimed');
SELECT is(
    (SELECT count(*)::int FROM app_jobs.jobs WHERE locked_by IS NOT NULL OR attempts > 0), 0,
    'and are left untouched'
);
UPDATE app_jobs.jobs SET run_at = now() WHERE id = :f1;
SELECT is((app_jobs.get_job('w_f')).id, :f1::bigint, 'run_at = now() is due');
SELECT ok(app_jobs.get_job('w_f') IS NULL, 'the far-future job, despite its priority, still waits');

-- 5. Named queues run one job at a time.
DELETE FROM app_jobs.jobs;
SELECT id AS q1 FROM app_jobs.add_job(identifier := 'qj', queue_name := 'q1', run_at := now() - interval '4 s') \gset
SELECT id AS q2 FROM app_jobs.add_job(identifier := 'qj', queue_name := 'q1', run_at := now() - interval '3 s') \gset
SELECT id AS q3 FROM app_jobs.add_job(identifier := 'qj', queue_name := 'q2', run_at := now() - interval '2 s') \gset
SELECT id AS q4 FROM app_jobs.add_job(identifier := 'qj', run_at := now() - interval '1 s') \gset
SELECT is((app_jobs.get_job('w1')).id, :q1::bigint, 'w1 claims the first job of q1');
SELECT is(
    (SELECT ROW(locked_by, locked_at)::text FROM app_jobs.job_queues WHERE queue_name = 'q1'),
    ROW('w1', now())::text,
    'q1 is locked by w1'
);
SELECT is(
    (app_jobs.get_job('w2')).id, :q3::bigint, 'w2 skips the second job of locked q1, takes q2'
);
SELECT is((app_jobs.get_job('w3')).id, :q4::bigint, 'w3 takes the job without a queue');
SELECT ok(app_jobs.get_job('w4') IS NULL, 'w4: the second q1 job waits for the first');
UPDATE app_jobs.jobs SET priority = -100 WHERE id = :q2;
SELECT ok(app_jobs.get_job('w4') IS NULL, 'even with the best priority');
SELECT ok(app_jobs.get_job('w1') IS NULL, 'even for the worker that holds the queue');
SELECT is((app_jobs.complete_job('w1', :q1)).id, :q1::bigint, 'w1 completes the first q1 job');
SELECT is(
    (SELECT ROW(job_count, locked_by, locked_at)::text FROM app_jobs.job_queues WHERE queue_name = 'q1'),
    ROW(1, NULL::text, NULL::timestamptz)::text,
    'q1 is unlocked and counts one job'
);
SELECT is((app_jobs.get_job('w4')).id, :q2::bigint, 'now w4 claims the second q1 job');
SELECT is(
    (SELECT locked_by FROM app_jobs.job_queues WHERE queue_name = 'q1'), 'w4', 'q1 is locked by w4'
);
SELECT is((app_jobs.fail_job('w4', :q2, 'err')).id, :q2::bigint, 'w4 fails it');
SELECT is(
    (SELECT locked_by FROM app_jobs.job_queues WHERE queue_name = 'q1'), NULL,
    'failing unlocks the queue'
);
UPDATE app_jobs.jobs SET run_at = now() WHERE id = :q2;
SELECT is(
    (app_jobs.get_job('w5')).id, :q2::bigint, 'after the failure the q1 job can be claimed again'
);
SELECT is((SELECT attempts FROM app_jobs.jobs WHERE id = :q2), 2, 'it is on its second attempt');
-- A queue whose job another (live) session runs, with a second job waiting.
DELETE FROM app_jobs.jobs;
SELECT id AS q4 FROM app_jobs.add_job(identifier := 'qj', queue_name := 'q3') \gset
SELECT id AS q5 FROM app_jobs.add_job(identifier := 'qj', queue_name := 'q3') \gset
SELECT is((app_jobs.get_job('other')).id, :q4::bigint, 'another session runs the first q3 job');
UPDATE app_jobs.jobs SET locked_at = now() - interval '1 hour' WHERE id = :q4;
SELECT ok(app_jobs.get_job('w6') IS NULL, 'a queue whose job runs blocks its other jobs');
UPDATE app_jobs.jobs SET locked_at = now() - interval '5 hours' WHERE id = :q4;
SELECT is(
    (app_jobs.get_job('w6')).id, :q4::bigint,
    'a run older than job_expiry no longer blocks: its job is freed and claimed again first'
);
SELECT is(
    (SELECT ROW(locked_by, locked_at, running_count)::text
     FROM app_jobs.job_queues WHERE queue_name = 'q3'),
    ROW('w6', now(), 1)::text,
    'and the queue is taken over by the new worker'
);

-- 6. Expired locks are reclaimed.
DELETE FROM app_jobs.jobs;
SELECT id AS e1 FROM app_jobs.add_job(identifier := 'exp', run_at := now() - interval '6 hours') \gset
SELECT is((app_jobs.get_job('w_dead')).id, :e1::bigint, 'w_dead claims the job');
UPDATE app_jobs.jobs SET locked_at = now() - interval '3 hours 59 minutes' WHERE id = :e1;
SELECT ok(app_jobs.get_job('w_new') IS NULL, 'a lock younger than 4 hours is respected');
SELECT is(
    (SELECT locked_by FROM app_jobs.jobs WHERE id = :e1), 'w_dead', 'and left in place'
);
UPDATE app_jobs.jobs SET locked_at = now() - interval '5 hours' WHERE id = :e1;
SELECT is(
    (app_jobs.get_job('w_new')).id, :e1::bigint,
    'a lock older than the default 4 hours expiry is reclaimed'
);
SELECT is(
    (SELECT ROW(attempts, locked_by, locked_at)::text FROM app_jobs.jobs WHERE id = :e1),
    ROW(2, 'w_new', now())::text,
    'reclaimed: attempts counted again, new lock'
);
SELECT ok(
    app_jobs.complete_job('w_dead', :e1) IS NULL,
    'the presumed-dead worker can no longer complete it'
);
SELECT is(
    (SELECT locked_by FROM app_jobs.jobs WHERE id = :e1), 'w_new', 'the job stays with w_new'
);
-- job_expiry NULL means the default.
UPDATE app_jobs.jobs SET locked_at = now() - interval '3 hours' WHERE id = :e1;
SELECT ok(
    app_jobs.get_job('w_null', NULL, NULL) IS NULL, 'job_expiry NULL: a 3 hour old lock holds'
);
UPDATE app_jobs.jobs SET locked_at = now() - interval '5 hours' WHERE id = :e1;
SELECT is(
    (app_jobs.get_job('w_null', NULL, NULL)).id, :e1::bigint,
    'job_expiry NULL: a 5 hour old lock expires'
);
-- Custom job_expiry.
UPDATE app_jobs.jobs SET locked_at = now() - interval '30 minutes' WHERE id = :e1;
SELECT ok(
    app_jobs.get_job('w_c', job_expiry := interval '1 hour') IS NULL,
    'job_expiry 1 hour: a 30 minute old lock holds'
);
SELECT is(
    (app_jobs.get_job('w_c', job_expiry := interval '10 minutes')).id, :e1::bigint,
    'job_expiry 10 minutes: a 30 minute old lock expires'
);
SELECT is(
    (SELECT ROW(attempts, locked_by)::text FROM app_jobs.jobs WHERE id = :e1),
    ROW(4, 'w_c')::text,
    'each reclaim counts an attempt'
);
-- The job_expiry setting is the default (NULL or omitted job_expiry); an explicit
-- job_expiry still wins. Bad values are refused (PJ014).
SELECT is(app_jobs.setting('job_expiry'), '4 hours', 'job_expiry defaults to 4 hours');
SELECT is(app_jobs.set_setting('job_expiry', '20 minutes'), '00:20:00', 'job_expiry set');
UPDATE app_jobs.jobs SET locked_at = now() - interval '30 minutes' WHERE id = :e1;
SELECT ok(
    app_jobs.get_job('w_s', job_expiry := interval '1 hour') IS NULL,
    'setting 20 minutes, job_expiry 1 hour: a 30 minute old lock holds'
);
SELECT is(
    (app_jobs.get_job('w_s')).id, :e1::bigint,
    'setting 20 minutes, no job_expiry: a 30 minute old lock expires'
);
UPDATE app_jobs.jobs SET locked_at = now() - interval '30 minutes' WHERE id = :e1;
SELECT is(
    (SELECT array_agg(id) FROM app_jobs.complete_jobs(ARRAY[:e1::bigint])), ARRAY[:e1::bigint],
    'admin functions follow the setting too: the 30 minute old lock counts as free'
);
SELECT throws_ok(
    format($$SELECT app_jobs.set_setting('job_expiry', %L)$$, v), 'PJ014', NULL,
    format('job_expiry %s refused', v)
)
FROM unnest(ARRAY['0', '-1 hour', 'soon', '200 years']) AS v;
DELETE FROM app_jobs.settings;
-- Expired lock on a queued job: job and queue are taken over; the queue's next job waits.
DELETE FROM app_jobs.jobs;
SELECT id AS e2 FROM app_jobs.add_job(identifier := 'exp', queue_name := 'qe', run_at := now() - interval '2 s') \gset
SELECT id AS e3 FROM app_jobs.add_job(identifier := 'exp', queue_name := 'qe', run_at := now() - interval '1 s') \gset
SELECT is((app_jobs.get_job('w_dead')).id, :e2::bigint, 'w_dead claims the first qe job');
UPDATE app_jobs.jobs SET locked_at = now() - interval '5 hours' WHERE id = :e2;
UPDATE app_jobs.job_queues SET locked_at = now() - interval '5 hours' WHERE queue_name = 'qe';
SELECT is(
    (app_jobs.get_job('w_new')).id, :e2::bigint, 'the expired queued job is reclaimed first'
);
SELECT ok(app_jobs.get_job('w_other') IS NULL, 'the next qe job still waits for it');
-- Expired lock on a job that has used its last attempt: not reclaimed.
DELETE FROM app_jobs.jobs;
SELECT id AS e4 FROM app_jobs.add_job(identifier := 'exp', max_attempts := 1) \gset
SELECT is((app_jobs.get_job('w_dead')).id, :e4::bigint, 'last attempt claimed');
UPDATE app_jobs.jobs SET locked_at = now() - interval '5 hours' WHERE id = :e4;
SELECT ok(app_jobs.get_job('w_new') IS NULL, 'an expired job without attempts left is not reclaimed');
SELECT is(
    (SELECT ROW(attempts, locked_by)::text FROM app_jobs.jobs WHERE id = :e4),
    ROW(1, 'w_dead')::text,
    'and is left as it was'
);

SELECT * FROM finish();
ROLLBACK;
