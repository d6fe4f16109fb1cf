-- add_bundle: PJ026 on bad specs (nothing created), bundle and jobs created atomically, counts as jobs complete / fail for good / are cancelled, stops exactly once with the right outcome, follow-up job enqueued once with the documented payload, origin carried to jobs/history/follow-up, ignored enqueues.
BEGIN;
\ir setup.psql
SELECT plan(98);

-- A bundle's counters and state in one comparable string.
CREATE FUNCTION pg_temp.bundle(p_id bigint) RETURNS text LANGUAGE sql AS $$
    SELECT format(
        'jobs=%s completed=%s failed=%s cancelled=%s outcome=%s stopped=%s',
        b.job_count, b.completed_count, b.failed_count, b.cancelled_count,
        coalesce(b.outcome, '-'), (b.stopped_at IS NOT NULL)::text
    )
    FROM app_jobs.job_bundles AS b WHERE b.id = p_id;
$$;
-- The SQLSTATE a statement raises (NULL when it succeeds); its effects are undone.
CREATE FUNCTION pg_temp.sqlstate_of(p_sql text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE p_sql;
    RAISE EXCEPTION 'no error' USING ERRCODE = 'ZZ000';
EXCEPTION WHEN OTHERS THEN
    RETURN nullif(SQLSTATE, 'ZZ000');
END;
$$;
-- Claim a job for a worker by id (only that job is available to the claim: its task).
CREATE FUNCTION pg_temp.claim(p_worker text, p_id bigint) RETURNS bigint LANGUAGE sql AS $$
    UPDATE app_jobs.jobs SET run_at = now() - interval '1 second' WHERE id = p_id;
    SELECT (app_jobs.get_job(
        p_worker, ARRAY[(SELECT task_identifier FROM app_jobs.jobs WHERE id = p_id)]
    )).id;
$$;

-- 1. Bad specs: PJ026, nothing created.
SELECT throws_ok(
    format('SELECT app_jobs.add_bundle(%L, %L::jsonb, followup := %L::jsonb)', v.bt, v.jobs, v.fu),
    'PJ026', NULL, 'PJ026: ' || v.what
)
FROM (VALUES
    ('jobs NULL', 'bt', NULL, NULL),
    ('jobs an object', 'bt', '{"identifier": "a"}', NULL),
    ('jobs a string', 'bt', '"a"', NULL),
    ('jobs an empty array', 'bt', '[]', NULL),
    ('a spec that is a number', 'bt', '[{"identifier": "a"}, 3]', NULL),
    ('a spec that is null', 'bt', '[null]', NULL),
    ('a spec without identifier', 'bt', '[{"identifier": "a"}, {"payload": {}}]', NULL),
    ('an identifier that is a number', 'bt', '[{"identifier": 1}]', NULL),
    ('an identifier that is null', 'bt', '[{"identifier": null}]', NULL),
    ('a spec with job_key', 'bt', '[{"identifier": "a"}, {"identifier": "b", "job_key": "k"}]', NULL),
    ('a spec with depends_on', 'bt', '[{"identifier": "a", "depends_on": [1]}]', NULL),
    ('followup an array', 'bt', '[{"identifier": "a"}]', '[]'),
    ('followup a string', 'bt', '[{"identifier": "a"}]', '"f"'),
    ('followup without identifier', 'bt', '[{"identifier": "a"}]', '{"payload": {}}'),
    ('followup identifier a number', 'bt', '[{"identifier": "a"}]', '{"identifier": 5}'),
    ('bundle_type NULL', NULL, '[{"identifier": "a"}]', NULL),
    ('bundle_type empty', '', '[{"identifier": "a"}]', NULL),
    ('bundle_type of 127 characters', repeat('t', 127), '[{"identifier": "a"}]', NULL)
) AS v (what, bt, jobs, fu);
-- A spec add_job refuses half-way through: the whole call fails.
SELECT throws_ok(
    $$SELECT app_jobs.add_bundle('bt', '[{"identifier": "a"}, {"identifier": "b", "max_attempts": 0}]')$$,
    'PJ004', NULL, 'a spec add_job refuses (max_attempts 0) fails the whole bundle'
);
SELECT is_empty($$SELECT * FROM app_jobs.job_bundles$$, 'refused bundles create no bundle');
SELECT is_empty($$SELECT * FROM app_jobs.jobs$$, 'and no job');
SELECT lives_ok(
    format($$SELECT app_jobs.add_bundle(%L, '[{"identifier": "a"}]')$$, repeat('t', 126)),
    'bundle_type of 126 characters is accepted'
);
DELETE FROM app_jobs.jobs;
DELETE FROM app_jobs.job_bundles;

-- 2. A bundle of four jobs with a follow-up.
SELECT id AS b1 FROM app_jobs.add_bundle(
    bundle_type := 'import',
    jobs := '[
        {"identifier": "imp_a", "payload": {"n": 1}, "max_attempts": 1, "priority": 2},
        {"identifier": "imp_b", "payload": {"n": 2}, "max_attempts": 1, "queue_name": "bq"},
        {"identifier": "imp_c", "timeout": "30 seconds"},
        {"identifier": "imp_d", "max_attempts": 2, "origin": "own-origin"}
    ]',
    origin := 'crm:42',
    followup := '{"identifier": "import_done", "payload": {"k": [1, 2]}, "queue_name": "fq",
                  "priority": 5, "max_attempts": 3}',
    db_id := 'bbbbbbbb-0000-0000-0000-000000000001'
) \gset
SELECT is(
    (SELECT to_jsonb(b) - 'id' - 'created_at' FROM app_jobs.job_bundles AS b WHERE b.id = :b1),
    jsonb_build_object(
        'database_id', 'bbbbbbbb-0000-0000-0000-000000000001', 'bundle_type', 'import',
        'origin', 'crm:42', 'job_count', 4, 'completed_count', 0, 'failed_count', 0,
        'cancelled_count', 0,
        'followup', '{"identifier": "import_done", "payload": {"k": [1, 2]}, "queue_name": "fq",
                      "priority": 5, "max_attempts": 3}'::jsonb,
        'followup_job_id', NULL, 'outcome', NULL, 'stopped_at', NULL
    ),
    'the bundle row: type, origin, database, job_count 4, counters 0, follow-up spec, not stopped'
);
SELECT is(
    (SELECT created_at FROM app_jobs.job_bundles WHERE id = :b1), now(), 'created now'
);
SELECT id AS ja FROM app_jobs.jobs WHERE task_identifier = 'imp_a' \gset
SELECT id AS jb FROM app_jobs.jobs WHERE task_identifier = 'imp_b' \gset
SELECT id AS jc FROM app_jobs.jobs WHERE task_identifier = 'imp_c' \gset
SELECT id AS jd FROM app_jobs.jobs WHERE task_identifier = 'imp_d' \gset
SELECT results_eq(
    $$SELECT task_identifier, payload::text, queue_name, priority, max_attempts, timeout,
             origin, database_id::text
      FROM app_jobs.jobs ORDER BY id$$,
    $$VALUES
        ('imp_a', '{"n": 1}', NULL, 2, 1, NULL::interval, 'crm:42',
         'bbbbbbbb-0000-0000-0000-000000000001'),
        ('imp_b', '{"n": 2}', 'bq', 0, 1, NULL, 'crm:42', 'bbbbbbbb-0000-0000-0000-000000000001'),
        ('imp_c', '{}', NULL, 0, 25, interval '30 seconds', 'crm:42',
         'bbbbbbbb-0000-0000-0000-000000000001'),
        ('imp_d', '{}', NULL, 0, 2, NULL, 'own-origin', 'bbbbbbbb-0000-0000-0000-000000000001')$$,
    'one job per spec, in order, with its fields; the bundle origin unless the spec has its own'
);
SELECT is(
    (SELECT array_agg(DISTINCT bundle_id) FROM app_jobs.jobs), ARRAY[:b1]::bigint[],
    'every job belongs to the bundle'
);
SELECT is(
    (SELECT count(*)::integer FROM app_jobs.job_status WHERE bundle_id = :b1 AND status = 'waiting'),
    4, 'job_status shows the four waiting jobs with their bundle_id'
);
SELECT is(
    (SELECT job_count FROM app_jobs.job_queues WHERE queue_name = 'bq'), 1,
    'the queued spec is counted in its queue'
);

