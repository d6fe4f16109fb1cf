-- add_job depends_on: blocked (status 'blocked', never claimed) until every dependency completed; a dependency failed for good or cancelled cancels its dependents transitively with the reason; already completed (history) dependencies are satisfied, already failed/cancelled ones cancel at once; PJ023 (unknown id, job_key); duplicates counted once.
BEGIN;
\ir setup.psql
SELECT plan(78);

-- Claim one job by id: it is made due, and the claim is limited to its task.
CREATE FUNCTION pg_temp.claim(p_worker text, p_id bigint) RETURNS bigint LANGUAGE sql AS $$
    UPDATE app_jobs.jobs SET run_at = now() - interval '1 second' WHERE id = p_id;
    SELECT (app_jobs.get_job(
        p_worker, ARRAY[(SELECT task_identifier FROM app_jobs.jobs WHERE id = p_id)]
    )).id;
$$;
CREATE FUNCTION pg_temp.status(p_id bigint) RETURNS text LANGUAGE sql AS $$
    SELECT status FROM app_jobs.job_status WHERE id = p_id;
$$;
CREATE FUNCTION pg_temp.deps(p_id bigint) RETURNS bigint[] LANGUAGE sql AS $$
    SELECT coalesce(array_agg(depends_on ORDER BY depends_on), '{}')
    FROM app_jobs.job_dependencies WHERE job_id = p_id;
$$;
-- The last history record of a job: status, last_error, error_data.
CREATE FUNCTION pg_temp.ended(p_id bigint) RETURNS text LANGUAGE sql AS $$
    SELECT format('%s|%s|%s', h.status, h.last_error, h.error_data)
    FROM app_jobs.job_history AS h WHERE h.job_id = p_id
    ORDER BY h.finished_at DESC, h.id DESC LIMIT 1;
$$;
CREATE FUNCTION pg_temp.cancelled_by(p_dep bigint, p_status text) RETURNS text LANGUAGE sql AS $$
    SELECT format(
        'cancelled|dependency %s %s|%s', p_dep, p_status,
        jsonb_build_object(
            'reason', 'dependency', 'dependency_id', p_dep, 'dependency_status', p_status
        )
    );
$$;

-- 1. Blocked until every dependency completed; duplicates count once.
SELECT id AS a FROM app_jobs.add_job(identifier := 'dep_a', run_at := now() - interval '2 minutes') \gset
SELECT id AS b FROM app_jobs.add_job(identifier := 'dep_b', queue_name := 'dq', run_at := now() - interval '1 minute') \gset
SELECT id AS c FROM app_jobs.add_job(
    identifier := 'after_ab', depends_on := ARRAY[:a, :b, :a, NULL]::bigint[],
    run_at := now() - interval '3 minutes'
) \gset
SELECT is(
    (SELECT ROW(blocked_by, is_available)::text FROM app_jobs.jobs WHERE id = :c),
    ROW(2, false)::text,
    'a job with two dependencies (one named twice) is blocked by 2 and not available'
);
SELECT is(pg_temp.deps(:c), ARRAY[:a, :b]::bigint[], 'one job_dependencies row per distinct dependency');
SELECT is(pg_temp.status(:c), 'blocked', 'job_status: blocked');
SELECT is(
    (SELECT count(*)::integer FROM app_jobs.waiting_jobs() WHERE id = :c), 0,
    'waiting_jobs does not list it'
);
SELECT is(
    (SELECT array_agg(id ORDER BY id) FROM app_jobs.get_jobs('w1', batch_size := 10)),
    ARRAY[:a, :b]::bigint[],
    'get_jobs hands out the dependencies but not the blocked job, although it is due first'
);
SELECT is(pg_temp.status(:c), 'blocked', 'still blocked while they run');
SELECT is((app_jobs.complete_job('w1', :a)).id, :a::bigint, 'dep_a completes');
SELECT is(
    (SELECT ROW(blocked_by, is_available)::text FROM app_jobs.jobs WHERE id = :c),
    ROW(1, false)::text,
    'one dependency left'
);
SELECT is(pg_temp.deps(:c), ARRAY[:b]::bigint[], 'the completed dependency''s row is gone');
SELECT is(pg_temp.status(:c), 'blocked', 'still blocked');
SELECT is((app_jobs.get_job('w2')).id, NULL, 'and still not claimable');
SELECT is((app_jobs.complete_job('w1', :b)).id, :b::bigint, 'dep_b completes');
SELECT is(
    (SELECT ROW(blocked_by, is_available)::text FROM app_jobs.jobs WHERE id = :c),
    ROW(0, true)::text,
    'every dependency completed: available'
);
SELECT is(pg_temp.deps(:c), '{}'::bigint[], 'no dependency rows left');
SELECT is(pg_temp.status(:c), 'waiting', 'job_status: waiting');
SELECT is((app_jobs.get_job('w2')).id, :c::bigint, 'and it is claimed');
SELECT is((app_jobs.complete_job('w2', :c)).id, :c::bigint, 'and completes');

