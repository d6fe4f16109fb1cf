-- Flow settings: set_task_settings (PJ024/PJ001, whole row replaced), per-task max_attempts/timeout defaults in add_job, retry_delay for each kind (cap, jitter bounds) and its use by fail_job/finish_jobs, the token-bucket rate limit in get_jobs (empty at first, refill, spend, burst, other tasks unaffected), set_queue_concurrency (PJ025) and get_jobs' per-queue concurrency with running_count kept exact through claim/complete/fail/release/reap/unlock.
BEGIN;
\ir setup.psql
SELECT plan(172);

-- Claim one job by id: it is made due, and the claim is limited to its task.
CREATE FUNCTION pg_temp.claim(p_worker text, p_id bigint) RETURNS bigint LANGUAGE sql AS $$
    UPDATE app_jobs.jobs SET run_at = now() - interval '1 second' WHERE id = p_id;
    SELECT (app_jobs.get_job(
        p_worker, ARRAY[(SELECT task_identifier FROM app_jobs.jobs WHERE id = p_id)]
    )).id;
$$;
-- Seconds of an interval, rounded to the microsecond.
CREATE FUNCTION pg_temp.secs(p interval) RETURNS numeric LANGUAGE sql AS $$
    SELECT round(extract(EPOCH FROM p), 6);
$$;

-- 1. set_task_settings: validation.
SELECT throws_ok(
    'SELECT app_jobs.set_task_settings(''bad'', ' || v.args || ')', 'PJ024', NULL, 'PJ024: ' || v.what
)
FROM (VALUES
    ('unknown retry_kind', 'retry_kind := ''random'''),
    ('retry_kind in capitals', 'retry_kind := ''Fixed'''),
    ('retry_kind empty', 'retry_kind := '''''),
    ('list without retry_delays', 'retry_kind := ''list'''),
    ('list with empty retry_delays', 'retry_kind := ''list'', retry_delays := ''{}'''),
    ('retry_delays with a NULL', 'retry_kind := ''list'', retry_delays := ARRAY[''1 s'', NULL]::interval[]'),
    ('retry_delays with a negative', 'retry_kind := ''list'', retry_delays := ''{1 s,-1 s}'''),
    ('retry_base zero', 'retry_base := ''0'''),
    ('retry_base negative', 'retry_kind := ''fixed'', retry_base := ''-5 seconds'''),
    ('retry_cap zero', 'retry_cap := ''0'''),
    ('retry_cap negative', 'retry_cap := ''-1 minute'''),
    ('retry_jitter negative', 'retry_jitter := -0.1'),
    ('retry_jitter above 1', 'retry_jitter := 1.5'),
    ('retry_jitter NaN', 'retry_jitter := ''NaN'''),
    ('max_attempts 0', 'max_attempts := 0'),
    ('max_attempts negative', 'max_attempts := -3'),
    ('timeout zero', 'timeout := ''0'''),
    ('timeout negative', 'timeout := ''-1 second'''),
    ('rate_limit without rate_interval', 'rate_limit := 5'),
    ('rate_interval without rate_limit', 'rate_interval := ''1 minute'''),
    ('rate_limit 0', 'rate_limit := 0, rate_interval := ''1 minute'''),
    ('rate_limit negative', 'rate_limit := -1, rate_interval := ''1 minute'''),
    ('rate_interval zero', 'rate_limit := 5, rate_interval := ''0'''),
    ('rate_interval negative', 'rate_limit := 5, rate_interval := ''-1 minute'''),
    ('rate_burst 0', 'rate_limit := 5, rate_interval := ''1 minute'', rate_burst := 0'),
    ('rate_burst without rate_limit', 'rate_burst := 5')
) AS v (what, args);
SELECT throws_ok(
    format('SELECT app_jobs.set_task_settings(%L)', v.t), 'PJ001', NULL, 'PJ001: task identifier ' || v.what
)
FROM (VALUES ('NULL', NULL), ('empty', ''), ('of 127 characters', repeat('t', 127))) AS v (what, t);
SELECT is_empty($$SELECT * FROM app_jobs.task_settings$$, 'refused settings store nothing');

