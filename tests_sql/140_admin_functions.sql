-- Management functions: complete_jobs, permanently_fail_jobs, reschedule_jobs, remove_job, release_jobs (all or job_ids), force_unlock_workers (live locks skipped, expired locks treated as free, queues and counts).
BEGIN;
\ir setup.psql
SELECT plan(63);

CREATE TEMP TABLE ids (name text PRIMARY KEY, id bigint);

-- Fixture: a job in each state. Rebuilt by this function for each section.
CREATE FUNCTION pg_temp.fixture() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM app_jobs.jobs;
    DELETE FROM ids;
    INSERT INTO ids SELECT 'waiting', (app_jobs.add_job(identifier := 'waiting', job_key := 'k_wait', queue_name := 'qa', run_at := now() - interval '5 s')).id;
    INSERT INTO ids SELECT 'waiting2', (app_jobs.add_job(identifier := 'waiting2', queue_name := 'qa', run_at := now() - interval '4 s')).id;
    INSERT INTO ids SELECT 'running', (app_jobs.add_job(identifier := 'running', job_key := 'k_run', queue_name := 'qr', max_attempts := 6, run_at := now() - interval '3 s')).id;
    INSERT INTO ids SELECT 'expired', (app_jobs.add_job(identifier := 'expired', job_key := 'k_exp', run_at := now() - interval '2 s')).id;
    INSERT INTO ids SELECT 'failed', (app_jobs.add_job(identifier := 'failed', max_attempts := 2, run_at := now() - interval '1 s')).id;
    PERFORM app_jobs.get_job('w_live', ARRAY['running']);
    PERFORM app_jobs.get_job('w_dead', ARRAY['expired']);
    UPDATE app_jobs.jobs SET locked_at = now() - interval '5 hours' WHERE task_identifier = 'expired';
    UPDATE app_jobs.jobs SET attempts = 2, last_error = 'old' WHERE task_identifier = 'failed';
END;
$$;
CREATE FUNCTION pg_temp.ids(VARIADIC p_names text[]) RETURNS bigint[] LANGUAGE sql AS $$
    SELECT array_agg(id ORDER BY id) FROM ids WHERE name = ANY(p_names);
$$;
CREATE FUNCTION pg_temp.id(p_name text) RETURNS bigint LANGUAGE sql AS $$
    SELECT id FROM ids WHERE name = p_name;
$$;

-- 1. complete_jobs.
SELECT pg_temp.fixture() AS _ \gset
SELECT set_eq(
    $$SELECT task_identifier FROM app_jobs.complete_jobs(
        pg_temp.ids('waiting', 'running', 'expired', 'failed') || ARRAY[-1::bigint])$$,
    ARRAY['waiting', 'expired', 'failed'],
    'complete_jobs deletes waiting, expired-lock and failed jobs, skips the live one, returns them'
);
SELECT set_eq(
    'SELECT task_identifier FROM app_jobs.jobs',
    ARRAY['waiting2', 'running'],
    'only the live and the unlisted job remain'
);
SELECT is(
    (SELECT job_count FROM app_jobs.job_queues WHERE queue_name = 'qa'), 1,
    'queue counts follow the deletions'
);
SELECT is_empty('SELECT * FROM app_jobs.complete_jobs(ARRAY[]::bigint[])', 'empty array: nothing');
SELECT is_empty('SELECT * FROM app_jobs.complete_jobs(NULL)', 'NULL: nothing');
SELECT is((SELECT count(*)::int FROM app_jobs.jobs), 2, 'still two jobs');

-- 2. permanently_fail_jobs.
SELECT pg_temp.fixture() AS _ \gset
SELECT set_eq(
    $$SELECT id FROM app_jobs.permanently_fail_jobs(pg_temp.ids('waiting', 'running', 'expired'))$$,
    pg_temp.ids('waiting', 'expired'),
    'permanently_fail_jobs returns the jobs it failed, skipping the live one'
);
SELECT set_eq(
    $$SELECT task_identifier, attempts = max_attempts, last_error FROM app_jobs.jobs
      WHERE task_identifier IN ('waiting', 'expired')$$,
    $$VALUES ('waiting', true, 'Manually marked as failed'),
             ('expired', true, 'Manually marked as failed')$$,
    'default message, attempts = max_attempts'
);
SELECT is(
    (SELECT ROW(attempts, last_error, locked_by)::text FROM app_jobs.jobs WHERE id = pg_temp.id('running')),
    ROW(1, NULL::text, 'w_live')::text,
    'the live job is untouched'
);
SELECT is(
    (app_jobs.permanently_fail_jobs(ARRAY[pg_temp.id('waiting2')], 'stop it')).last_error,
    'stop it',
    'custom error message'
);
SELECT ok(
    app_jobs.get_job('w_x', ARRAY['waiting', 'waiting2'], interval '1 microsecond') IS NULL,
    'permanently failed jobs are never claimed'
);
SELECT is(
    (SELECT count(*)::int FROM app_jobs.jobs), 5, 'they stay in the table'
);