-- A dependency that is running when the dependent is added counts as pending.
SELECT id AS r FROM app_jobs.add_job(identifier := 'runner') \gset
SELECT is(pg_temp.claim('w3', :r), :r::bigint, 'w3 runs a job');
SELECT id AS rd FROM app_jobs.add_job(identifier := 'after_runner', depends_on := ARRAY[:r]::bigint[]) \gset
SELECT is((SELECT blocked_by FROM app_jobs.jobs WHERE id = :rd), 1, 'a running dependency blocks');
SELECT is((app_jobs.fail_job('w3', :r, 'transient')).attempts, 1, 'it fails, to be retried');
SELECT is(
    (SELECT ROW(blocked_by, pg_temp.status(:rd))::text FROM app_jobs.jobs WHERE id = :rd),
    ROW(1, 'blocked')::text,
    'a retryable failure neither unblocks nor cancels the dependent'
);
SELECT is(pg_temp.claim('w3', :r), :r::bigint, 'the retry is claimed');
SELECT is((app_jobs.complete_job('w3', :r)).id, :r::bigint, 'and completes');
SELECT is(pg_temp.status(:rd), 'waiting', 'the dependent is released');

-- 2. Failed for good: dependents cancelled, transitively, with the reason.
SELECT id AS d FROM app_jobs.add_job(identifier := 'dep_d', max_attempts := 1) \gset
SELECT id AS h FROM app_jobs.add_job(identifier := 'dep_h', max_attempts := 1) \gset
SELECT id AS e FROM app_jobs.add_job(identifier := 'after_d', depends_on := ARRAY[:d]::bigint[]) \gset
SELECT id AS f FROM app_jobs.add_job(identifier := 'after_e', depends_on := ARRAY[:e]::bigint[]) \gset
SELECT id AS g FROM app_jobs.add_job(identifier := 'after_eh', depends_on := ARRAY[:h, :e]::bigint[], queue_name := 'gq') \gset
SELECT id AS other FROM app_jobs.add_job(identifier := 'after_h', depends_on := ARRAY[:h]::bigint[]) \gset
SELECT is(
    ARRAY[pg_temp.status(:e), pg_temp.status(:f), pg_temp.status(:g), pg_temp.status(:other)],
    ARRAY['blocked', 'blocked', 'blocked', 'blocked'],
    'a chain d <- e <- f, e and h <- g, h <- other: all blocked'
);
SELECT is(pg_temp.claim('w4', :d), :d::bigint, 'w4 claims dep_d');
SELECT is((app_jobs.fail_job('w4', :d, 'broken')).attempts, 1, 'it fails for good');
SELECT is(
    (SELECT count(*)::integer FROM app_jobs.jobs WHERE id IN (:e, :f, :g)), 0,
    'its dependents, and theirs, leave the jobs table'
);
SELECT is(pg_temp.ended(:e), pg_temp.cancelled_by(:d, 'failed'), 'e: cancelled, dependency d failed');
SELECT is(pg_temp.ended(:f), pg_temp.cancelled_by(:e, 'cancelled'), 'f: cancelled, dependency e cancelled');
SELECT is(pg_temp.ended(:g), pg_temp.cancelled_by(:e, 'cancelled'), 'g: cancelled, dependency e cancelled');
SELECT is(
    ARRAY[pg_temp.status(:d), pg_temp.status(:e), pg_temp.status(:f), pg_temp.status(:g)],
    ARRAY['failed', 'cancelled', 'cancelled', 'cancelled'],
    'job_status: d failed, e f g cancelled'
);
SELECT is(
    (SELECT last_error FROM app_jobs.job_status WHERE id = :f), format('dependency %s cancelled', :e),
    'job_status shows the reason'
);
SELECT is(
    (SELECT count(*)::integer FROM app_jobs.job_dependencies WHERE job_id IN (:e, :f, :g) OR depends_on IN (:d, :e)),
    0, 'their dependency rows are gone'
);
SELECT is(
    (SELECT ROW(blocked_by, pg_temp.status(:other))::text FROM app_jobs.jobs WHERE id = :other),
    ROW(1, 'blocked')::text,
    'a job depending only on the unrelated h is untouched'
);
SELECT is(pg_temp.deps(:other), ARRAY[:h]::bigint[], 'and keeps its dependency row');
SELECT is(
    (SELECT count(*)::integer FROM app_jobs.job_queues WHERE queue_name = 'gq'), 0,
    'the cancelled queued job left its queue (the queue row is gone)'
);
SELECT is(
    (SELECT ROW(attempts, worker_id, started_at)::text FROM app_jobs.job_history WHERE job_id = :e),
    ROW(0, NULL::text, NULL::timestamptz)::text,
    'a cancelled dependent never ran: 0 attempts, no worker, no start'
);