SELECT is(
    (SELECT to_jsonb(s) - 'refilled_at' FROM app_jobs.set_task_settings('plain') AS s),
    jsonb_build_object(
        'task_identifier', 'plain', 'retry_kind', 'exponential', 'retry_base', NULL,
        'retry_cap', NULL, 'retry_jitter', 0, 'retry_delays', NULL, 'max_attempts', NULL,
        'timeout', NULL, 'rate_limit', NULL, 'rate_interval', NULL, 'rate_burst', NULL,
        'tokens', 0
    ),
    'defaults: exponential, no base/cap, no jitter, no limits; an empty bucket'
);
SELECT lives_ok(
    $$SELECT app_jobs.set_task_settings('edges', retry_kind := NULL, retry_jitter := NULL,
        retry_delays := '{0}', max_attempts := 1, rate_limit := 1,
        rate_interval := '1 microsecond', rate_burst := 1)$$,
    'boundary values are accepted (NULL kind and jitter, a 0 delay, 1s and tiny intervals)'
);
SELECT is(
    (SELECT ROW(retry_kind, retry_jitter)::text FROM app_jobs.task_settings WHERE task_identifier = 'edges'),
    ROW('exponential', 0::double precision)::text,
    'NULL retry_kind and retry_jitter store the defaults'
);
SELECT lives_ok(
    $$SELECT app_jobs.set_task_settings('jit', retry_jitter := 1)$$, 'retry_jitter 1 is accepted'
);
SELECT is(
    (app_jobs.set_task_settings(repeat('t', 126), max_attempts := 2)).max_attempts, 2,
    'a 126-character task identifier is accepted'
);
-- The whole row is replaced.
SELECT is(
    (SELECT ROW(retry_kind, retry_base, max_attempts, timeout)::text
     FROM app_jobs.set_task_settings('repl', 'fixed', '5 seconds', max_attempts := 4, timeout := '1 hour')),
    ROW('fixed', interval '5 seconds', 4, interval '1 hour')::text,
    'set_task_settings stores the given values'
);
SELECT is(
    (SELECT ROW(retry_kind, retry_base, max_attempts, timeout)::text
     FROM app_jobs.set_task_settings('repl', timeout := '2 hours')),
    ROW('exponential', NULL::interval, NULL::integer, interval '2 hours')::text,
    'calling it again replaces the whole row: settings left out go back to their defaults'
);
SELECT is(
    (SELECT count(*)::integer FROM app_jobs.task_settings WHERE task_identifier = 'repl'), 1,
    'one row per task'
);

-- 2. Defaults for add_job: max_attempts and timeout; explicit values win.
SELECT app_jobs.set_task_settings('dflt', max_attempts := 3, timeout := '5 minutes') AS _ \gset
SELECT is(
    (SELECT ROW(max_attempts, timeout)::text FROM app_jobs.add_job(identifier := 'dflt')),
    ROW(3, interval '5 minutes')::text,
    'add_job takes max_attempts and timeout from the task settings'
);
SELECT is(
    (SELECT ROW(max_attempts, timeout)::text
     FROM app_jobs.add_job(identifier := 'dflt', max_attempts := 7, timeout := '1 minute')),
    ROW(7, interval '1 minute')::text,
    'explicit values win'
);
SELECT is(
    (SELECT ROW(max_attempts, timeout)::text FROM app_jobs.add_job(identifier := 'dflt', max_attempts := 1)),
    ROW(1, interval '5 minutes')::text,
    'each setting separately'
);
SELECT is(
    (SELECT ROW(max_attempts, timeout)::text FROM app_jobs.add_job(identifier := 'dflt', job_key := 'dk')),
    ROW(3, interval '5 minutes')::text,
    'with a job_key too'
);
SELECT is(
    (SELECT ROW(max_attempts, timeout)::text
     FROM app_jobs.add_job(identifier := 'dflt', job_key := 'dk', max_attempts := 9)),
    ROW(9, interval '5 minutes')::text,
    'and when the keyed job is replaced'
);
SELECT is(
    (SELECT ROW(max_attempts, timeout)::text
     FROM app_jobs.add_job(identifier := 'dflt', depends_on := ARRAY[(SELECT min(id) FROM app_jobs.jobs)])),
    ROW(3, interval '5 minutes')::text,
    'and with depends_on'
);
SELECT id AS bd FROM app_jobs.add_bundle('b', '[{"identifier": "dflt"}]') \gset
SELECT is(
    (SELECT array_agg(ROW(j.max_attempts, j.timeout)::text) FROM app_jobs.jobs AS j WHERE j.bundle_id = :bd),
    ARRAY[ROW(3, interval '5 minutes')::text],
    'and in a bundle'
);
SELECT is(
    (SELECT ROW(max_attempts, timeout)::text FROM app_jobs.add_job(identifier := 'no_settings')),
    ROW(25, NULL::interval)::text,
    'a task without settings: 25 attempts, no timeout'
);
SELECT is(
    (SELECT ROW(max_attempts, timeout)::text FROM app_jobs.add_job(identifier := 'plain')),
    ROW(25, NULL::interval)::text,
    'a task with settings but no defaults: the same'
);
SELECT throws_ok(
    $$SELECT app_jobs.add_job(identifier := 'dflt', max_attempts := 0)$$, 'PJ004', NULL,
    'an explicit max_attempts is still checked (PJ004)'
);
SELECT app_jobs.set_task_settings('dflt', max_attempts := 6) AS _ \gset
SELECT is(
    (SELECT array_agg(DISTINCT max_attempts ORDER BY max_attempts) FROM app_jobs.jobs
     WHERE task_identifier = 'dflt' AND key IS NULL AND max_attempts IN (3, 6)),
    ARRAY[3],
    'changed settings do not touch jobs already enqueued'
);
SELECT is(
    (SELECT ROW(max_attempts, timeout)::text FROM app_jobs.add_job(identifier := 'dflt')),
    ROW(6, NULL::interval)::text,
    'new jobs take the new defaults'
);