-- 3. reschedule_jobs: each argument alone, NULL keeps the value; live jobs skipped.
SELECT pg_temp.fixture() AS _ \gset
INSERT INTO snap SELECT 'r', to_jsonb(j) FROM app_jobs.jobs AS j WHERE id = pg_temp.id('waiting');
SELECT is(
    (SELECT ROW(run_at, priority, attempts, max_attempts)::text FROM app_jobs.reschedule_jobs(
        ARRAY[pg_temp.id('waiting')], run_at := v.run_at, priority := v.priority,
        attempts := v.attempts, max_attempts := v.max_attempts)),
    v.expected,
    format('reschedule_jobs %s', v.what)
)
FROM (VALUES
    (1, 'with nothing changes nothing', NULL::timestamptz, NULL::int, NULL::int, NULL::int,
     ROW(now() - interval '5 s', 0, 0, 25)::text),
    (2, 'run_at only', '2030-01-01 00:00:00+00', NULL, NULL, NULL,
     ROW('2030-01-01 00:00:00+00'::timestamptz, 0, 0, 25)::text),
    (3, 'priority only', NULL, -3, NULL, NULL,
     ROW('2030-01-01 00:00:00+00'::timestamptz, -3, 0, 25)::text),
    (4, 'attempts only', NULL, NULL, 4, NULL,
     ROW('2030-01-01 00:00:00+00'::timestamptz, -3, 4, 25)::text),
    (5, 'max_attempts only', NULL, NULL, NULL, 9,
     ROW('2030-01-01 00:00:00+00'::timestamptz, -3, 4, 9)::text),
    (6, 'all at once', now() - interval '1 day', 7, 0, 2,
     ROW(now() - interval '1 day', 7, 0, 2)::text)
) AS v (n, what, run_at, priority, attempts, max_attempts, expected)
ORDER BY v.n;
SELECT is(
    (SELECT to_jsonb(j) - '{run_at,priority,max_attempts,updated_at}'::text[]
     FROM app_jobs.jobs AS j WHERE id = pg_temp.id('waiting')),
    (SELECT data - '{run_at,priority,max_attempts,updated_at}'::text[] FROM snap WHERE label = 'r'),
    'reschedule_jobs touched no other column'
);
SELECT is_empty(
    $$SELECT * FROM app_jobs.reschedule_jobs(ARRAY[pg_temp.id('running')], run_at := now() + interval '1 day')$$,
    'a live job is not rescheduled'
);
SELECT is(
    (SELECT run_at FROM app_jobs.jobs WHERE id = pg_temp.id('running')), now() - interval '3 s',
    'its run_at is unchanged'
);
SELECT is(
    (SELECT count(*)::int FROM app_jobs.reschedule_jobs(
        pg_temp.ids('failed', 'expired'), attempts := 0, run_at := now())),
    2,
    'failed and expired-lock jobs are rescheduled'
);
SELECT is(
    (SELECT is_available FROM app_jobs.jobs WHERE id = pg_temp.id('failed')), true,
    'resetting attempts revives a failed job'
);
SELECT throws_ok(
    format('SELECT * FROM app_jobs.reschedule_jobs(ARRAY[%s], max_attempts := 0)', pg_temp.id('waiting')),
    'PJ004', NULL, 'reschedule_jobs max_attempts 0 raises PJ004'
);
SELECT is(
    (SELECT max_attempts FROM app_jobs.jobs WHERE id = pg_temp.id('waiting')), 2,
    'and changes nothing'
);

