-- Workers: register/re-register (PJ005, PJ018), wakeup (listen/silent/poll, PJ044, PJ019; kept on re-register), heartbeat (held claims, cancel flags, PJ019), reap_dead_workers (PJ013, failed attempt with backoff from the last heartbeat, last attempt -> failed + history, cancel -> cancelled, queues, live workers untouched), job_expiry and the admin functions' 4-hour expiry vs registered workers, unregister_worker.
BEGIN;
\ir setup.psql
SELECT plan(80);

-- 1. register_worker.
SELECT is(
    (SELECT row(id, host, pid, tasks, heartbeat_interval, started_at, last_heartbeat)::text
     FROM app_jobs.register_worker('w1', 'host-a', 101, ARRAY['t'], interval '5 seconds')),
    row('w1'::text, 'host-a'::text, 101, ARRAY['t'], interval '5 seconds', now(), now())::text,
    'register_worker returns the new row'
);
SELECT is(
    (SELECT row(host, pid, tasks, heartbeat_interval)::text
     FROM app_jobs.register_worker(worker_id := 'w2')),
    row(NULL::text, NULL::integer, NULL::text[], interval '5 seconds')::text,
    'host, pid and tasks are optional; the interval defaults to 5 seconds'
);
UPDATE app_jobs.workers SET last_heartbeat = now() - interval '1 hour' WHERE id = 'w1';
SELECT is(
    (SELECT row(host, pid, tasks, heartbeat_interval, last_heartbeat)::text
     FROM app_jobs.register_worker('w1', 'host-b', 202, ARRAY['t', 'u'], interval '2 seconds')),
    row('host-b'::text, 202, ARRAY['t', 'u'], interval '2 seconds', now())::text,
    're-registering updates host, pid, tasks and interval and counts as a heartbeat'
);
SELECT is(
    (SELECT array_agg(id ORDER BY id) FROM app_jobs.workers), ARRAY['w1', 'w2'],
    'one row per worker id'
);
SELECT throws_ok(
    format('SELECT app_jobs.register_worker(%L, heartbeat_interval := %L)', v.w, v.i),
    v.code, NULL, v.what
)
FROM (VALUES
    ('PJ005: NULL worker id', NULL, '5 seconds', 'PJ005'),
    ('PJ005: empty worker id', '', '5 seconds', 'PJ005'),
    ('PJ018: zero heartbeat_interval', 'w9', '0', 'PJ018'),
    ('PJ018: negative heartbeat_interval', 'w9', '-5 seconds', 'PJ018'),
    ('PJ018: NULL heartbeat_interval', 'w9', NULL, 'PJ018')
) AS v (what, w, i, code);
SELECT is(
    (SELECT row(heartbeat_interval, host)::text FROM app_jobs.workers WHERE id = 'w1'),
    row(interval '2 seconds', 'host-b'::text)::text,
    'refused registrations change nothing'
);
SELECT is((SELECT count(*)::integer FROM app_jobs.workers), 2, 'and add no worker');

-- 2. worker_heartbeat.
SELECT id AS a FROM app_jobs.add_job(identifier := 'r', queue_name := 'qa', run_at := now() - interval '5 minutes') \gset
SELECT id AS b FROM app_jobs.add_job(identifier := 'r', max_attempts := 2, run_at := now() - interval '4 minutes') \gset
SELECT id AS c FROM app_jobs.add_job(identifier := 'r', run_at := now() - interval '3 minutes') \gset
SELECT id AS l FROM app_jobs.add_job(identifier := 'r', queue_name := 'ql', run_at := now() - interval '2 minutes') \gset
SELECT id AS a2 FROM app_jobs.add_job(identifier := 'r', queue_name := 'qa', run_at := now() - interval '10 seconds') \gset
-- b has failed once before: this claim is its last attempt.
UPDATE app_jobs.jobs SET attempts = 1 WHERE id = :b;
SELECT is(
    (SELECT array_agg(id ORDER BY id) FROM app_jobs.get_jobs('w1', ARRAY['r'], batch_size := 3)),
    ARRAY[:a, :b, :c]::bigint[], 'w1 claims a (qa), b (last attempt) and c'
);
SELECT is(
    (SELECT array_agg(id ORDER BY id) FROM app_jobs.get_jobs('w2', ARRAY['r'], batch_size := 3)),
    ARRAY[:l]::bigint[], 'w2 claims l (ql); a2 waits behind a'
);
SELECT is(app_jobs.cancel_job(:c), 'cancelling', 'c is asked to cancel');