-- 3. retry_delay, kind by kind.
SELECT is(
    ARRAY(SELECT pg_temp.secs(app_jobs._retry_delay('no_settings', n)) FROM unnest(ARRAY[1, 2, 5, 10, 11, 30]) AS n),
    ARRAY(SELECT round(exp(least(n, 10))::numeric, 6) FROM unnest(ARRAY[1, 2, 5, 10, 11, 30]) AS n),
    'no settings: exp(least(attempts, 10)) seconds, as before'
);
SELECT is(
    ARRAY(SELECT pg_temp.secs(app_jobs._retry_delay('plain', n)) FROM unnest(ARRAY[1, 3, 10, 12]) AS n),
    ARRAY(SELECT round(exp(least(n, 10))::numeric, 6) FROM unnest(ARRAY[1, 3, 10, 12]) AS n),
    'exponential without retry_base: the same seed delays'
);
SELECT app_jobs.set_task_settings('seed_cap', retry_cap := '30 seconds') AS _ \gset
SELECT is(
    ARRAY(SELECT pg_temp.secs(app_jobs._retry_delay('seed_cap', n)) FROM generate_series(1, 5) AS n),
    ARRAY[round(exp(1)::numeric, 6), round(exp(2)::numeric, 6), round(exp(3)::numeric, 6), 30, 30],
    'the seed delays are capped by retry_cap'
);
SELECT app_jobs.set_task_settings('expo', 'exponential', '10 seconds') AS _ \gset
SELECT is(
    ARRAY(SELECT app_jobs._retry_delay('expo', n) FROM generate_series(1, 6) AS n),
    ARRAY['10 s', '20 s', '40 s', '80 s', '160 s', '320 s']::interval[],
    'exponential: base * 2^(attempts - 1)'
);
SELECT is(app_jobs._retry_delay('expo', 0), interval '10 seconds', 'exponential, attempt 0: the base');
SELECT app_jobs.set_task_settings('expo_cap', 'exponential', '10 seconds', '1 minute') AS _ \gset
SELECT is(
    ARRAY(SELECT app_jobs._retry_delay('expo_cap', n) FROM unnest(ARRAY[1, 2, 3, 4, 5, 25]) AS n),
    ARRAY['10 s', '20 s', '40 s', '60 s', '60 s', '60 s']::interval[],
    'exponential with retry_cap: capped'
);
SELECT app_jobs.set_task_settings('lin', 'linear', '30 seconds') AS _ \gset
SELECT is(
    ARRAY(SELECT app_jobs._retry_delay('lin', n) FROM generate_series(1, 4) AS n),
    ARRAY['30 s', '60 s', '90 s', '120 s']::interval[],
    'linear: base * attempts'
);
SELECT app_jobs.set_task_settings('lin_cap', 'linear', '30 seconds', '100 seconds') AS _ \gset
SELECT is(
    ARRAY(SELECT app_jobs._retry_delay('lin_cap', n) FROM generate_series(1, 5) AS n),
    ARRAY['30 s', '60 s', '90 s', '100 s', '100 s']::interval[],
    'linear with retry_cap: capped'
);
SELECT app_jobs.set_task_settings('fix', 'fixed', '45 seconds') AS _ \gset
SELECT is(
    ARRAY(SELECT app_jobs._retry_delay('fix', n) FROM unnest(ARRAY[1, 2, 7, 100]) AS n),
    ARRAY['45 s', '45 s', '45 s', '45 s']::interval[],
    'fixed: the base every time'
);
SELECT app_jobs.set_task_settings('fix_cap', 'fixed', '2 hours', '1 hour') AS _ \gset
SELECT is(app_jobs._retry_delay('fix_cap', 3), interval '1 hour', 'fixed with a smaller cap: the cap');
SELECT app_jobs.set_task_settings('lst', 'list', retry_delays := '{1 second,1 minute,1 hour}') AS _ \gset
SELECT is(
    ARRAY(SELECT app_jobs._retry_delay('lst', n) FROM unnest(ARRAY[1, 2, 3, 4, 10]) AS n),
    ARRAY['1 second', '1 minute', '1 hour', '1 hour', '1 hour']::interval[],
    'list: the n-th delay, the last one once the list runs out'
);
SELECT is(app_jobs._retry_delay('lst', 0), interval '1 second', 'list, attempt 0: the first delay');
SELECT app_jobs.set_task_settings('lst_cap', 'list', retry_cap := '10 minutes',
    retry_delays := '{1 second,1 minute,1 hour}') AS _ \gset