-- 3. Counting: completed, failed for good, cancelled; a retryable failure counts nothing.
SELECT is(pg_temp.claim('w1', :ja), :ja::bigint, 'w1 claims imp_a');
SELECT is((app_jobs.complete_job('w1', :ja)).id, :ja::bigint, 'and completes it');
SELECT is(
    pg_temp.bundle(:b1), 'jobs=4 completed=1 failed=0 cancelled=0 outcome=- stopped=false',
    'a completed job counts as completed'
);
SELECT is(pg_temp.claim('w1', :jb), :jb::bigint, 'w1 claims imp_b (max_attempts 1)');
SELECT is((app_jobs.fail_job('w1', :jb, 'bad row')).attempts, 1, 'and fails it for good');
SELECT is(
    pg_temp.bundle(:b1), 'jobs=4 completed=1 failed=1 cancelled=0 outcome=- stopped=false',
    'a job failed for good counts as failed'
);
SELECT is(app_jobs.cancel_job(:jc), 'cancelled', 'imp_c is cancelled while waiting');
SELECT is(
    pg_temp.bundle(:b1), 'jobs=4 completed=1 failed=1 cancelled=1 outcome=- stopped=false',
    'a cancelled job counts as cancelled'
);
SELECT is(app_jobs.cancel_job(:jc), NULL, 'cancelling it again finds no job');
SELECT is(
    pg_temp.bundle(:b1), 'jobs=4 completed=1 failed=1 cancelled=1 outcome=- stopped=false',
    'and counts nothing more'
);
SELECT is(pg_temp.claim('w1', :jd), :jd::bigint, 'w1 claims imp_d (max_attempts 2)');
SELECT is((app_jobs.fail_job('w1', :jd, 'first try')).attempts, 1, 'its first attempt fails');
SELECT is(
    pg_temp.bundle(:b1), 'jobs=4 completed=1 failed=1 cancelled=1 outcome=- stopped=false',
    'a failure that will be retried counts nothing'
);
SELECT is(
    (SELECT count(*)::integer FROM app_jobs.jobs WHERE task_identifier = 'import_done'), 0,
    'no follow-up yet'
);