-- Some dependencies completed, one failed: cancelled with that one as the reason.
SELECT id AS m1 FROM app_jobs.add_job(identifier := 'm1') \gset
SELECT id AS m2 FROM app_jobs.add_job(identifier := 'm2', max_attempts := 1) \gset
SELECT id AS m FROM app_jobs.add_job(identifier := 'after_m', depends_on := ARRAY[:m1, :m2]::bigint[]) \gset
SELECT pg_temp.claim('w5', :m1) AS _ \gset
SELECT is((app_jobs.complete_job('w5', :m1)).id, :m1::bigint, 'm1 completes');
SELECT is((SELECT blocked_by FROM app_jobs.jobs WHERE id = :m), 1, 'after_m waits for m2 only');
SELECT pg_temp.claim('w5', :m2) AS _ \gset
SELECT is((app_jobs.fail_job('w5', :m2, 'no')).attempts, 1, 'm2 fails for good');
SELECT is(pg_temp.ended(:m), pg_temp.cancelled_by(:m2, 'failed'), 'after_m: cancelled, dependency m2 failed');

-- 3. Cancelled dependencies: waiting, and running (cancelled when its worker reports).
SELECT id AS i FROM app_jobs.add_job(identifier := 'dep_i') \gset
SELECT id AS j FROM app_jobs.add_job(identifier := 'after_i', depends_on := ARRAY[:i]::bigint[]) \gset
SELECT is(app_jobs.cancel_job(:i), 'cancelled', 'a waiting dependency is cancelled');
SELECT is(pg_temp.ended(:j), pg_temp.cancelled_by(:i, 'cancelled'), 'its dependent: cancelled, dependency i cancelled');
SELECT id AS k FROM app_jobs.add_job(identifier := 'dep_k') \gset
SELECT id AS l FROM app_jobs.add_job(identifier := 'after_k', depends_on := ARRAY[:k]::bigint[]) \gset
SELECT is(pg_temp.claim('w6', :k), :k::bigint, 'w6 runs dep_k');
SELECT is(app_jobs.cancel_job(:k), 'cancelling', 'cancel_job asks w6 to stop');
SELECT is(pg_temp.status(:l), 'blocked', 'the dependent waits for the outcome');
SELECT is((app_jobs.fail_job('w6', :k, 'stopped')).id, :k::bigint, 'w6 reports back');
SELECT is(pg_temp.status(:k), 'cancelled', 'dep_k ends cancelled');
SELECT is(pg_temp.ended(:l), pg_temp.cancelled_by(:k, 'cancelled'), 'its dependent: cancelled, dependency k cancelled');

-- A blocked job cancelled itself: its dependency rows go, the dependency is unaffected.
SELECT id AS t FROM app_jobs.add_job(identifier := 'dep_t') \gset
SELECT id AS s FROM app_jobs.add_job(identifier := 'after_t', depends_on := ARRAY[:t]::bigint[]) \gset
SELECT is(app_jobs.cancel_job(:s), 'cancelled', 'a blocked job can be cancelled');
SELECT is(pg_temp.deps(:s), '{}'::bigint[], 'its dependency rows are gone');
SELECT is(pg_temp.claim('w7', :t), :t::bigint, 'its dependency still runs');
SELECT is((app_jobs.complete_job('w7', :t)).id, :t::bigint, 'and completes without trouble');

-- 4. Dependencies that already stopped.
SELECT is(pg_temp.status(:a), 'completed', 'dep_a is in history as completed');
SELECT id AS p FROM app_jobs.add_job(identifier := 'after_done', depends_on := ARRAY[:a]::bigint[]) \gset
SELECT is(
    (SELECT ROW(blocked_by, is_available)::text FROM app_jobs.jobs WHERE id = :p),
    ROW(0, true)::text,
    'depending on a completed job: not blocked'
);
SELECT is(pg_temp.deps(:p), '{}'::bigint[], 'and no dependency row');
SELECT is(pg_temp.status(:p), 'waiting', 'job_status: waiting');
SELECT id AS q FROM app_jobs.add_job(identifier := 'after_done_and_other', depends_on := ARRAY[:a, :other]::bigint[]) \gset
SELECT is(
    (SELECT blocked_by FROM app_jobs.jobs WHERE id = :q), 1,
    'a completed and a pending dependency: blocked by the pending one only'
);
SELECT is(pg_temp.deps(:q), ARRAY[:other]::bigint[], 'only the pending one has a row');