SELECT is(
    ARRAY(SELECT app_jobs._retry_delay('lst_cap', n) FROM generate_series(1, 3) AS n),
    ARRAY['1 second', '1 minute', '10 minutes']::interval[],
    'list with retry_cap: capped'
);
-- Jitter: a random fraction either way, after the cap; bounds checked over many draws.
SELECT setseed(0.5) AS _ \gset
SELECT app_jobs.set_task_settings('jit', 'fixed', '100 seconds', retry_jitter := 0.25) AS _ \gset
CREATE TEMP TABLE draws AS
SELECT pg_temp.secs(app_jobs._retry_delay('jit', 1 + g % 5)) AS s FROM generate_series(1, 500) AS g;
SELECT is(
    (SELECT count(*)::integer FROM draws WHERE s BETWEEN 75 AND 125), 500,
    'jitter 0.25 on 100 s: every delay within 75..125 s'
);
SELECT ok(
    (SELECT min(s) < 90 AND max(s) > 110 AND count(DISTINCT s) > 400 FROM draws),
    'and the delays are spread over that range'
);
SELECT ok((SELECT avg(s) BETWEEN 95 AND 105 FROM draws), 'centred on the base');
SELECT app_jobs.set_task_settings('jit_cap', 'exponential', '10 seconds', '60 seconds', 0.5) AS _ \gset
SELECT is(
    (SELECT count(*)::integer FROM generate_series(1, 300) AS g
     WHERE pg_temp.secs(app_jobs._retry_delay('jit_cap', 10)) BETWEEN 30 AND 90),
    300,
    'jitter applies after the cap: 60 s +- 50% stays within 30..90 s'
);
SELECT app_jobs.set_task_settings('jit_full', 'fixed', '10 seconds', retry_jitter := 1) AS _ \gset
SELECT is(
    (SELECT count(*)::integer FROM generate_series(1, 300) AS g
     WHERE pg_temp.secs(app_jobs._retry_delay('jit_full', 1)) BETWEEN 0 AND 20),
    300,
    'jitter 1: between 0 and twice the delay, never negative'
);
-- A large exponential base must not overflow: the cap bounds the delay.
SELECT app_jobs.set_task_settings('big', 'exponential', '3 hours', '1 day') AS _ \gset
SELECT is(app_jobs._retry_delay('big', 20), interval '1 day', 'a large base is capped (attempt 20)');
SELECT lives_ok(
    $$SELECT app_jobs._retry_delay('big', 31)$$,
    'exponential base 3 hours, cap 1 day, attempt 31: no overflow'
);

-- 4. fail_job and finish_jobs wait retry_delay from now.
SELECT app_jobs.set_task_settings('rf', 'fixed', '10 minutes') AS _ \gset
SELECT id AS f1 FROM app_jobs.add_job(identifier := 'rf') \gset
SELECT is(pg_temp.claim('w1', :f1), :f1::bigint, 'w1 claims an rf job');
SELECT is(
    (SELECT ROW(attempts, run_at, locked_by)::text FROM app_jobs.fail_job('w1', :f1, 'oops')),
    ROW(1, now() + interval '10 minutes', NULL::text)::text,
    'fail_job: run_at = now() + the fixed 10 minutes'
);
SELECT app_jobs.set_task_settings('rl_list', 'list', retry_delays := '{1 minute,5 minutes}') AS _ \gset
SELECT id AS f2 FROM app_jobs.add_job(identifier := 'rl_list') \gset
SELECT pg_temp.claim('w1', :f2) AS _ \gset
SELECT is((app_jobs.fail_job('w1', :f2)).run_at, now() + interval '1 minute', 'list: first failure waits 1 minute');
SELECT pg_temp.claim('w1', :f2) AS _ \gset
SELECT is((app_jobs.fail_job('w1', :f2)).run_at, now() + interval '5 minutes', 'second failure waits 5 minutes');
SELECT pg_temp.claim('w1', :f2) AS _ \gset
SELECT is(
    (SELECT (app_jobs.finish_jobs('w1', format('[{"id": %s, "attempt": 3, "error": "again"}]', :f2)::jsonb)).status),
    'retrying', 'finish_jobs records a third failure'
);
SELECT is(
    (SELECT run_at FROM app_jobs.jobs WHERE id = :f2), now() + interval '5 minutes',
    'which waits the last delay of the list'
);
SELECT app_jobs.set_task_settings('rf_jit', 'fixed', '100 seconds', retry_jitter := 0.25) AS _ \gset
SELECT id AS f3 FROM app_jobs.add_job(identifier := 'rf_jit') \gset
SELECT pg_temp.claim('w1', :f3) AS _ \gset
SELECT ok(
    (SELECT run_at BETWEEN now() + interval '75 seconds' AND now() + interval '125 seconds'
     FROM app_jobs.fail_job('w1', :f3)),
    'with jitter: run_at within now() + 75..125 s'
);
SELECT id AS f4 FROM app_jobs.add_job(identifier := 'no_settings') \gset
SELECT pg_temp.claim('w1', :f4) AS _ \gset
SELECT is(
    (app_jobs.fail_job('w1', :f4)).run_at, now() + exp(1) * interval '1 second',
    'a task without settings: the seed backoff, exp(1) s'
);