UPDATE app_jobs.workers SET last_heartbeat = now() - interval '3 seconds' WHERE id = 'w1';
SELECT results_eq(
    $$SELECT job_id, attempt, cancel_requested FROM app_jobs.worker_heartbeat('w1')$$,
    format($$VALUES (%s::bigint, 1, false), (%s, 2, false), (%s, 1, true)$$, :a, :b, :c),
    'the heartbeat returns w1''s claims with their attempts and cancel flags'
);
SELECT is(
    (SELECT last_heartbeat FROM app_jobs.workers WHERE id = 'w1'), now(),
    'and records the heartbeat'
);
SELECT results_eq(
    $$SELECT job_id, attempt, cancel_requested FROM app_jobs.worker_heartbeat(worker_id := 'w2')$$,
    format($$VALUES (%s::bigint, 1, false)$$, :l),
    'w2''s heartbeat returns only its own claim'
);
SELECT (app_jobs.register_worker('w3')).id AS registered \gset
SELECT is_empty(
    $$SELECT * FROM app_jobs.worker_heartbeat('w3')$$,
    'a worker holding nothing gets no rows'
);
SELECT throws_ok(
    $$SELECT * FROM app_jobs.worker_heartbeat('ghost')$$, 'PJ019', NULL,
    'PJ019: heartbeat from a worker that never registered'
);
SELECT throws_ok(
    $$SELECT * FROM app_jobs.worker_heartbeat('')$$, 'PJ005', NULL, 'PJ005: heartbeat with an empty id'
);
SELECT is_empty(
    $$SELECT * FROM app_jobs.workers WHERE id = 'ghost'$$,
    'a refused heartbeat does not register the worker'
);

-- 3. reap_dead_workers refuses a dead_for shorter than 3 heartbeat intervals (the longest
-- registered interval is now 5 s, w2's and w3's default).
SELECT throws_ok(
    format('SELECT * FROM app_jobs.reap_dead_workers(%L)', v.d), 'PJ013', NULL, 'PJ013: ' || v.what
)
FROM (VALUES
    ('dead_for 14 s < 3 x 5 s', '14 seconds'),
    ('dead_for 14.999 s < 3 x 5 s', '14.999 seconds'),
    ('dead_for NULL', NULL),
    ('dead_for zero', '0'),
    ('dead_for negative', '-1 minute')
) AS v (what, d);
SELECT throws_ok(
    $$SELECT * FROM app_jobs.reap_dead_workers(NULL::interval)$$, 'PJ013', NULL,
    'PJ013: explicit NULL'
);
UPDATE app_jobs.workers SET heartbeat_interval = interval '1 minute' WHERE id = 'w3';
SELECT throws_ok(
    $$SELECT * FROM app_jobs.reap_dead_workers('2 minutes')$$, 'PJ013', NULL,
    'PJ013: the longest interval of any registered worker counts (3 x 1 min > 2 min)'
);
SELECT lives_ok(
    $$SELECT * FROM app_jobs.reap_dead_workers('3 minutes')$$, 'exactly 3 intervals is accepted'
);
UPDATE app_jobs.workers SET heartbeat_interval = interval '5 seconds' WHERE id = 'w3';
SELECT is_empty(
    $$SELECT * FROM app_jobs.reap_dead_workers()$$,
    'with every worker alive the reaper (default 20 s) frees nothing'
);
SELECT is(
    (SELECT array_agg(id ORDER BY id) FROM app_jobs.workers), ARRAY['w1', 'w2', 'w3'],
    'and removes no worker'
);

