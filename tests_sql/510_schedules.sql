-- Scheduler: DST rules, schedule windows, JSON-array schedules, write-time validation,
-- and run_due_scheduled_jobs (once per slot, latest missed slot, backfill).
BEGIN;
\ir setup.psql
SELECT plan(46);

-- DST in Europe/Berlin and America/New_York, both transitions.
SELECT is(
    app_jobs.schedule_next_run(json_build_object('rule', expr, 'tz', tz), after),
    expected,
    format('%s in %s after %s', expr, tz, after)
)
FROM (VALUES
    -- Berlin spring forward 2024-03-31: 02:00 CET -> 03:00 CEST (01:00Z); 02:30 is skipped.
    ('30 2 * * *', 'Europe/Berlin', '2024-03-30 12:00+00'::timestamptz, '2024-03-31 01:00+00'::timestamptz),
    ('0 3 * * *', 'Europe/Berlin', '2024-03-30 12:00+00', '2024-03-31 01:00+00'),
    ('*/30 * * * *', 'Europe/Berlin', '2024-03-31 00:45+00', '2024-03-31 01:00+00'),
    ('*/30 * * * *', 'Europe/Berlin', '2024-03-31 01:00+00', '2024-03-31 01:30+00'),
    ('30 2 * * *', 'Europe/Berlin', '2024-03-31 01:00+00', '2024-04-01 00:30+00'),
    -- Berlin fall back 2024-10-27: 03:00 CEST -> 02:00 CET (01:00Z); 02:30 happens twice.
    ('30 2 * * *', 'Europe/Berlin', '2024-10-26 12:00+00', '2024-10-27 00:30+00'),
    ('30 2 * * *', 'Europe/Berlin', '2024-10-27 00:30+00', '2024-10-28 01:30+00'),
    ('30 2 * * *', 'Europe/Berlin', '2024-10-27 01:10+00', '2024-10-28 01:30+00'),
    ('0 * * * *', 'Europe/Berlin', '2024-10-27 00:30+00', '2024-10-27 02:00+00'),
    -- New York spring forward 2024-03-10: 02:00 EST -> 03:00 EDT (07:00Z).
    ('30 2 * * *', 'America/New_York', '2024-03-09 12:00+00', '2024-03-10 07:00+00'),
    ('0 4 * * *', 'America/New_York', '2024-03-09 12:00+00', '2024-03-10 08:00+00'),
    ('0 2 * * *', 'America/New_York', '2024-03-10 07:00+00', '2024-03-11 06:00+00'),
    -- New York fall back 2024-11-03: 02:00 EDT -> 01:00 EST (06:00Z); 01:30 happens twice.
    ('30 1 * * *', 'America/New_York', '2024-11-02 12:00+00', '2024-11-03 05:30+00'),
    ('30 1 * * *', 'America/New_York', '2024-11-03 05:30+00', '2024-11-04 06:30+00'),
    ('30 1 * * *', 'America/New_York', '2024-11-03 06:10+00', '2024-11-04 06:30+00'),
    ('*/30 * * * *', 'America/New_York', '2024-11-03 05:45+00', '2024-11-03 07:00+00')
) AS t (expr, tz, after, expected);

-- Windows, JSON arrays, defaults.
SELECT is(
    app_jobs.schedule_next_run(info::json, after), expected, description
)
FROM (VALUES
    ('{"rule": "* * * * *", "start": "2030-01-01T00:00:30Z"}', '2024-01-01 00:00+00'::timestamptz,
     '2030-01-01 00:01+00'::timestamptz, 'no slot before start'),
    ('{"rule": "* * * * *", "start": "2030-01-01T00:00:00Z"}', '2024-01-01 00:00+00',
     '2030-01-01 00:00+00', 'a slot exactly at start counts'),
    ('{"rule": "0 0 1 1 *", "end": "2025-06-01T00:00:00Z"}', '2025-01-01 00:00+00',
     NULL, 'NULL once past end'),
    ('{"rule": "0 0 * * *", "end": "2025-06-01T00:00:00Z"}', '2025-05-31 00:00+00',
     '2025-06-01 00:00+00', 'a slot exactly at end counts'),
    ('{"hour": [2], "minute": [0], "dayOfWeek": [0, 1, 2, 3, 4, 5, 6]}', '2024-01-01 03:00+00',
     '2024-01-02 02:00+00', 'seed JSON-array form'),
    ('{"minute": [15, 45]}', '2024-01-01 03:20+00', '2024-01-01 03:45+00',
     'missing fields mean every'),
    ('{"hour": [9], "minute": [0], "dayOfWeek": [7]}', '2024-01-01 00:00+00',
     '2024-01-07 09:00+00', '7 is Sunday in JSON arrays'),
    ('{"rule": "0 9 * * 7", "tz": "Asia/Tokyo"}', '2024-01-01 00:00+00',
     '2024-01-07 00:00+00', '7 is Sunday in rules, local time in tz'),
    ('{"rule": "0 0 30 2 *"}', '2024-01-01 00:00+00', NULL, 'an impossible date never fires')
) AS t (info, after, expected, description);