-- 5. Rate limit: a token bucket per task, shared by every claimer.
DELETE FROM app_jobs.jobs;
SELECT app_jobs.set_task_settings('rl', rate_limit := 3, rate_interval := '1 minute') AS _ \gset
SELECT is(
    (SELECT ROW(tokens, refilled_at <= clock_timestamp() AND refilled_at >= now())::text
     FROM app_jobs.task_settings WHERE task_identifier = 'rl'),
    ROW(0::double precision, true)::text,
    'a new limit starts with an empty bucket, refilled from now'
);
INSERT INTO app_jobs.jobs (task_identifier, run_at, priority)
SELECT 'rl', now() - interval '1 hour' + g * interval '1 second', 0 FROM generate_series(1, 40) AS g;
INSERT INTO app_jobs.jobs (task_identifier, run_at, priority)
SELECT 'free', now() - interval '1 hour', -1 FROM generate_series(1, 3) AS g;
CREATE FUNCTION pg_temp.take(p_tasks text[], p_batch integer DEFAULT 10) RETURNS text LANGUAGE sql AS $$
    SELECT coalesce(string_agg(task_identifier || '=' || n, ',' ORDER BY task_identifier), '')
    FROM (SELECT task_identifier, count(*) AS n
          FROM app_jobs.get_jobs('wr', p_tasks, batch_size := p_batch) GROUP BY 1) AS s;
$$;
CREATE FUNCTION pg_temp.bucket(p_tokens double precision, p_ago interval) RETURNS void LANGUAGE sql AS $$
    UPDATE app_jobs.task_settings SET tokens = p_tokens, refilled_at = clock_timestamp() - p_ago
    WHERE task_identifier = 'rl';
$$;
CREATE FUNCTION pg_temp.tokens() RETURNS double precision LANGUAGE sql AS $$
    SELECT tokens FROM app_jobs.task_settings WHERE task_identifier = 'rl';
$$;
SELECT is(pg_temp.take(ARRAY['rl']), '', 'a fresh limit hands out nothing');
SELECT ok(pg_temp.tokens() BETWEEN 0 AND 0.2, 'the bucket only refilled by the moment that passed');
SELECT ok(
    (SELECT refilled_at > now() AND refilled_at <= clock_timestamp() FROM app_jobs.task_settings
     WHERE task_identifier = 'rl'),
    'and records when it was refilled'
);
SELECT is(pg_temp.take(NULL), 'free=3', 'jobs of other tasks are handed out meanwhile, all of them');

SELECT pg_temp.bucket(0, '1 minute') AS _ \gset
SELECT is(pg_temp.take(ARRAY['rl']), 'rl=3', 'one interval later: rate_limit (3) jobs');
SELECT ok(pg_temp.tokens() BETWEEN 0 AND 0.2, 'the tokens are spent');
SELECT is(pg_temp.take(ARRAY['rl']), '', 'so nothing more right away');
SELECT pg_temp.bucket(0, '40 seconds') AS _ \gset
SELECT is(pg_temp.take(ARRAY['rl']), 'rl=2', '40 seconds: two tokens, two jobs');
SELECT ok(pg_temp.tokens() BETWEEN 0 AND 0.2, 'spent');
SELECT pg_temp.bucket(0.5, '10 seconds') AS _ \gset
SELECT is(pg_temp.take(ARRAY['rl']), 'rl=1', 'half a token left plus 10 seconds'' half: one job');
SELECT pg_temp.bucket(0, '10 seconds') AS _ \gset
SELECT is(pg_temp.take(ARRAY['rl']), '', 'half a token: no job');
SELECT ok(pg_temp.tokens() BETWEEN 0.5 AND 0.7, 'the fraction is kept');
SELECT pg_temp.bucket(3, '0') AS _ \gset
SELECT is(pg_temp.take(ARRAY['rl'], 2), 'rl=2', 'batch_size smaller than the tokens: batch_size jobs');
SELECT ok(pg_temp.tokens() BETWEEN 1 AND 1.2, 'only those tokens are spent');
SELECT pg_temp.bucket(0, '1 hour') AS _ \gset
SELECT is(pg_temp.take(ARRAY['rl']), 'rl=3', 'without rate_burst the bucket holds at most rate_limit tokens');
-- rate_burst: a bigger bucket. The same limit and interval keep the bucket.
SELECT pg_temp.bucket(2.5, '0') AS _ \gset
SELECT app_jobs.set_task_settings('rl', rate_limit := 3, rate_interval := '1 minute', rate_burst := 5) AS _ \gset
SELECT is(pg_temp.tokens(), 2.5::double precision, 're-setting the same limit keeps the bucket');
SELECT pg_temp.bucket(0, '1 hour') AS _ \gset
SELECT is(pg_temp.take(ARRAY['rl']), 'rl=5', 'rate_burst 5: after a long pause, 5 jobs at once');
SELECT ok(pg_temp.tokens() BETWEEN 0 AND 0.2, 'the burst is spent');
SELECT pg_temp.bucket(100, '0') AS _ \gset
SELECT is(pg_temp.take(ARRAY['rl']), 'rl=5', 'a bucket holding more than rate_burst is capped');
-- Other tasks: unlimited ones and other limited ones keep their own pace.
SELECT app_jobs.set_task_settings('rl2', rate_limit := 1, rate_interval := '1 hour') AS _ \gset
UPDATE app_jobs.task_settings SET tokens = 1, refilled_at = clock_timestamp() WHERE task_identifier = 'rl2';
INSERT INTO app_jobs.jobs (task_identifier, run_at, priority)
SELECT t, now() - interval '2 hours', -1 FROM unnest(ARRAY['free', 'free', 'rl2', 'rl2']) AS t;
SELECT pg_temp.bucket(2, '0') AS _ \gset
SELECT is(pg_temp.take(NULL), 'free=2,rl=2,rl2=1', 'one claim: every free job, and each limited task its own tokens');
SELECT ok(
    (SELECT tokens BETWEEN 0 AND 0.2 FROM app_jobs.task_settings WHERE task_identifier = 'rl2'),
    'rl2 spent its token'
);
SELECT ok(pg_temp.tokens() BETWEEN 0 AND 0.2, 'rl spent its two');
SELECT pg_temp.bucket(2, '0') AS _ \gset
SELECT refilled_at AS rl2_refilled FROM app_jobs.task_settings WHERE task_identifier = 'rl2' \gset
SELECT is(pg_temp.take(ARRAY['rl']), 'rl=2', 'a claim for rl only');
SELECT is(
    (SELECT refilled_at FROM app_jobs.task_settings WHERE task_identifier = 'rl2'), :'rl2_refilled'::timestamptz,
    'leaves the bucket of a task it does not ask for alone'
);
-- A new limit starts over with an empty bucket.
SELECT pg_temp.bucket(3, '0') AS _ \gset
SELECT is(
    (app_jobs.set_task_settings('rl', rate_limit := 4, rate_interval := '1 minute')).tokens,
    0::double precision, 'changing the limit empties the bucket'
);
SELECT is(pg_temp.take(ARRAY['rl']), '', 'so nothing is handed out');
SELECT app_jobs.set_task_settings('rl') AS _ \gset
SELECT is(pg_temp.take(ARRAY['rl'], 3), 'rl=3', 'without a limit the task runs freely again');
-- The limit must not cost other tasks their place in the batch.
SELECT app_jobs.set_task_settings('rl', rate_limit := 3, rate_interval := '1 minute') AS _ \gset
INSERT INTO app_jobs.jobs (task_identifier, run_at) SELECT 'late', now() FROM generate_series(1, 3);
SELECT pg_temp.bucket(2, '0') AS _ \gset
SELECT is(
    pg_temp.take(ARRAY['rl', 'late'], 5), 'late=3,rl=2',
    'batch 5, rl first in claim order with 2 tokens: 2 rl jobs and the 3 others'
);

