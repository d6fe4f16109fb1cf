-- Tenant fairness: the tenant_fairness setting (off by default, on/off only), get_jobs' order with it off (the seed's: priority, run_at, id) and on (tenants take turns within a priority level, NULL is a tenant, fewer running jobs first on a tie), with the task filter, rate limits and named queues' concurrency kept.
BEGIN;
\ir setup.psql
SELECT plan(14);

-- 1. The setting.
SELECT is(app_jobs.setting('tenant_fairness'), 'off', 'tenant_fairness is off by default');
SELECT throws_ok(
    $$SELECT app_jobs.set_setting('tenant_fairness', 'sometimes')$$, 'PJ014', NULL,
    'tenant_fairness takes on or off only (PJ014)'
);
SELECT is(app_jobs.set_setting('tenant_fairness', 'ON'), 'on', 'set_setting accepts ON, stores on');
SELECT app_jobs.set_setting('tenant_fairness', 'off');

-- Tenant A's 6 jobs are older than tenant B's 3; 2 jobs of no tenant come last.
CREATE TEMP TABLE t (name text, db uuid);
INSERT INTO t VALUES
('a', '00000000-0000-0000-0000-00000000000a'), ('b', '00000000-0000-0000-0000-00000000000b');
INSERT INTO app_jobs.jobs (database_id, task_identifier, run_at)
SELECT t.db, t.name || g, now() - interval '1 hour' + g * interval '1 second' + o.off
FROM t
JOIN (VALUES ('a', interval '0', 6), ('b', interval '10 minutes', 3)) AS o (name, off, n)
    ON t.name = o.name
CROSS JOIN LATERAL generate_series(1, o.n) AS g;
INSERT INTO app_jobs.jobs (task_identifier, run_at)
SELECT 'n' || g, now() - interval '30 minutes' + g * interval '1 second'
FROM generate_series(1, 2) AS g;

-- 2. Off: the seed's order, A's jobs before B's.
SELECT results_eq(
    $$SELECT task_identifier FROM app_jobs.get_jobs('w1', batch_size := 5)$$,
    ARRAY['a1', 'a2', 'a3', 'a4', 'a5'],
    'fairness off: oldest first across tenants (A''s jobs before B''s)'
);
SELECT app_jobs.release_jobs('w1', NULL);
UPDATE app_jobs.jobs SET attempts = 0;

-- 3. On: tenants take turns (A, B, then the NULL tenant: each one's oldest first).
SELECT app_jobs.set_setting('tenant_fairness', 'on');
SELECT results_eq(
    $$SELECT task_identifier FROM app_jobs.get_jobs('w1', batch_size := 7)$$,
    ARRAY['a1', 'b1', 'n1', 'a2', 'b2', 'n2', 'a3'],
    'fairness on: one job of each tenant (NULL is one) in turn'
);
SELECT results_eq(
    $$SELECT task_identifier FROM app_jobs.get_jobs('w2', batch_size := 10)$$,
    ARRAY['b3', 'a4', 'a5', 'a6'],
    'the next claim goes on where that left off; when B runs out, A has the rest'
);
SELECT app_jobs.release_jobs('w1', NULL);
SELECT app_jobs.release_jobs('w2', NULL);
UPDATE app_jobs.jobs SET attempts = 0;

-- 4. One job per claim: the tenant with fewer running jobs goes first.
SELECT is(
    ARRAY(
        SELECT (SELECT j.task_identifier FROM app_jobs.get_jobs('w' || g, batch_size := 1) AS j)
        FROM generate_series(1, 5) AS g
    ),
    ARRAY['a1', 'b1', 'n1', 'a2', 'b2'],
    'claims of one job take turns too (fewer running jobs first)'
);
SELECT app_jobs.release_jobs('w' || g, NULL) FROM generate_series(1, 5) AS g;
UPDATE app_jobs.jobs SET attempts = 0;

-- 5. Priority comes first: B's urgent job before any turn.
UPDATE app_jobs.jobs SET priority = -1 WHERE task_identifier = 'b3';
SELECT results_eq(
    $$SELECT task_identifier FROM app_jobs.get_jobs('w1', batch_size := 3)$$,
    ARRAY['b3', 'a1', 'b1'],
    'priority first: turns are taken within a priority level'
);
SELECT app_jobs.release_jobs('w1', NULL);
UPDATE app_jobs.jobs SET attempts = 0, priority = 0;

-- 6. The task filter.
SELECT results_eq(
    $$SELECT task_identifier FROM app_jobs.get_jobs('w1', ARRAY['a2', 'a3', 'b2'], batch_size := 5)$$,
    ARRAY['a2', 'b2', 'a3'],
    'task_identifiers still filters, in turns'
);
SELECT app_jobs.release_jobs('w1', NULL);
UPDATE app_jobs.jobs SET attempts = 0;

-- 7. Rate limits: a task with no token left is passed over, the others still take turns.
UPDATE app_jobs.jobs SET task_identifier = 'limited' WHERE task_identifier IN ('a1', 'a2', 'b1');
SELECT app_jobs.set_task_settings(
    'limited', rate_limit := 1, rate_interval := '1 hour', rate_burst := 1
);
UPDATE app_jobs.task_settings SET tokens = 1, refilled_at = clock_timestamp()
WHERE task_identifier = 'limited';
SELECT results_eq(
    $$SELECT task_identifier FROM app_jobs.get_jobs('w1', batch_size := 5)$$,
    ARRAY['limited', 'n1', 'b2', 'n2', 'a3'],
    'rate limit: one start of the limited task (A''s, the oldest), then turns of the rest'
);
SELECT is(
    (SELECT count(*)::integer FROM app_jobs.jobs WHERE task_identifier = 'limited' AND locked_by IS NOT NULL),
    1, 'and only one limited job started'
);
SELECT app_jobs.release_jobs('w1', NULL);
DELETE FROM app_jobs.task_settings;
UPDATE app_jobs.jobs SET attempts = 0, task_identifier = 'x' || id WHERE task_identifier = 'limited';

-- 8. Named queues: one at a time unless set otherwise, with fairness on too.
UPDATE app_jobs.jobs SET queue_name = 'q' WHERE database_id = (SELECT db FROM t WHERE name = 'b');
SELECT is(
    (SELECT count(*)::integer FROM app_jobs.get_jobs('w1', batch_size := 20) WHERE queue_name = 'q'),
    1, 'a named queue still runs one job at a time'
);
SELECT is(
    (SELECT count(*)::integer FROM app_jobs.jobs WHERE locked_by = 'w1'),
    9, 'and every other available job was claimed (6 of A, 2 of no tenant, 1 of the queue)'
);
SELECT is(
    (SELECT count(*)::integer FROM app_jobs.get_jobs('w2', batch_size := 20)), 0,
    'the queue''s next job waits for the running one'
);

SELECT * FROM finish();
ROLLBACK;