-- 4. w1 falls silent for a minute: it is reaped.
UPDATE app_jobs.workers SET last_heartbeat = now() - interval '1 minute' WHERE id = 'w1';
INSERT INTO snap SELECT 'jobs', jsonb_agg(to_jsonb(j) ORDER BY j.id) FROM app_jobs.jobs AS j;
SELECT bag_eq(
    $$SELECT worker_id, job_id, status FROM app_jobs.reap_dead_workers('30 seconds')$$,
    format($$VALUES ('w1'::text, %s::bigint, 'retrying'::text), ('w1', %s, 'failed'),
                    ('w1', %s, 'cancelled')$$, :a, :b, :c),
    'the reaper reports w1''s three jobs: a retrying, b failed (last attempt), c cancelled'
);
SELECT is(
    (SELECT array_agg(id ORDER BY id) FROM app_jobs.workers), ARRAY['w2', 'w3'],
    'w1''s registration is deleted; the live workers stay'
);
-- a: one failed attempt, backoff counted from the last heartbeat.
SELECT is(
    (SELECT row(locked_by, locked_at, attempts)::text FROM app_jobs.jobs WHERE id = :a),
    row(NULL::text, NULL::timestamptz, 1)::text,
    'a is unlocked with its attempt kept'
);
SELECT is(
    (SELECT run_at FROM app_jobs.jobs WHERE id = :a),
    now() - interval '1 minute' + exp(1) * interval '1 second',
    'a runs again exp(1) s after w1''s last heartbeat'
);
SELECT matches(
    (SELECT last_error FROM app_jobs.jobs WHERE id = :a),
    '^worker w1 stopped heartbeating at .* \(presumed dead\)$',
    'a''s last_error names the dead worker'
);
-- b: its last attempt is used up: failed for good, with history.
SELECT is(
    (SELECT row(locked_by, attempts, is_available)::text FROM app_jobs.jobs WHERE id = :b),
    row(NULL::text, 2, false)::text,
    'b stays in the table, failed for good'
);
SELECT results_eq(
    format($$SELECT status, attempts, worker_id, started_at, error_data ->> 'reason',
                    error_data ->> 'worker_id', (error_data ->> 'last_heartbeat')::timestamptz,
                    last_error LIKE 'worker w1 %%'
             FROM app_jobs.job_history WHERE job_id = %s$$, :b),
    $$VALUES ('failed'::text, 2, 'w1'::text, now(), 'worker_dead'::text, 'w1'::text,
              now() - interval '1 minute', true)$$,
    'b''s history: failed by w1, error_data says worker_dead with the last heartbeat'
);
-- c: its cancel request wins: cancelled, never retried.
SELECT is((SELECT count(*)::integer FROM app_jobs.jobs WHERE id = :c), 0, 'c is gone');
SELECT results_eq(
    format($$SELECT status, attempts, worker_id FROM app_jobs.job_history WHERE job_id = %s$$, :c),
    $$VALUES ('cancelled'::text, 1, 'w1'::text)$$,
    'c''s history says cancelled'
);
SELECT is_empty(
    format('SELECT * FROM app_jobs.job_history WHERE job_id = %s', :a),
    'a, still retrying, has no history'
);
-- Queues and the live worker.
SELECT results_eq(
    $$SELECT queue_name, job_count, locked_by FROM app_jobs.job_queues ORDER BY queue_name$$,
    $$VALUES ('qa'::text, 2, NULL::text), ('ql', 1, 'w2')$$,
    'qa is released (still counting a and a2); w2 keeps ql'
);
SELECT is(
    (SELECT to_jsonb(j) FROM app_jobs.jobs AS j WHERE j.id = :l),
    (SELECT x FROM snap, jsonb_array_elements(data) AS x
     WHERE label = 'jobs' AND (x ->> 'id')::bigint = :l),
    'w2''s job is untouched'
);
SELECT is(
    (SELECT array_agg(id ORDER BY id) FROM app_jobs.get_jobs('w3', ARRAY['r'], batch_size := 5)),
    ARRAY[:a]::bigint[],
    'a (its backoff over) can be claimed again, as the head of qa'
);
SELECT is(
    (SELECT attempts FROM app_jobs.jobs WHERE id = :a), 2, 'as its second attempt'
);