-- 6. Queue concurrency.
DELETE FROM app_jobs.jobs;
DELETE FROM app_jobs.task_settings;
SELECT throws_ok(
    format('SELECT app_jobs.set_queue_concurrency(%L, %s)', v.q, v.n), v.code, NULL, v.what
)
FROM (VALUES
    ('PJ025: 0', 'cq', '0', 'PJ025'),
    ('PJ025: negative', 'cq', '-2', 'PJ025'),
    ('PJ025: NULL', 'cq', 'NULL', 'PJ025'),
    ('PJ002: empty queue name', '', '3', 'PJ002'),
    ('PJ002: NULL queue name', NULL, '3', 'PJ002'),
    ('PJ002: queue name of 127 characters', repeat('q', 127), '3', 'PJ002')
) AS v (what, q, n, code);
SELECT is_empty($$SELECT * FROM app_jobs.queue_settings$$, 'refused calls store nothing');
SELECT is(app_jobs.set_queue_concurrency('cq', 4), 4, 'set_queue_concurrency returns the value');
SELECT is(app_jobs.set_queue_concurrency(queue_name := 'cq', max_concurrency := 3), 3, 'and can change it');
SELECT is(
    (SELECT array_agg(ROW(queue_name, max_concurrency)::text) FROM app_jobs.queue_settings),
    ARRAY[ROW('cq', 3)::text], 'one row per queue, with the latest value'
);
SELECT is(app_jobs._queue_concurrency('cq'), 3, 'queue_concurrency reads it');
SELECT is(app_jobs._queue_concurrency('elsewhere'), 1, 'and is 1 for any other queue');
SELECT is(app_jobs.set_queue_concurrency('gone', 5), 5, 'another queue');
SELECT is(app_jobs.set_queue_concurrency('gone', 1), 1, 'set back to 1');
SELECT is(
    (SELECT count(*)::integer FROM app_jobs.queue_settings WHERE queue_name = 'gone'), 0,
    '1 deletes the row (serial is the default)'
);
SELECT lives_ok($$SELECT app_jobs.set_queue_concurrency('never', 1)$$, '1 for a queue without a row is fine');

CREATE FUNCTION pg_temp.running() RETURNS text LANGUAGE sql AS $$
    SELECT coalesce(string_agg(queue_name || '=' || running_count, ',' ORDER BY queue_name), '')
    FROM app_jobs.job_queues;