-- 4. The last job stops the bundle: outcome failed, follow-up enqueued with the payload.
SELECT is(pg_temp.claim('w1', :jd), :jd::bigint, 'w1 claims imp_d again');
SELECT is((app_jobs.fail_job('w1', :jd, 'second try')).attempts, 2, 'and it fails for good');
SELECT is(
    pg_temp.bundle(:b1), 'jobs=4 completed=1 failed=2 cancelled=1 outcome=failed stopped=true',
    'every job stopped: the bundle stops, outcome failed (not all completed)'
);
SELECT is((SELECT stopped_at FROM app_jobs.job_bundles WHERE id = :b1), now(), 'stopped now');
SELECT is(
    (SELECT count(*)::integer FROM app_jobs.jobs WHERE task_identifier = 'import_done'), 1,
    'one follow-up job is enqueued'
);
SELECT id AS fu1 FROM app_jobs.jobs WHERE task_identifier = 'import_done' \gset
SELECT is(
    (SELECT followup_job_id FROM app_jobs.job_bundles WHERE id = :b1), :fu1::bigint,
    'the bundle records the follow-up job id'
);
SELECT is(
    (SELECT payload::jsonb FROM app_jobs.jobs WHERE id = :fu1),
    jsonb_build_object(
        'bundle_id', :b1, 'bundle_type', 'import', 'outcome', 'failed', 'completed', 1,
        'failed', 2, 'cancelled', 1, 'payload', '{"k": [1, 2]}'::jsonb
    ),
    'follow-up payload: bundle_id, bundle_type, outcome, the counts and the follow-up''s payload'
);
SELECT is(
    (SELECT ROW(queue_name, priority, max_attempts, origin, bundle_id, database_id, blocked_by)::text
     FROM app_jobs.jobs WHERE id = :fu1),
    ROW('fq', 5, 3, 'crm:42', NULL::bigint, 'bbbbbbbb-0000-0000-0000-000000000001'::uuid, 0)::text,
    'follow-up: its queue, priority, max_attempts, the bundle''s origin and database, no bundle'
);
SELECT results_eq(
    $$SELECT job_id, status, origin, bundle_id FROM app_jobs.job_history ORDER BY job_id$$,
    format(
        $$VALUES (%s::bigint, 'completed', 'crm:42', %s::bigint), (%s, 'failed', 'crm:42', %s),
                 (%s, 'cancelled', 'crm:42', %s), (%s, 'failed', 'own-origin', %s)$$,
        :ja, :b1, :jb, :b1, :jc, :b1, :jd, :b1
    ),
    'history keeps each job''s final state with its origin and bundle_id'
);
SELECT results_eq(
    format($$SELECT status, origin, bundle_id FROM app_jobs.job_status WHERE id IN (%s, %s)
             ORDER BY id$$, :ja, :jb),
    format($$VALUES ('completed', 'crm:42', %s::bigint), ('failed', 'crm:42', %s)$$, :b1, :b1),
    'job_status shows origin and bundle_id of finished bundle jobs'
);