SELECT is(pg_temp.status(:d), 'failed', 'dep_d failed for good (still in jobs)');
SELECT is(
    (SELECT ROW(task_identifier, last_error)::text
     FROM app_jobs.add_job(identifier := 'after_failed', depends_on := ARRAY[:d]::bigint[])),
    ROW('after_failed', format('dependency %s failed', :d))::text,
    'depending on a job failed for good: add_job returns the job, cancelled at once'
);
SELECT is(
    (SELECT count(*)::integer FROM app_jobs.jobs WHERE task_identifier = 'after_failed'), 0,
    'it is not left in the jobs table'
);
SELECT is(
    pg_temp.ended((SELECT job_id FROM app_jobs.job_history WHERE task_identifier = 'after_failed')),
    pg_temp.cancelled_by(:d, 'failed'),
    'history: cancelled, dependency d failed'
);
SELECT id AS late FROM app_jobs.add_job(identifier := 'after_cancelled', depends_on := ARRAY[:i]::bigint[]) \gset
SELECT is(pg_temp.status(:late), 'cancelled', 'depending on a cancelled job (history): cancelled at once');
SELECT is(
    pg_temp.ended(:late), pg_temp.cancelled_by(:i, 'cancelled'),
    'the reason names the dependency as cancelled, as when it is cancelled later'
);

-- 5. PJ023: unknown dependencies, job_key with depends_on. Nothing is created.
SELECT count(*) AS n_jobs FROM app_jobs.jobs \gset
SELECT count(*) AS n_deps FROM app_jobs.job_dependencies \gset
SELECT max(id) + 1000 AS unknown FROM app_jobs.jobs \gset
SELECT throws_ok(
    format('SELECT app_jobs.add_job(identifier := %L, depends_on := %L::bigint[], job_key := %L)',
           'x', v.deps, v.k),
    'PJ023', NULL, 'PJ023: ' || v.what
)
FROM (VALUES
    ('an unknown id', format('{%s}', :unknown), NULL),
    ('an unknown id among known ones', format('{%s,%s,%s}', :a, :unknown, :other), NULL),
    ('a negative id', '{-1}', NULL),
    ('job_key with depends_on', format('{%s}', :other), 'k1'),
    ('job_key with a completed dependency', format('{%s}', :a), 'k2')
) AS v (what, deps, k);
SELECT is((SELECT count(*) FROM app_jobs.jobs), :n_jobs::bigint, 'no job was created');
SELECT is(
    (SELECT count(*) FROM app_jobs.job_dependencies), :n_deps::bigint, 'no dependency row was added'
);
SELECT lives_ok(
    $$SELECT app_jobs.add_job(identifier := 'keyed', job_key := 'k3', depends_on := '{}')$$,
    'job_key with an empty depends_on is a plain keyed job'
);
SELECT is(
    (SELECT blocked_by FROM app_jobs.jobs WHERE key = 'k3'), 0, 'and is not blocked'
);

-- 6. Admin functions that end a dependency cancel its dependents too.
SELECT id AS z FROM app_jobs.add_job(identifier := 'dep_z') \gset
SELECT id AS zd FROM app_jobs.add_job(identifier := 'after_z', depends_on := ARRAY[:z]::bigint[]) \gset
SELECT (app_jobs.permanently_fail_jobs(ARRAY[:z]::bigint[])).id AS _ \gset
SELECT is(pg_temp.status(:z), 'failed', 'permanently_fail_jobs fails a dependency for good');
SELECT is(pg_temp.status(:zd), 'cancelled', 'its dependent is cancelled');
SELECT id AS y FROM app_jobs.add_job(identifier := 'dep_y') \gset
SELECT id AS yd FROM app_jobs.add_job(identifier := 'after_y', depends_on := ARRAY[:y]::bigint[]) \gset
SELECT (app_jobs.delete_job(:y)).id AS _ \gset
SELECT isnt(pg_temp.status(:yd), 'blocked', 'a dependent of a deleted job is not left blocked');

SELECT * FROM finish();
ROLLBACK;
