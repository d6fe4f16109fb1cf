-- Pausing and resuming schedules: pause_scheduled_job / resume_scheduled_job (paused_at, idempotence, PJ009 for unknown ids), the tick and get_scheduled_job skip paused schedules while run_scheduled_job still runs them, add_scheduled_job keeps a schedule paused, resume starts from the first slot after now() without the missed ones (backfill too), and a tenant can neither pause nor resume another tenant's schedule.
BEGIN;
\ir setup.psql
SELECT plan(30);

SELECT set_config('jwt.claims.database_id', '', TRUE) AS _ \gset
SELECT id AS s_every FROM app_jobs.add_scheduled_job(
    identifier := 'p_every', schedule_info := '{"rule": "*/10 * * * *"}', job_key := 'p_every'
) \gset
SELECT id AS s_backfill FROM app_jobs.add_scheduled_job(
    identifier := 'p_backfill',
    schedule_info := '{"rule": "*/10 * * * *", "backfill": "1 day"}'
) \gset
SELECT id AS s_active FROM app_jobs.add_scheduled_job(
    identifier := 'p_active', schedule_info := '{"rule": "*/10 * * * *"}'
) \gset
-- Every schedule is three hours late.
UPDATE app_jobs.scheduled_jobs
SET next_run_at = date_trunc('hour', now()) - interval '3 hours';

-- Pause.
SELECT is(
    (SELECT paused_at FROM app_jobs.pause_scheduled_job(:s_every)), now(),
    'pause_scheduled_job returns the schedule, paused now'
);
SELECT is(
    (SELECT paused_at FROM app_jobs.scheduled_jobs WHERE id = :s_every), now(),
    'paused_at is stored'
);
UPDATE app_jobs.scheduled_jobs SET paused_at = '2024-01-01 00:00+00' WHERE id = :s_every;
SELECT is(
    (SELECT paused_at FROM app_jobs.pause_scheduled_job(:s_every)),
    '2024-01-01 00:00+00'::timestamptz,
    'pausing a paused schedule keeps its paused_at'
);
SELECT lives_ok(
    format('SELECT app_jobs.pause_scheduled_job(%s)', :s_backfill), 'pause a backfill schedule'
);
SELECT is(
    (SELECT next_run_at FROM app_jobs.scheduled_jobs WHERE id = :s_every),
    date_trunc('hour', now()) - interval '3 hours',
    'pausing leaves next_run_at alone'
);

-- Paused schedules are skipped by the tick, and by get_scheduled_job.
SELECT results_eq(
    $$SELECT task_identifier FROM app_jobs.run_due_scheduled_jobs()$$,
    $$VALUES ('p_active'::text)$$,
    'the tick enqueues only the active schedule'
);
SELECT is(
    (SELECT array_agg(id ORDER BY id) FROM app_jobs.scheduled_jobs
     WHERE next_run_at < now() - interval '2 hours'),
    ARRAY[:s_every, :s_backfill]::bigint[],
    'the paused schedules keep their next_run_at'
);
SELECT is(
    (SELECT id FROM app_jobs.get_scheduled_job('w_pause')), :s_active::bigint,
    'get_scheduled_job hands out the active schedule'
);
SELECT is(
    (SELECT id FROM app_jobs.get_scheduled_job('w_pause')), NULL,
    'get_scheduled_job hands out no paused schedule'
);
SELECT lives_ok($$SELECT app_jobs.release_scheduled_jobs('w_pause')$$, 'release them');

-- Run now still works on a paused schedule; rewriting it keeps it paused.
SELECT is(
    (SELECT task_identifier FROM app_jobs.run_scheduled_job(:s_every)), 'p_every',
    'run_scheduled_job runs a paused schedule on demand'
);
SELECT is(
    (SELECT paused_at FROM app_jobs.add_scheduled_job(
        identifier := 'p_every', schedule_info := '{"rule": "*/5 * * * *"}', job_key := 'p_every'
    )),
    '2024-01-01 00:00+00'::timestamptz,
    'add_scheduled_job with its key rewrites the schedule and keeps it paused'
);
SELECT is(
    (SELECT count(*)::integer FROM app_jobs.run_due_scheduled_jobs(now() + interval '1 hour')
     WHERE task_identifier IN ('p_every', 'p_backfill')),
    0,
    'an hour later the tick still enqueues nothing for them'
);