-- 5. Stopped exactly once: later events change nothing and add no second follow-up.
SELECT is((app_jobs.retry_job(:jb)).attempts, 0, 'the failed imp_b is retried by hand');
SELECT is(pg_temp.claim('w1', :jb), :jb::bigint, 'claimed');
SELECT is((app_jobs.complete_job('w1', :jb)).id, :jb::bigint, 'and completed');
SELECT lives_ok(
    format($$SELECT app_jobs._bundle_job_stopped(%s, 'completed')$$, :b1),
    'a stray bundle_job_stopped on a stopped bundle is harmless'
);
SELECT is(
    pg_temp.bundle(:b1), 'jobs=4 completed=1 failed=2 cancelled=1 outcome=failed stopped=true',
    'a stopped bundle''s counters and outcome no longer change'
);
SELECT is(
    (SELECT count(*)::integer FROM app_jobs.jobs WHERE task_identifier = 'import_done'), 1,
    'still exactly one follow-up job'
);
SELECT is(
    (SELECT followup_job_id FROM app_jobs.job_bundles WHERE id = :b1), :fu1::bigint,
    'the recorded follow-up is unchanged'
);

-- 6. All completed: outcome completed; no follow-up spec, no follow-up job.
SELECT count(*) AS jobs_before FROM app_jobs.jobs \gset
SELECT id AS b2 FROM app_jobs.add_bundle(
    'pair', '[{"identifier": "ok_1"}, {"identifier": "ok_2", "queue_name": "bq2"}]'
) \gset
SELECT is(pg_temp.bundle(:b2), 'jobs=2 completed=0 failed=0 cancelled=0 outcome=- stopped=false',
    'a bundle without origin or follow-up');
SELECT is(
    (SELECT array_agg(origin) FROM app_jobs.jobs WHERE bundle_id = :b2), ARRAY[NULL, NULL]::text[],
    'its jobs have no origin'
);
SELECT is(
    (SELECT count(*)::integer FROM app_jobs.get_jobs('w2', ARRAY['ok_1', 'ok_2'], batch_size := 5)),
    2, 'w2 claims both'
);
SELECT is(
    (SELECT array_agg(status ORDER BY job_id) FROM app_jobs.finish_jobs('w2', format(
        '[{"id": %s, "attempt": 1}, {"id": %s, "attempt": 1}]',
        (SELECT id FROM app_jobs.jobs WHERE task_identifier = 'ok_1'),
        (SELECT id FROM app_jobs.jobs WHERE task_identifier = 'ok_2'))::jsonb)),
    ARRAY['completed', 'completed'],
    'and completes both in one batch'
);
SELECT is(pg_temp.bundle(:b2), 'jobs=2 completed=2 failed=0 cancelled=0 outcome=completed stopped=true',
    'all completed: outcome completed');
SELECT is(
    (SELECT followup_job_id FROM app_jobs.job_bundles WHERE id = :b2), NULL,
    'no follow-up spec: no follow-up job id'
);
SELECT is((SELECT count(*) FROM app_jobs.jobs), :jobs_before::bigint, 'and no job was added');

-- A completed bundle's follow-up without a payload of its own.
SELECT id AS b3 FROM app_jobs.add_bundle(
    'single', '[{"identifier": "one"}]', 'orig-3', '{"identifier": "after_single"}'
) \gset
SELECT is(pg_temp.claim('w3', (SELECT id FROM app_jobs.jobs WHERE bundle_id = :b3)),
    (SELECT id FROM app_jobs.jobs WHERE bundle_id = :b3), 'w3 claims the one job');
SELECT is(
    (app_jobs.complete_job('w3', (SELECT id FROM app_jobs.jobs WHERE bundle_id = :b3))).task_identifier,
    'one', 'and completes it'
);
SELECT is(
    (SELECT payload::jsonb FROM app_jobs.jobs WHERE task_identifier = 'after_single'),
    jsonb_build_object(
        'bundle_id', :b3, 'bundle_type', 'single', 'outcome', 'completed', 'completed', 1,
        'failed', 0, 'cancelled', 0, 'payload', NULL
    ),
    'follow-up of an all-completed bundle: outcome completed, payload null when the spec has none'
);
SELECT is(
    (SELECT ROW(queue_name, priority, max_attempts, origin)::text
     FROM app_jobs.jobs WHERE task_identifier = 'after_single'),
    ROW(NULL::text, 0, 25, 'orig-3')::text,
    'its defaults: no queue, priority 0, 25 attempts; the bundle''s origin'
);