$$;
CREATE FUNCTION pg_temp.truth() RETURNS text LANGUAGE sql AS $$
    SELECT coalesce(string_agg(queue_name || '=' || n, ',' ORDER BY queue_name), '')
    FROM (SELECT queue_name, count(*) FILTER (WHERE locked_at IS NOT NULL) AS n
          FROM app_jobs.jobs WHERE queue_name IS NOT NULL GROUP BY queue_name) AS s;
$$;
CREATE FUNCTION pg_temp.ids(p_worker text, p_batch integer DEFAULT 10) RETURNS bigint[] LANGUAGE sql AS $$
    SELECT coalesce(array_agg(id ORDER BY id), '{}') FROM app_jobs.get_jobs(p_worker, batch_size := p_batch);
$$;
INSERT INTO app_jobs.jobs (task_identifier, queue_name, run_at)
SELECT 'cj', 'cq', now() - interval '1 hour' + g * interval '1 second' FROM generate_series(1, 7) AS g;
INSERT INTO app_jobs.jobs (task_identifier, queue_name, run_at)
SELECT 'sj', 'sq', now() - interval '1 hour' + g * interval '1 second' FROM generate_series(1, 2) AS g;
-- The n-th job of a queue as first enqueued (ids fixed now, whatever leaves the table later).
CREATE TEMP TABLE queued AS
SELECT queue_name, row_number() OVER (PARTITION BY queue_name ORDER BY id)::integer AS n, id
FROM app_jobs.jobs;
CREATE FUNCTION pg_temp.nth(p_queue text, p_n integer) RETURNS bigint LANGUAGE sql AS $$
    SELECT id FROM queued WHERE queue_name = p_queue AND n = p_n;
$$;
INSERT INTO app_jobs.jobs (task_identifier, run_at)
SELECT 'nj', now() - interval '1 hour' FROM generate_series(1, 2) AS g;
SELECT id AS c1 FROM app_jobs.jobs WHERE queue_name = 'cq' ORDER BY id LIMIT 1 \gset
SELECT is(pg_temp.running(), 'cq=0,sq=0', 'nothing runs yet');
SELECT is(
    pg_temp.ids('w1'),
    ARRAY[pg_temp.nth('cq', 1), pg_temp.nth('cq', 2), pg_temp.nth('cq', 3), pg_temp.nth('sq', 1)]
    || ARRAY(SELECT id FROM app_jobs.jobs WHERE task_identifier = 'nj' ORDER BY id),
    'one claim: the first 3 jobs of cq (max 3), the first of the serial sq, and the unqueued jobs'
);
SELECT is(pg_temp.running(), 'cq=3,sq=1', 'running_count: cq 3, sq 1');
SELECT is(pg_temp.running(), pg_temp.truth(), 'equal to a count over the jobs');
SELECT is(pg_temp.ids('w2'), '{}'::bigint[], 'full queues: another worker gets nothing');
-- complete: a slot frees, the next job in order takes it.
SELECT is((app_jobs.complete_job('w1', pg_temp.nth('cq', 2))).id IS NOT NULL, true, 'w1 completes the second cq job');
SELECT is(pg_temp.running(), 'cq=2,sq=1', 'cq runs 2');
SELECT is(pg_temp.running(), pg_temp.truth(), 'exact after complete');
SELECT is(pg_temp.ids('w2'), ARRAY[pg_temp.nth('cq', 4)], 'w2 gets exactly the next cq job');
SELECT is(pg_temp.running(), 'cq=3,sq=1', 'cq full again');
-- fail (retry later): the slot frees; the failed job waits for its backoff.
SELECT is((app_jobs.fail_job('w1', :c1, 'x')).attempts, 1, 'w1 fails the first cq job (to retry)');
SELECT is(pg_temp.running(), 'cq=2,sq=1', 'cq runs 2');
SELECT is(pg_temp.running(), pg_temp.truth(), 'exact after fail');
SELECT is(pg_temp.ids('w2'), ARRAY[pg_temp.nth('cq', 5)], 'the next cq job takes the slot');
-- release: the job goes back, first in line again.
SELECT is(pg_temp.ids('w2'), '{}'::bigint[], 'cq is full');
SELECT app_jobs.release_jobs('w2', ARRAY[pg_temp.nth('cq', 5)]) AS _ \gset
SELECT is(pg_temp.running(), 'cq=2,sq=1', 'release_jobs frees the slot');
SELECT is(pg_temp.running(), pg_temp.truth(), 'exact after release');
SELECT is(pg_temp.ids('w3'), ARRAY[pg_temp.nth('cq', 5)], 'and the released job is claimed again first');
-- A better-priority job added later goes first into the next free slot.
INSERT INTO app_jobs.jobs (task_identifier, queue_name, priority, run_at)
VALUES ('cj', 'cq', -5, now()) RETURNING id AS urgent \gset
SELECT is((app_jobs.complete_job('w3', pg_temp.nth('cq', 5))).id IS NOT NULL, true, 'w3 completes its job');
SELECT is(pg_temp.ids('w3'), ARRAY[:urgent::bigint], 'the free slot goes to the better-priority job');
SELECT is(pg_temp.running(), pg_temp.truth(), 'exact');
-- reap: a dead registered worker's jobs are freed (a failed attempt each).
SELECT app_jobs.register_worker('wd') AS _ \gset
SELECT is((SELECT count(*)::integer FROM app_jobs.jobs WHERE locked_by IN ('w1', 'w2', 'w3') AND queue_name = 'cq'), 3,
    'cq runs 3 jobs of w1..w3');