-- Resume: the first slot after now(); the missed ones are not enqueued, backfill or not.
SELECT is(
    (SELECT ARRAY[paused_at IS NULL, next_run_at = app_jobs.schedule_next_run(schedule_info, now())]
     FROM app_jobs.resume_scheduled_job(:s_every)),
    ARRAY[TRUE, TRUE],
    'resume_scheduled_job clears paused_at and returns the next slot after now()'
);
SELECT lives_ok(
    format('SELECT app_jobs.resume_scheduled_job(%s)', :s_backfill), 'resume the backfill one'
);
SELECT ok(
    (SELECT bool_and(next_run_at > now()) FROM app_jobs.scheduled_jobs
     WHERE id IN (:s_every, :s_backfill)),
    'both next runs are in the future'
);
SELECT is(
    (SELECT count(*)::integer FROM app_jobs.run_due_scheduled_jobs()
     WHERE task_identifier IN ('p_every', 'p_backfill')),
    0,
    'a tick right after resuming enqueues none of the slots missed while paused'
);
SELECT is(
    (SELECT array_agg(task_identifier ORDER BY task_identifier)
     FROM app_jobs.run_due_scheduled_jobs(
         app_jobs.schedule_next_run('{"rule": "*/10 * * * *"}', now())
     )
     WHERE task_identifier IN ('p_every', 'p_backfill')),
    ARRAY['p_backfill', 'p_every'],
    'at their next slot both run again'
);
SELECT is(
    (SELECT count(*)::integer FROM app_jobs.jobs WHERE task_identifier = 'p_backfill'),
    1,
    'the backfill schedule enqueued that one slot only'
);
UPDATE app_jobs.scheduled_jobs SET next_run_at = '2030-01-01 00:00+00' WHERE id = :s_active;
SELECT is(
    (SELECT ARRAY[paused_at, next_run_at] FROM app_jobs.resume_scheduled_job(:s_active)),
    ARRAY[NULL, '2030-01-01 00:00+00']::timestamptz[],
    'resuming an active schedule changes nothing'
);

-- Unknown ids.
SELECT throws_ok(
    'SELECT app_jobs.pause_scheduled_job(-1)', 'PJ009', 'scheduled job -1 does not exist',
    'pause: unknown id is PJ009'
);
SELECT throws_ok(
    'SELECT app_jobs.resume_scheduled_job(NULL)', 'PJ009', NULL,
    'resume: NULL id is PJ009'
);

-- Tenants: pgjobs_enqueue acts on its own tenant's schedules only.
SELECT id AS s_a FROM app_jobs.add_scheduled_job(
    db_id := '00000000-0000-0000-0000-0000000000a1', identifier := 'p_tenant_a',
    schedule_info := '{"rule": "@daily"}'
) \gset
SELECT id AS s_b FROM app_jobs.add_scheduled_job(
    db_id := '00000000-0000-0000-0000-0000000000b2', identifier := 'p_tenant_b',
    schedule_info := '{"rule": "@daily"}'
) \gset
SELECT id AS s_b_paused FROM app_jobs.add_scheduled_job(
    db_id := '00000000-0000-0000-0000-0000000000b2', identifier := 'p_tenant_b2',
    schedule_info := '{"rule": "@daily"}'
) \gset
SELECT app_jobs.pause_scheduled_job(:s_b_paused) IS NOT NULL AS _ \gset

SET LOCAL ROLE pgjobs_enqueue;
SELECT set_config('jwt.claims.database_id', '00000000-0000-0000-0000-0000000000a1', TRUE) AS _ \gset
SELECT isnt(
    (SELECT paused_at FROM app_jobs.pause_scheduled_job(:s_a)), NULL,
    'a tenant pauses its own schedule'
);
SELECT is(
    (SELECT paused_at FROM app_jobs.resume_scheduled_job(:s_a)), NULL,
    'and resumes it'
);
SELECT throws_ok(
    format('SELECT app_jobs.pause_scheduled_job(%s)', :s_b), 'PJ009', NULL,
    'another tenant''s schedule looks missing to pause'
);
SELECT throws_ok(
    format('SELECT app_jobs.resume_scheduled_job(%s)', :s_b_paused), 'PJ009', NULL,
    'and to resume'
);
SELECT set_config('jwt.claims.database_id', '', TRUE) AS _ \gset
SELECT throws_ok(
    format('SELECT app_jobs.pause_scheduled_job(%s)', :s_a), 'PJ009', NULL,
    'without a claim no schedule can be paused'
);
RESET ROLE;
SELECT results_eq(
    format(
        'SELECT id, paused_at IS NOT NULL FROM app_jobs.scheduled_jobs WHERE id IN (%s, %s, %s) '
        || 'ORDER BY id',
        :s_a, :s_b, :s_b_paused
    ),
    format('VALUES (%s::bigint, FALSE), (%s, FALSE), (%s, TRUE)', :s_a, :s_b, :s_b_paused),
    'the other tenant''s schedules are as they were'
);

SET LOCAL ROLE pgjobs_enqueue_any;
SELECT isnt(
    (SELECT paused_at FROM app_jobs.pause_scheduled_job(:s_b)), NULL,
    'pgjobs_enqueue_any pauses any tenant''s schedule'
);
RESET ROLE;
SET LOCAL ROLE pgjobs_admin;
SELECT is(
    (SELECT paused_at FROM app_jobs.resume_scheduled_job(:s_b)), NULL,
    'pgjobs_admin resumes any tenant''s schedule'
);
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