-- The dead worker comes back: fenced and refused.
SELECT throws_ok(
    $$SELECT * FROM app_jobs.worker_heartbeat('w1')$$, 'PJ019', NULL,
    'PJ019: the reaped worker''s heartbeat is refused'
);
SELECT is(
    (SELECT array_agg(status) FROM app_jobs.finish_jobs('w1', format(
        '[{"id": %s, "attempt": 1}, {"id": %s, "attempt": 2}]', :a, :b)::jsonb)),
    ARRAY['fenced', 'fenced'],
    'its late outcomes are fenced'
);
SELECT is(
    (SELECT row(locked_by, attempts)::text FROM app_jobs.jobs WHERE id = :a),
    row('w3'::text, 2)::text,
    'and do not touch w3''s claim'
);
SELECT is_empty(
    $$SELECT * FROM app_jobs.reap_dead_workers('30 seconds')$$,
    'a second reap finds nobody'
);

-- A silent worker holding nothing is simply removed.
SELECT (app_jobs.register_worker('idle')).id AS registered \gset
UPDATE app_jobs.workers SET last_heartbeat = now() - interval '1 hour' WHERE id = 'idle';
SELECT is_empty(
    $$SELECT * FROM app_jobs.reap_dead_workers('1 minute')$$, 'an idle dead worker has no jobs to report'
);
SELECT is_empty($$SELECT * FROM app_jobs.workers WHERE id = 'idle'$$, 'but is removed');
-- Silent for less than dead_for: kept.
UPDATE app_jobs.workers SET last_heartbeat = now() - interval '25 seconds' WHERE id = 'w3';
SELECT is_empty(
    $$SELECT * FROM app_jobs.reap_dead_workers('30 seconds')$$,
    'w3, silent for 25 s, is not dead at dead_for 30 s'
);
SELECT is(
    (SELECT locked_by FROM app_jobs.jobs WHERE id = :a), 'w3', 'and keeps its claim'
);

-- 5. get_jobs's job_expiry sweep leaves registered workers alone.
DELETE FROM app_jobs.jobs;
DELETE FROM app_jobs.job_history;
DELETE FROM app_jobs.workers;
SELECT (app_jobs.register_worker('live')).id AS registered \gset
SELECT id AS r1 FROM app_jobs.add_job(identifier := 'e', queue_name := 'qr', run_at := now() - interval '6 hours') \gset
SELECT id AS r2 FROM app_jobs.add_job(identifier := 'e', queue_name := 'qr', run_at := now() - interval '6 hours') \gset
SELECT id AS u1 FROM app_jobs.add_job(identifier := 'e', queue_name := 'qu', run_at := now() - interval '6 hours') \gset
SELECT id AS u2 FROM app_jobs.add_job(identifier := 'e', queue_name := 'qu', run_at := now() - interval '6 hours') \gset
SELECT id AS n1 FROM app_jobs.add_job(identifier := 'e', run_at := now() - interval '6 hours') \gset
SELECT id AS n2 FROM app_jobs.add_job(identifier := 'e', run_at := now() - interval '6 hours') \gset
UPDATE app_jobs.jobs SET locked_by = 'live', locked_at = now() - interval '5 hours', attempts = 1
WHERE id IN (:r1, :n1);
UPDATE app_jobs.jobs SET attempts = 3 WHERE id = :n1;
UPDATE app_jobs.jobs SET locked_by = 'gone', locked_at = now() - interval '5 hours', attempts = 1
WHERE id IN (:u1, :n2);
UPDATE app_jobs.job_queues SET locked_by = 'live', locked_at = now() - interval '5 hours'
WHERE queue_name = 'qr';
UPDATE app_jobs.job_queues SET locked_by = 'gone', locked_at = now() - interval '5 hours'
WHERE queue_name = 'qu';
SELECT is(
    (SELECT array_agg(id ORDER BY id) FROM app_jobs.get_jobs('w9', ARRAY['e'], interval '4 hours', 10)),
    ARRAY[:u1, :n2]::bigint[],
    'expired locks of the unregistered worker are freed and reclaimed (u1 at the head of qu, n2)'
);
SELECT results_eq(
    format($$SELECT id, locked_by, attempts FROM app_jobs.jobs WHERE id IN (%s, %s) ORDER BY id$$, :r1, :n1),
    format($$VALUES (%s::bigint, 'live'::text, 1), (%s, 'live', 3)$$, :r1, :n1),
    'the registered worker''s old claims are kept, attempts unchanged'
);
SELECT results_eq(
    $$SELECT queue_name, locked_by FROM app_jobs.job_queues ORDER BY queue_name$$,
    $$VALUES ('qr'::text, 'live'::text), ('qu', 'w9')$$,
    'its queue stays locked (r2 waits); the dead locker''s queue went to w9'
);
SELECT is(
    (SELECT attempts FROM app_jobs.jobs WHERE id = :u1), 2, 'the freed job counts a new attempt'
);
-- Once the registered worker is reaped, its work is freed too.
UPDATE app_jobs.workers SET last_heartbeat = now() - interval '5 hours' WHERE id = 'live';
SELECT is(
    (SELECT array_agg(status ORDER BY job_id) FROM app_jobs.reap_dead_workers()),
    ARRAY['retrying', 'retrying'],
    'reaping the silent registered worker frees r1 and n1'
);
SELECT results_eq(
    format($$SELECT id, attempts, run_at FROM app_jobs.jobs WHERE id IN (%s, %s) ORDER BY id$$, :r1, :n1),
    format($$VALUES (%s::bigint, 1, now() - interval '5 hours' + exp(1) * interval '1 second'),
                    (%s, 3, now() - interval '5 hours' + exp(3) * interval '1 second')$$, :r1, :n1),
    'each backs off exp(attempts) s from the last heartbeat: exp(1) for r1, exp(3) for n1'
);
SELECT is(
    (SELECT array_agg(id ORDER BY id) FROM app_jobs.get_jobs('w9', ARRAY['e'], interval '4 hours', 10)),
    ARRAY[:r2, :n1]::bigint[],
    'which can then be claimed (r2 is now qr''s head: r1 waits for its backoff)'
);