-- 4. remove_job.
SELECT pg_temp.fixture() AS _ \gset
SELECT is(
    (app_jobs.remove_job('k_wait')).id, pg_temp.id('waiting'), 'remove_job returns the waiting job'
);
SELECT is((SELECT count(*)::int FROM app_jobs.jobs WHERE id = pg_temp.id('waiting')), 0, 'and deletes it');
SELECT is(
    (SELECT job_count FROM app_jobs.job_queues WHERE queue_name = 'qa'), 1, 'its queue count drops'
);
SELECT is(
    (app_jobs.remove_job(job_key := 'k_run')).id, pg_temp.id('running'),
    'remove_job returns the running job'
);
SELECT is(
    (SELECT ROW(key, attempts, max_attempts, locked_by)::text FROM app_jobs.jobs WHERE id = pg_temp.id('running')),
    ROW(NULL::text, 1, 1, 'w_live')::text,
    'running job: kept and locked, key removed, max_attempts = its attempts (no retry; its '
    || 'worker''s claim, fenced by the attempt, still counts)'
);
SELECT is(
    (app_jobs.fail_job('w_live', pg_temp.id('running'), 'x')).is_available, false,
    'so when it fails it is not retried'
);
SELECT isnt(
    (app_jobs.add_job(identifier := 'running', job_key := 'k_run')).id, pg_temp.id('running'),
    'its key is free for a new job'
);
SELECT is(
    (app_jobs.remove_job('k_exp')).id, pg_temp.id('expired'), 'a job with an expired lock'
);
SELECT is((SELECT count(*)::int FROM app_jobs.jobs WHERE id = pg_temp.id('expired')), 0, 'is deleted');
SELECT count(*) AS before_rm FROM app_jobs.jobs \gset
SELECT ok(app_jobs.remove_job('no_such_key') IS NULL, 'unknown key: a row of NULLs');
SELECT ok(app_jobs.remove_job(NULL) IS NULL, 'NULL key: a row of NULLs');
SELECT is((SELECT count(*) FROM app_jobs.jobs), :before_rm::bigint, 'and nothing removed');

-- 5. release_jobs: the attempt is refunded and the queue unlocked.
SELECT pg_temp.fixture() AS _ \gset
SELECT is((app_jobs.get_job('w_live', ARRAY['waiting'])).id, pg_temp.id('waiting'), 'w_live also takes waiting');
UPDATE app_jobs.jobs SET attempts = 3 WHERE id = pg_temp.id('running');
SELECT id AS other FROM app_jobs.add_job(identifier := 'other', queue_name := 'qo') \gset
SELECT is((app_jobs.get_job('w_other', ARRAY['other'])).id, :other::bigint, 'w_other holds another job');
INSERT INTO snap SELECT 'other', to_jsonb(j) FROM app_jobs.jobs AS j WHERE id = :other;
SELECT lives_ok($$SELECT app_jobs.release_jobs(worker_id := 'w_live')$$, 'release_jobs runs');
SELECT set_eq(
    $$SELECT task_identifier, attempts, locked_by, locked_at FROM app_jobs.jobs
      WHERE task_identifier IN ('waiting', 'running')$$,
    $$VALUES ('waiting', 0, NULL::text, NULL::timestamptz), ('running', 2, NULL, NULL)$$,
    'released jobs are unlocked, each attempt refunded'
);
SELECT set_eq(
    'SELECT queue_name, locked_by FROM app_jobs.job_queues',
    $$VALUES ('qa', NULL::text), ('qr', NULL), ('qo', 'w_other')$$,
    'its queues are unlocked, other workers keep theirs'
);
SELECT is(
    (SELECT to_jsonb(j) FROM app_jobs.jobs AS j WHERE id = :other),
    (SELECT data FROM snap WHERE label = 'other'),
    'another worker''s job is untouched'
);
SELECT is(
    (app_jobs.get_job('w_next', ARRAY['waiting'])).id, pg_temp.id('waiting'),
    'a released job can be claimed at once'
);
UPDATE app_jobs.jobs SET attempts = 0 WHERE id = pg_temp.id('waiting');
SELECT app_jobs.release_jobs('w_next') IS NULL AS _ \gset
SELECT is(
    (SELECT attempts FROM app_jobs.jobs WHERE id = pg_temp.id('waiting')), 0,
    'attempts never go below zero'
);
SELECT lives_ok($$SELECT app_jobs.release_jobs('nobody')$$, 'releasing a worker that holds nothing is fine');

