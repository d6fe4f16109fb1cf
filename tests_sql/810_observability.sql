-- Observability: the queue_stats view (each live state as in job_status, oldest_waiting, what finished in the last 5 minutes, history off), metrics_label escaping, app_jobs.metrics() (families, HELP/TYPE, samples for a crafted set of jobs, workers and stale workers, history_enabled, a hostile task name escaped and every line well formed).
BEGIN;
\ir setup.psql
SELECT plan(35);

-- 1. The view and function exist.
SELECT has_view('app_jobs', 'queue_stats', 'view app_jobs.queue_stats exists');
SELECT columns_are(
    'app_jobs', 'queue_stats',
    ARRAY[
        'task_identifier', 'queue_name', 'waiting', 'scheduled', 'running', 'retrying',
        'failed', 'blocked', 'oldest_waiting', 'completed_last_5m', 'failed_last_5m',
        'cancelled_last_5m', 'completed_per_minute', 'failed_per_minute'
    ],
    'queue_stats has the documented columns'
);
SELECT has_function('app_jobs', 'metrics', ARRAY[]::text[], 'app_jobs.metrics() exists');
SELECT function_returns('app_jobs', 'metrics', ARRAY[]::text[], 'text', 'metrics() returns text');
SELECT is_empty($$SELECT * FROM app_jobs.queue_stats$$, 'no jobs, no history: no rows');