-- 6. unregister_worker hands everything back.
DELETE FROM app_jobs.jobs;
SELECT (app_jobs.register_worker('leaving')).id AS registered \gset
SELECT id AS x1 FROM app_jobs.add_job(identifier := 'u', queue_name := 'qx', run_at := now() - interval '1 minute') \gset
SELECT id AS x2 FROM app_jobs.add_job(identifier := 'u', run_at := now() - interval '1 minute') \gset
SELECT is(
    (SELECT count(*)::integer FROM app_jobs.get_jobs('leaving', ARRAY['u'], batch_size := 5)), 2,
    'the leaving worker holds two jobs'
);
SELECT lives_ok($$SELECT app_jobs.unregister_worker('leaving')$$, 'unregister_worker runs');
SELECT results_eq(
    $$SELECT locked_by, locked_at, attempts, last_error FROM app_jobs.jobs ORDER BY id$$,
    $$VALUES (NULL::text, NULL::timestamptz, 0, NULL::text), (NULL, NULL, 0, NULL)$$,
    'its jobs are unlocked with the attempt refunded and no error'
);
SELECT results_eq(
    $$SELECT queue_name, job_count, locked_by FROM app_jobs.job_queues$$,
    $$VALUES ('qx'::text, 1, NULL::text)$$,
    'its queue is released'
);
SELECT is_empty($$SELECT * FROM app_jobs.workers WHERE id = 'leaving'$$, 'its registration is gone');
SELECT throws_ok(
    $$SELECT * FROM app_jobs.worker_heartbeat('leaving')$$, 'PJ019', NULL,
    'PJ019: heartbeat after unregistering'
);
SELECT lives_ok(
    $$SELECT app_jobs.unregister_worker('never-registered')$$, 'unregistering an unknown worker is a no-op'
);
SELECT throws_ok(
    $$SELECT app_jobs.unregister_worker('')$$, 'PJ005', NULL, 'PJ005: unregister with an empty id'
);