-- 7. A running job cancelled: counted when its worker reports back, as cancelled.
SELECT id AS b4 FROM app_jobs.add_bundle('cancel', '[{"identifier": "run_1"}, {"identifier": "run_2"}]') \gset
SELECT id AS r1 FROM app_jobs.jobs WHERE task_identifier = 'run_1' \gset
SELECT id AS r2 FROM app_jobs.jobs WHERE task_identifier = 'run_2' \gset
SELECT is(pg_temp.claim('w4', :r1), :r1::bigint, 'w4 claims run_1');
SELECT is(app_jobs.cancel_job(:r1), 'cancelling', 'cancelling it asks its worker to stop');
SELECT is(pg_temp.bundle(:b4), 'jobs=2 completed=0 failed=0 cancelled=0 outcome=- stopped=false',
    'nothing counted while it still runs');
SELECT is((app_jobs.fail_job('w4', :r1, 'interrupted')).id, :r1::bigint, 'the worker reports a failure');
SELECT is(pg_temp.bundle(:b4), 'jobs=2 completed=0 failed=0 cancelled=1 outcome=- stopped=false',
    'it counts as cancelled (never retried)');
SELECT is(app_jobs.cancel_job(:r2), 'cancelled', 'the other job is cancelled while waiting');
SELECT is(pg_temp.bundle(:b4), 'jobs=2 completed=0 failed=0 cancelled=2 outcome=failed stopped=true',
    'all cancelled: the bundle stops, outcome failed');

-- A job of a bundle cancelled because a job it depends on failed counts as cancelled.
SELECT id AS b5 FROM app_jobs.add_bundle('deps', '[{"identifier": "dep_src", "max_attempts": 1}]') \gset
SELECT id AS src FROM app_jobs.jobs WHERE bundle_id = :b5 \gset
SELECT id AS dep FROM app_jobs.add_job(identifier := 'dep_after', depends_on := ARRAY[:src]::bigint[]) \gset
SELECT is(pg_temp.claim('w5', :src), :src::bigint, 'w5 claims a bundle job another job depends on');
SELECT is((app_jobs.fail_job('w5', :src)).attempts, 1, 'it fails for good');
SELECT is(pg_temp.bundle(:b5), 'jobs=1 completed=0 failed=1 cancelled=0 outcome=failed stopped=true',
    'the bundle stops failed');
SELECT is(
    (SELECT status FROM app_jobs.job_status WHERE id = :dep), 'cancelled',
    'and the job outside the bundle that depended on it is cancelled'
);

-- 8. Ignored enqueues: the bundle holds only the jobs really enqueued.
SELECT set_config('pgjobs.ignore_enqueues', 'skipped,skipped_followup', TRUE) AS _ \gset
SELECT id AS b6 FROM app_jobs.add_bundle(
    'partial',
    '[{"identifier": "kept_1"}, {"identifier": "skipped"}, {"identifier": "kept_2"},
      {"identifier": "skipped"}]',
    followup := '{"identifier": "partial_done"}'
) \gset
SELECT is(pg_temp.bundle(:b6), 'jobs=2 completed=0 failed=0 cancelled=0 outcome=- stopped=false',
    'ignored specs are not counted in job_count');
SELECT is(
    (SELECT array_agg(task_identifier ORDER BY id) FROM app_jobs.jobs WHERE bundle_id = :b6),
    ARRAY['kept_1', 'kept_2'], 'only the kept tasks have jobs'
);
SELECT is(
    (SELECT count(*)::integer FROM app_jobs.jobs WHERE task_identifier = 'skipped'), 0,
    'no job of the ignored task exists'
);
SELECT is(
    (SELECT count(*)::integer FROM app_jobs.get_jobs('w6', ARRAY['kept_1', 'kept_2'], batch_size := 5)),
    2, 'w6 claims the two kept jobs'
);
SELECT is(
    (SELECT count(*)::integer FROM app_jobs.jobs AS j, app_jobs.complete_job('w6', j.id) AS c
     WHERE j.bundle_id = :b6),
    2, 'and completes them'
);
SELECT is(pg_temp.bundle(:b6), 'jobs=2 completed=2 failed=0 cancelled=0 outcome=completed stopped=true',
    'the bundle stops once the enqueued jobs did: outcome completed');