-- 5b. release_jobs with job_ids: only those jobs, and only their queues.
SELECT pg_temp.fixture() AS _ \gset
SELECT is((app_jobs.get_job('w_live', ARRAY['waiting'])).id, pg_temp.id('waiting'), 'w_live holds waiting (qa) and running (qr)');
INSERT INTO snap SELECT 'rel0', jsonb_agg(to_jsonb(j) ORDER BY id) FROM app_jobs.jobs AS j;
SELECT lives_ok(
    format('SELECT app_jobs.release_jobs(%L, %L::bigint[])', v.w, v.ids),
    format('release_jobs(%s, %s) runs', v.w, v.ids)
)
FROM (VALUES
    (1, 'w_live', '{}'),
    (2, 'w_live', format('{%s,-1}', pg_temp.id('expired'))),
    (3, 'w_other', format('{%s}', pg_temp.id('waiting')))
) AS v (n, w, ids)
ORDER BY v.n;
SELECT is(
    (SELECT jsonb_agg(to_jsonb(j) ORDER BY id) FROM app_jobs.jobs AS j),
    (SELECT data FROM snap WHERE label = 'rel0'),
    'an empty list, another worker''s job or a missing id release nothing'
);
SELECT lives_ok(
    format('SELECT app_jobs.release_jobs(worker_id := %L, job_ids := ARRAY[%s]::bigint[])',
        'w_live', pg_temp.id('waiting')),
    'release one job by id'
);
SELECT set_eq(
    $$SELECT task_identifier, attempts, locked_by FROM app_jobs.jobs
      WHERE task_identifier IN ('waiting', 'running')$$,
    $$VALUES ('waiting', 0, NULL::text), ('running', 1, 'w_live')$$,
    'only that job is released (attempt refunded); the other stays locked'
);
SELECT set_eq(
    'SELECT queue_name, locked_by FROM app_jobs.job_queues',
    $$VALUES ('qa', NULL::text), ('qr', 'w_live')$$,
    'only the released job''s queue is unlocked'
);
SELECT lives_ok(
    $$SELECT app_jobs.release_jobs('w_live', job_ids := NULL)$$, 'job_ids NULL releases the rest'
);
SELECT is(
    (SELECT count(*)::int FROM app_jobs.jobs WHERE locked_by = 'w_live')
    + (SELECT count(*)::int FROM app_jobs.job_queues WHERE locked_by = 'w_live'),
    0,
    'w_live holds nothing any more'
);

-- 6. force_unlock_workers: attempts unchanged.
SELECT pg_temp.fixture() AS _ \gset
SELECT is((app_jobs.get_job('w_third', ARRAY['waiting'])).id, pg_temp.id('waiting'), 'w_third takes waiting');
SELECT lives_ok(
    $$SELECT app_jobs.force_unlock_workers(worker_ids := ARRAY['w_live', 'w_dead'])$$,
    'force_unlock_workers runs'
);
SELECT set_eq(
    $$SELECT task_identifier, attempts, locked_by FROM app_jobs.jobs
      WHERE task_identifier IN ('running', 'expired', 'waiting')$$,
    $$VALUES ('running', 1, NULL::text), ('expired', 1, NULL), ('waiting', 1, 'w_third')$$,
    'the given workers'' jobs are unlocked with attempts unchanged; others stay locked'
);
SELECT set_eq(
    'SELECT queue_name, locked_by FROM app_jobs.job_queues',
    $$VALUES ('qa', 'w_third'), ('qr', NULL)$$,
    'their queues are unlocked'
);
INSERT INTO snap SELECT 'fu', jsonb_agg(to_jsonb(j) ORDER BY id) FROM app_jobs.jobs AS j;
SELECT lives_ok($$SELECT app_jobs.force_unlock_workers(NULL)$$, 'NULL list is fine');
SELECT lives_ok($$SELECT app_jobs.force_unlock_workers(ARRAY[]::text[])$$, 'empty list is fine');
SELECT is(
    (SELECT jsonb_agg(to_jsonb(j) ORDER BY id) FROM app_jobs.jobs AS j),
    (SELECT data FROM snap WHERE label = 'fu'),
    'and they change nothing'
);

SELECT * FROM finish();
ROLLBACK;