-- 7. The admin functions' fixed 4-hour expiry must not override a heartbeat: a registered,
-- heartbeating worker's claim is live however long it has run.
DELETE FROM app_jobs.jobs;
DELETE FROM snap;
SELECT (app_jobs.register_worker('busy')).id AS registered \gset
SELECT id AS b1 FROM app_jobs.add_job(identifier := 'long', queue_name := 'qbusy', run_at := now() - interval '6 hours') \gset
SELECT id AS b2 FROM app_jobs.add_job(identifier := 'long', queue_name := 'qbusy', run_at := now() - interval '6 hours') \gset
SELECT id AS b3 FROM app_jobs.add_job(identifier := 'long', run_at := now() - interval '6 hours') \gset
SELECT id AS b4 FROM app_jobs.add_job(identifier := 'long', run_at := now() - interval '6 hours') \gset
SELECT id AS b5 FROM app_jobs.add_job(identifier := 'long', run_at := now() - interval '6 hours', job_key := 'bk') \gset
SELECT is(
    (SELECT array_agg(id ORDER BY id) FROM app_jobs.get_jobs('busy', ARRAY['long'], batch_size := 10)),
    ARRAY[:b1, :b3, :b4, :b5]::bigint[],
    'busy claims b1 (qbusy), b3, b4 and b5 (keyed)'
);
UPDATE app_jobs.jobs SET locked_at = now() - interval '5 hours' WHERE locked_by = 'busy';
UPDATE app_jobs.job_queues SET locked_at = now() - interval '5 hours' WHERE locked_by = 'busy';
SELECT is(
    (SELECT count(*)::integer FROM app_jobs.worker_heartbeat('busy')), 4,
    'busy, running them for 5 hours, still heartbeats'
);
INSERT INTO snap SELECT 'busy', jsonb_agg(to_jsonb(j) ORDER BY j.id) FROM app_jobs.jobs AS j WHERE j.id <> :b5;
SELECT is_empty(
    format('SELECT * FROM app_jobs.complete_jobs(ARRAY[%s]::bigint[])', :b1),
    'complete_jobs skips the live worker''s 5-hour-old claim'
);
SELECT is_empty(
    format('SELECT * FROM app_jobs.permanently_fail_jobs(ARRAY[%s]::bigint[])', :b3),
    'permanently_fail_jobs skips it'
);
SELECT is_empty(
    format('SELECT * FROM app_jobs.reschedule_jobs(ARRAY[%s]::bigint[], attempts := 0)', :b4),
    'reschedule_jobs skips it'
);
SELECT is(
    (SELECT jsonb_agg(to_jsonb(j) ORDER BY j.id) FROM app_jobs.jobs AS j WHERE j.id <> :b5),
    (SELECT data FROM snap WHERE label = 'busy'),
    'the live worker''s jobs and the waiting b2 are unchanged'
);
SELECT (app_jobs.remove_job('bk')).id AS removed \gset
SELECT is(
    (SELECT row(locked_by, key, attempts, max_attempts)::text FROM app_jobs.jobs WHERE id = :b5),
    row('busy'::text, NULL::text, 1, 1)::text,
    'remove_job on the live worker''s keyed claim only strips the key and retries (it keeps running)'
);

-- How new jobs wake a worker.
SELECT app_jobs.register_worker('wk') \gset
SELECT app_jobs.set_worker_wakeup('wk', 'silent');
SELECT is((SELECT wakeup FROM app_jobs.workers WHERE id = 'wk'), 'silent', 'set_worker_wakeup records it');
SELECT app_jobs.register_worker('wk') \gset
SELECT is((SELECT wakeup FROM app_jobs.workers WHERE id = 'wk'), 'silent',
    'registering again keeps it (the worker probes again and sets it)');
SELECT throws_ok($$SELECT app_jobs.set_worker_wakeup('wk', 'sometimes')$$, 'PJ044', NULL,
    'another value: PJ044');
SELECT throws_ok($$SELECT app_jobs.set_worker_wakeup('wk', NULL)$$, 'PJ044', NULL,
    'NULL: PJ044');
SELECT throws_ok($$SELECT app_jobs.set_worker_wakeup('nobody', 'poll')$$, 'PJ019', NULL,
    'an unregistered worker: PJ019');

SELECT * FROM finish();
ROLLBACK;