SELECT is(
    (SELECT count(*)::integer FROM app_jobs.jobs WHERE task_identifier = 'partial_done'), 1,
    'its follow-up is enqueued (its task is not ignored)'
);
SELECT id AS b7 FROM app_jobs.add_bundle(
    'quiet_followup', '[{"identifier": "kept_3"}]', followup := '{"identifier": "skipped_followup"}'
) \gset
SELECT is(pg_temp.claim('w7', (SELECT id FROM app_jobs.jobs WHERE bundle_id = :b7)),
    (SELECT id FROM app_jobs.jobs WHERE bundle_id = :b7), 'w7 claims kept_3');
SELECT is(
    (app_jobs.complete_job('w7', (SELECT id FROM app_jobs.jobs WHERE bundle_id = :b7))).id IS NOT NULL,
    TRUE, 'and completes it'
);
SELECT is(pg_temp.bundle(:b7), 'jobs=1 completed=1 failed=0 cancelled=0 outcome=completed stopped=true',
    'the bundle stops');
SELECT is(
    (SELECT ROW(followup_job_id, (SELECT count(*) FROM app_jobs.jobs WHERE task_identifier = 'skipped_followup'))::text
     FROM app_jobs.job_bundles WHERE id = :b7),
    ROW(NULL::bigint, 0::bigint)::text,
    'an ignored follow-up task: no follow-up job, no id recorded'
);
SELECT set_config('pgjobs.ignore_enqueues', 'all', TRUE) AS _ \gset
SELECT id AS b8 FROM app_jobs.add_bundle('nothing', '[{"identifier": "x1"}, {"identifier": "x2"}]',
    followup := '{"identifier": "nothing_done"}') \gset
SELECT is(
    (SELECT job_count FROM app_jobs.job_bundles WHERE id = :b8), 0,
    'with every enqueue ignored the bundle has no job'
);
SELECT is(
    (SELECT stopped_at IS NOT NULL AND outcome = 'completed' FROM app_jobs.job_bundles WHERE id = :b8),
    TRUE, 'a bundle with no job to wait for stops at once, completed'
);
SELECT set_config('pgjobs.ignore_enqueues', '', TRUE) AS _ \gset

-- 9. Regressions: revived bundle jobs, bundle origin and follow-up validation.
-- A job failed for good, retried by hand and completed, must not count twice.
SELECT id AS b9 FROM app_jobs.add_bundle('twice', '[{"identifier": "tw_a", "max_attempts": 1}, {"identifier": "tw_b"}]') \gset
SELECT id AS twa FROM app_jobs.jobs WHERE task_identifier = 'tw_a' \gset
SELECT pg_temp.claim('w9', :twa) AS _ \gset
SELECT (app_jobs.fail_job('w9', :twa)).id AS _ \gset
SELECT (app_jobs.retry_job(:twa)).id AS _ \gset
SELECT pg_temp.claim('w9', :twa) AS _ \gset
SELECT (app_jobs.complete_job('w9', :twa)).id AS _ \gset
SELECT is(
    (SELECT stopped_at FROM app_jobs.job_bundles WHERE id = :b9), NULL,
    'the bundle does not stop while tw_b still waits'
);
-- A bundle origin add_job would refuse, or a follow-up spec add_job would refuse, must be
-- refused by add_bundle: otherwise stopping the bundle raises and its last job can never end.
SELECT ok(coalesce(
    pg_temp.sqlstate_of(format(
        $$SELECT app_jobs.add_bundle('o', '[{"identifier": "a", "origin": "x"}]', %L)$$,
        repeat('o', 300)
    )) LIKE 'PJ%', FALSE),
    'add_bundle refuses an origin over 256 characters'
);
SELECT ok(coalesce(
    pg_temp.sqlstate_of(
        $$SELECT app_jobs.add_bundle('o', '[{"identifier": "a"}]', followup := '{"identifier": ""}')$$
    ) LIKE 'PJ%', FALSE),
    'add_bundle refuses a follow-up with an empty identifier'
);
SELECT ok(coalesce(
    pg_temp.sqlstate_of(
        $$SELECT app_jobs.add_bundle('o', '[{"identifier": "a"}]',
            followup := '{"identifier": "f", "max_attempts": 0}')$$
    ) LIKE 'PJ%', FALSE),
    'add_bundle refuses a follow-up with max_attempts 0'
);

SELECT * FROM finish();
ROLLBACK;