-- Bad schedules are refused when written.
SELECT throws_ok(
    format(
        'SELECT app_jobs.add_scheduled_job(identifier := %L, schedule_info := %L::json)',
        'bad', info
    ),
    code, NULL, format('%s is refused with %s', info, code)
)
FROM (VALUES
    ('{"rule": "61 * * * *"}', 'PJ008'),
    ('{"rule": "* * * *"}', 'PJ008'),
    ('{"rule": "*/0 * * * *"}', 'PJ008'),
    ('{"rule": "0 0 * foo *"}', 'PJ008'),
    ('{"rule": "0 0 * * funday"}', 'PJ008'),
    ('{"rule": "@fortnightly"}', 'PJ008'),
    ('{"rule": "5-1 * * * *"}', 'PJ008'),
    ('{"minute": 5}', 'PJ008'),
    ('{"hour": ["2"]}', 'PJ008'),
    ('{"hour": [24]}', 'PJ008'),
    ('{"rule": "* * * * *", "tz": "Mars/Olympus"}', 'PJ010'),
    ('{"rule": "* * * * *", "start": "2030-01-01", "end": "2029-01-01"}', 'PJ011'),
    ('{"rule": "* * * * *", "start": "not a time"}', 'PJ008')
) AS t (info, code);

SELECT throws_ok(
    $$INSERT INTO app_jobs.scheduled_jobs (task_identifier, schedule_info)
      VALUES ('bad', '{"rule": "* * *"}')$$,
    'PJ008', NULL, 'a plain INSERT is validated too'
);

-- run_due_scheduled_jobs: latest missed slot by default, every slot within backfill.
CREATE TEMP TABLE added ON COMMIT DROP AS
SELECT app_jobs.add_scheduled_job(
    identifier := 'tick_latest', schedule_info := '{"rule": "*/10 * * * *"}', job_key := 'a'
);
INSERT INTO added
SELECT app_jobs.add_scheduled_job(
    identifier := 'tick_backfill',
    schedule_info := '{"rule": "*/10 * * * *", "backfill": "35 minutes"}', job_key := 'b'
);
UPDATE app_jobs.scheduled_jobs SET next_run_at = '2024-05-01 10:00+00';

SELECT is(
    (SELECT count(*)::integer FROM app_jobs.run_due_scheduled_jobs('2024-05-01 11:05+00')),
    5, 'one tick: 1 latest slot + 4 backfilled slots'
);
SELECT results_eq(
    $$SELECT run_at FROM app_jobs.jobs WHERE task_identifier = 'tick_latest'$$,
    $$VALUES ('2024-05-01 11:00+00'::timestamptz)$$,
    'without backfill only the latest missed slot runs'
);
SELECT results_eq(
    $$SELECT run_at FROM app_jobs.jobs WHERE task_identifier = 'tick_backfill' ORDER BY 1$$,
    $$VALUES ('2024-05-01 10:30+00'::timestamptz), ('2024-05-01 10:40+00'),
             ('2024-05-01 10:50+00'), ('2024-05-01 11:00+00')$$,
    'with backfill every missed slot within the window runs'
);
SELECT results_eq(
    $$SELECT next_run_at FROM app_jobs.scheduled_jobs ORDER BY key$$,
    $$VALUES ('2024-05-01 11:10+00'::timestamptz), ('2024-05-01 11:10+00')$$,
    'next_run_at moves past as_of'
);
SELECT is(
    (SELECT count(*)::integer FROM app_jobs.run_due_scheduled_jobs('2024-05-01 11:09+00')),
    0, 'a second tick before the next slot enqueues nothing'
);
SELECT is(
    (SELECT last_scheduled FROM app_jobs.scheduled_jobs WHERE key = 'a'),
    '2024-05-01 11:00+00'::timestamptz, 'last_scheduled records the slot'
);
SELECT is(
    (SELECT last_scheduled_id FROM app_jobs.scheduled_jobs WHERE key = 'a'),
    (SELECT id FROM app_jobs.jobs WHERE task_identifier = 'tick_latest'),
    'last_scheduled_id records the job'
);

SELECT * FROM finish();
ROLLBACK;