-- 2. A crafted set of jobs (now() is the transaction's start throughout).
-- Task a, no queue: 2 waiting (due 1 min and 30 s ago), 1 scheduled, 1 running, 1 retrying
-- (due 2 min ago: it counts for oldest_waiting, not for waiting), 1 failed for good,
-- 1 blocked (due 10 min ago: not runnable, so not in oldest_waiting).
INSERT INTO app_jobs.jobs (task_identifier, run_at) VALUES
('a', now() - interval '1 minute'),
('a', now() - interval '30 seconds'),
('a', now() + interval '1 hour');
INSERT INTO app_jobs.jobs (task_identifier, run_at, locked_at, locked_by, attempts)
VALUES ('a', now() - interval '20 minutes', now(), 'w1', 1);
INSERT INTO app_jobs.jobs (task_identifier, run_at, attempts, last_error)
VALUES ('a', now() - interval '2 minutes', 1, 'boom');
INSERT INTO app_jobs.jobs (task_identifier, run_at, attempts, max_attempts, last_error)
VALUES ('a', now() - interval '30 minutes', 3, 3, 'boom');
INSERT INTO app_jobs.jobs (task_identifier, run_at, blocked_by)
VALUES ('a', now() - interval '10 minutes', 1);
-- Task a in queue q: one waiting job due 5 s ago; a retrying job not due yet.
INSERT INTO app_jobs.jobs (task_identifier, queue_name, run_at) VALUES
('a', 'q', now() - interval '5 seconds');
INSERT INTO app_jobs.jobs (task_identifier, queue_name, run_at, attempts)
VALUES ('a', 'q', now() + interval '1 minute', 2);
-- History: task a completed 3, failed 1, cancelled 1 in the last 5 minutes, 2 completed
-- earlier (not counted); task h (no live job) completed 4 in queue q2.
INSERT INTO app_jobs.job_history (job_id, task_identifier, queue_name, payload, priority,
                                  status, attempts, max_attempts, created_at, finished_at)
SELECT 5000 + row_number() OVER (), v.task, v.queue, '{}', 0, v.status, 1, 25, now() - interval '1 hour',
       now() - v.ago
FROM (VALUES
    ('a', NULL, 'completed', interval '10 seconds', 3),
    ('a', NULL, 'failed', interval '4 minutes', 1),
    ('a', NULL, 'cancelled', interval '299 seconds', 1),
    ('a', NULL, 'completed', interval '5 minutes 1 second', 1),
    ('a', NULL, 'completed', interval '2 hours', 1),
    ('h', 'q2', 'completed', interval '1 minute', 4)
) AS v (task, queue, status, ago, k)
CROSS JOIN LATERAL generate_series(1, v.k) AS g;

SELECT results_eq(
    $$SELECT task_identifier, queue_name, waiting, scheduled, running, retrying, failed, blocked
      FROM app_jobs.queue_stats ORDER BY task_identifier, queue_name NULLS FIRST$$,
    $$VALUES ('a'::text, NULL::text, 2::bigint, 1::bigint, 1::bigint, 1::bigint, 1::bigint,
              1::bigint),
             ('a', 'q', 1, 0, 0, 1, 0, 0),
             ('h', 'q2', 0, 0, 0, 0, 0, 0)$$,
    'live jobs per task and queue, by state'
);
SELECT results_eq(
    $$SELECT s.status, count(*) FROM app_jobs.job_status AS s
      WHERE s.task_identifier = 'a' AND s.queue_name IS NULL AND s.finished_at IS NULL
      GROUP BY s.status ORDER BY s.status$$,
    $$VALUES ('blocked'::text, 1::bigint), ('failed', 1), ('retrying', 1), ('running', 1),
             ('scheduled', 1), ('waiting', 2)$$,
    'the same states job_status gives'
);
SELECT results_eq(
    $$SELECT task_identifier, queue_name, oldest_waiting FROM app_jobs.queue_stats
      ORDER BY task_identifier, queue_name NULLS FIRST$$,
    $$VALUES ('a'::text, NULL::text, interval '2 minutes'), ('a', 'q', interval '5 seconds'),
             ('h', 'q2', NULL)$$,
    'oldest_waiting: the longest-due runnable job (a due retry counts; blocked does not)'
);
SELECT results_eq(
    $$SELECT task_identifier, queue_name, completed_last_5m, failed_last_5m, cancelled_last_5m,
             completed_per_minute, failed_per_minute
      FROM app_jobs.queue_stats ORDER BY task_identifier, queue_name NULLS FIRST$$,
    $$VALUES ('a'::text, NULL::text, 3::bigint, 1::bigint, 1::bigint, 0.60, 0.20),
             ('a', 'q', 0, 0, 0, 0.00, 0.00),
             ('h', 'q2', 4, 0, 0, 0.80, 0.00)$$,
    'finished in the last 5 minutes, and per minute; older history is left out'
);
SELECT is(
    (SELECT count(*)::integer FROM app_jobs.queue_stats WHERE completed_per_minute IS NULL
         OR failed_per_minute IS NULL OR completed_last_5m IS NULL),
    0,
    'the rates are never NULL'
);

-- 3. metrics_label escaping.
SELECT is(app_jobs._metrics_label('plain'), 'plain', 'a plain value is unchanged');
SELECT is(app_jobs._metrics_label(NULL), '', 'NULL is the empty value');
SELECT is(
    app_jobs._metrics_label(E'a\\b"c\nd'), E'a\\\\b\\"c\\nd',
    'backslash, double quote and newline are escaped'
);
SELECT is(
    app_jobs._metrics_label(E'\\n'), E'\\\\n', 'a literal backslash-n stays distinguishable'
);

-- 4. metrics().
SELECT app_jobs.register_worker('w1', 'h', 1, ARRAY['a'], interval '5 seconds');
SELECT app_jobs.register_worker('w2', 'h', 2, ARRAY['a'], interval '2 seconds');
SELECT app_jobs.register_worker('w3', 'h', 3, ARRAY['a'], interval '5 seconds');
UPDATE app_jobs.workers SET last_heartbeat = now() - interval '7 seconds' WHERE id = 'w2';
UPDATE app_jobs.workers SET last_heartbeat = now() - interval '14 seconds' WHERE id = 'w3';
CREATE TEMP TABLE m AS
SELECT l.line, l.n FROM regexp_split_to_table(app_jobs.metrics(), E'\n') WITH ORDINALITY AS l (line, n);

SELECT ok(app_jobs.metrics() LIKE E'%\n', 'the text ends with a newline');
SELECT is(
    (SELECT array_agg(line ORDER BY n) FROM m WHERE line LIKE '# TYPE %'),
    ARRAY[
        '# TYPE pgjobs_jobs gauge', '# TYPE pgjobs_oldest_waiting_seconds gauge',
        '# TYPE pgjobs_finished_last_5m gauge', '# TYPE pgjobs_history_enabled gauge',
        '# TYPE pgjobs_workers gauge', '# TYPE pgjobs_workers_stale gauge',
        '# TYPE pgjobs_notification_queue_usage gauge',
        '# TYPE pgjobs_notifications_skipped_total counter',
        '# TYPE pgjobs_schedules_failing gauge'
    ],
    'one TYPE line per family, in order'
);
SELECT is(
    (SELECT count(*)::integer FROM m WHERE line LIKE '# HELP pgjobs_% %'), 9,
    'one HELP line per family'
);
SELECT is(
    (SELECT array_agg(line ORDER BY n) FROM m WHERE line LIKE 'pgjobs_jobs{task="a",queue=""%'),
    ARRAY[
        'pgjobs_jobs{task="a",queue="",state="blocked"} 1',
        'pgjobs_jobs{task="a",queue="",state="failed"} 1',
        'pgjobs_jobs{task="a",queue="",state="retrying"} 1',
        'pgjobs_jobs{task="a",queue="",state="running"} 1',
        'pgjobs_jobs{task="a",queue="",state="scheduled"} 1',
        'pgjobs_jobs{task="a",queue="",state="waiting"} 2'
    ],
    'pgjobs_jobs: every state of task a without a queue (queue="")'
);
SELECT ok(
    EXISTS (SELECT 1 FROM m WHERE line = 'pgjobs_jobs{task="a",queue="q",state="retrying"} 1'),
    'pgjobs_jobs for queue q'
);
SELECT ok(
    EXISTS (SELECT 1 FROM m WHERE line = 'pgjobs_jobs{task="h",queue="q2",state="waiting"} 0'),
    'a task known only from recent history has zero gauges'
);
SELECT results_eq(
    $$SELECT line FROM m WHERE line LIKE 'pgjobs_oldest_waiting_seconds{%' ORDER BY n$$,
    $$VALUES ('pgjobs_oldest_waiting_seconds{task="a",queue=""} 120.000'),
             ('pgjobs_oldest_waiting_seconds{task="a",queue="q"} 5.000'),
             ('pgjobs_oldest_waiting_seconds{task="h",queue="q2"} 0')$$,
    'pgjobs_oldest_waiting_seconds (0 when nothing waits)'
);
SELECT results_eq(
    $$SELECT line FROM m WHERE line LIKE 'pgjobs_finished_last_5m{%' ORDER BY n$$,
    $$VALUES ('pgjobs_finished_last_5m{task="a",status="cancelled"} 1'),
             ('pgjobs_finished_last_5m{task="a",status="completed"} 3'),
             ('pgjobs_finished_last_5m{task="a",status="failed"} 1'),
             ('pgjobs_finished_last_5m{task="h",status="cancelled"} 0'),
             ('pgjobs_finished_last_5m{task="h",status="completed"} 4'),
             ('pgjobs_finished_last_5m{task="h",status="failed"} 0')$$,
    'pgjobs_finished_last_5m per task (all queues) and status'
);
SELECT ok(EXISTS (SELECT 1 FROM m WHERE line = 'pgjobs_history_enabled 1'), 'history on: 1');
SELECT ok(EXISTS (SELECT 1 FROM m WHERE line = 'pgjobs_workers 3'), 'three registered workers');
SELECT ok(
    EXISTS (SELECT 1 FROM m WHERE line = 'pgjobs_workers_stale 1'),
    'one stale worker: w2, silent 7 s with a 2 s interval (w3: 14 s < 3 x 5 s)'
);
SELECT ok(
    EXISTS (SELECT 1 FROM m WHERE line ~ '^pgjobs_notification_queue_usage [0-9.e+-]+$'),
    'pgjobs_notification_queue_usage is a number'
);

-- 5. A hostile task name and queue are escaped, and every line stays well formed.
INSERT INTO app_jobs.jobs (task_identifier, queue_name, run_at)
VALUES (E'ev"il\\task\n# TYPE x counter', E'q"\\\n', now());
SELECT ok(
    strpos(
        app_jobs.metrics(),
        E'pgjobs_jobs{task="ev\\"il\\\\task\\n# TYPE x counter",queue="q\\"\\\\\\n",'
        || E'state="waiting"} 1\n'
    ) > 0,
    'quote, backslash and newline of task and queue are escaped in the sample'
);
SELECT is(
    (SELECT count(*)::integer
     FROM regexp_split_to_table(rtrim(app_jobs.metrics(), E'\n'), E'\n') AS l (line)
     WHERE line LIKE '# TYPE %'),
    9,
    'the newline in the task name does not start a line of its own'
);
SELECT is_empty(
    $$SELECT line FROM regexp_split_to_table(rtrim(app_jobs.metrics(), E'\n'), E'\n') AS l (line)
      WHERE line !~ '^# (HELP|TYPE) pgjobs_[a-z0-9_]+ .+$'
        AND line !~ '^pgjobs_[a-z0-9_]+(\{([a-z_]+="([^"\\]|\\["\\n])*",)*[a-z_]+="([^"\\]|\\["\\n])*"\})? [0-9]+(\.[0-9]+)?(e[+-]?[0-9]+)?$'$$,
    'every line is a HELP/TYPE comment or a well-formed sample'
);

-- 6. History off: what finished is no longer recorded; the gauge says so.
DELETE FROM app_jobs.job_history;
INSERT INTO app_jobs.settings (name, value) VALUES ('history', 'off');
SELECT id AS done FROM app_jobs.add_job(identifier := 'off') \gset
SELECT is((app_jobs.get_job('w1', ARRAY['off'])).id, :done::bigint, 'w1 claims a job');
SELECT is(
    (SELECT status FROM app_jobs.finish_jobs('w1', format('[{"id": %s, "attempt": 1}]', :done)::jsonb)),
    'completed',
    'and completes it'
);
SELECT is(
    (SELECT row(completed_last_5m, completed_per_minute)::text FROM app_jobs.queue_stats
     WHERE task_identifier = 'a' AND queue_name IS NULL),
    row(0::bigint, 0.00::numeric)::text,
    'history off: 0 finished, 0 per minute'
);
SELECT is_empty(
    $$SELECT * FROM app_jobs.queue_stats WHERE task_identifier = 'off'$$,
    'a task whose only job finished without history has no row'
);
SELECT ok(
    strpos(app_jobs.metrics(), E'\npgjobs_history_enabled 0\n') > 0,
    'pgjobs_history_enabled 0'
);
SELECT ok(
    strpos(app_jobs.metrics(), E'pgjobs_finished_last_5m{task="a",status="completed"} 0\n') > 0,
    'pgjobs_finished_last_5m falls to 0'
);

SELECT * FROM finish();
ROLLBACK;