UPDATE app_jobs.jobs SET locked_by = 'wd' WHERE id = pg_temp.nth('cq', 3);
UPDATE app_jobs.workers SET last_heartbeat = now() - interval '1 hour' WHERE id = 'wd';
SELECT is(
    (SELECT array_agg(status) FROM app_jobs.reap_dead_workers()), ARRAY['retrying'],
    'reap_dead_workers frees the dead worker''s cq job'
);
SELECT is(pg_temp.running(), 'cq=2,sq=1', 'cq runs 2');
SELECT is(pg_temp.running(), pg_temp.truth(), 'exact after reap');
-- force_unlock_workers and an expired lock freed by get_jobs.
SELECT app_jobs.force_unlock_workers(ARRAY['w2']) AS _ \gset
SELECT is(pg_temp.running(), 'cq=1,sq=1', 'force_unlock_workers frees w2''s cq job');
SELECT is(pg_temp.running(), pg_temp.truth(), 'exact after force_unlock_workers');
UPDATE app_jobs.jobs SET locked_at = now() - interval '5 hours' WHERE locked_by = 'w3';
SELECT is(
    pg_temp.ids('w4'), ARRAY[pg_temp.nth('cq', 3), pg_temp.nth('cq', 4), :urgent::bigint],
    'w4: w3''s expired lock is freed and 3 slots are filled (urgent first, then the freed jobs)'
);
SELECT is(pg_temp.running(), 'cq=3,sq=1', 'cq full');
SELECT is(pg_temp.running(), pg_temp.truth(), 'exact after an expired lock is taken over');
-- A running job cancelled, then ended by its worker.
SELECT is(app_jobs.cancel_job(pg_temp.nth('cq', 3)), 'cancelling', 'a running cq job is asked to cancel');
SELECT is(
    (SELECT status FROM app_jobs.finish_jobs('w4', format('[{"id": %s, "attempt": 2, "error": "stop"}]', pg_temp.nth('cq', 3))::jsonb)),
    'cancelled', 'its worker ends it (attempt 2: reaped once, then claimed by w4): cancelled'
);
SELECT is(pg_temp.running(), 'cq=2,sq=1', 'the slot frees');
SELECT is(pg_temp.running(), pg_temp.truth(), 'exact after a cancellation');
-- Lowering the limit below what runs: nothing more starts until enough have stopped.
SELECT is(app_jobs.set_queue_concurrency('cq', 1), 1, 'cq is made serial again while 2 of its jobs run');
SELECT is(pg_temp.ids('w5'), '{}'::bigint[], 'no cq job starts');
SELECT pg_temp.nth('cq', 4) AS c4 \gset
UPDATE app_jobs.jobs SET locked_at = now() - interval '5 hours' WHERE id = :c4;
SELECT is(
    (SELECT array_agg(id) FROM app_jobs.complete_jobs(ARRAY[:c4]::bigint[])), ARRAY[:c4::bigint],
    'complete_jobs (admin) removes a running job whose lock expired'
);
SELECT is(pg_temp.running(), 'cq=1,sq=1', 'one cq job still runs');
SELECT is(pg_temp.running(), pg_temp.truth(), 'exact after complete_jobs');
SELECT is(pg_temp.ids('w5'), '{}'::bigint[], 'still nothing starts');
SELECT is((app_jobs.complete_job('w4', :urgent)).id, :urgent::bigint, 'the last running cq job completes');
SELECT is(pg_temp.running(), 'cq=0,sq=1', 'none runs');
SELECT is(pg_temp.ids('w5'), ARRAY[pg_temp.nth('cq', 6)], 'exactly one cq job starts, the next in order (serial)');
SELECT is(pg_temp.ids('w5'), '{}'::bigint[], 'and no second one');
-- The default serial queue, sq.
SELECT is((app_jobs.complete_job('w1', pg_temp.nth('sq', 1))).id, pg_temp.nth('sq', 1), 'sq''s first job completes');
SELECT is(pg_temp.running(), 'cq=1,sq=0', 'sq runs none');
SELECT is(
    (SELECT array_agg(id) FROM app_jobs.get_jobs('w6', ARRAY['sj'], batch_size := 10)), ARRAY[pg_temp.nth('sq', 2)],
    'its second job starts, alone'
);
SELECT is(pg_temp.running(), pg_temp.truth(), 'exact at the end');
SELECT is(
    (SELECT count(*)::integer FROM app_jobs.job_queues WHERE running_count < 0 OR running_count > job_count), 0,
    'no running_count is negative or above job_count'
);

SELECT * FROM finish();
ROLLBACK;
