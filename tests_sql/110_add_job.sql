-- add_job without a key: defaults, explicit and positional arguments, NULL arguments, db_id from jwt.claims.database_id, boundary values (lengths, max_attempts, priority) stored exactly as given.
BEGIN;
\ir setup.psql
SELECT plan(60);

-- No jwt.claims.database_id setting at all: db_id is NULL.
SELECT is(
    (app_jobs.add_job(identifier := 'no_setting')).database_id,
    NULL::uuid,
    'without the setting, db_id is NULL'
);

-- Only the identifier: every other column takes its documented default.
SELECT set_config('jwt.claims.database_id', '', true) AS _cfg \gset
SELECT to_jsonb(a) AS ret1, a.id AS j1
FROM app_jobs.add_job(identifier := 'plain') AS a \gset

SELECT is(
    to_jsonb(j) ->> v.col, v.expected,
    format('default %s is %s', v.col, coalesce(v.expected, 'NULL'))
)
FROM app_jobs.jobs AS j,
    (VALUES
        ('database_id', NULL),
        ('task_identifier', 'plain'),
        ('queue_name', NULL),
        ('payload', '{}'),
        ('priority', '0'),
        ('run_at', to_jsonb(now()) #>> '{}'),
        ('attempts', '0'),
        ('max_attempts', '25'),
        ('key', NULL),
        ('last_error', NULL),
        ('locked_at', NULL),
        ('locked_by', NULL),
        ('created_at', to_jsonb(now()) #>> '{}'),
        ('updated_at', to_jsonb(now()) #>> '{}'),
        ('is_available', 'true')
    ) AS v (col, expected)
WHERE j.id = :j1;

SELECT is(
    (SELECT to_jsonb(j) FROM app_jobs.jobs AS j WHERE j.id = :j1),
    :'ret1'::jsonb,
    'add_job returns the inserted row'
);

-- Every argument named.
SELECT id AS j2 FROM app_jobs.add_job(
    db_id := '11111111-1111-1111-1111-111111111111'::uuid,
    identifier := 'full',
    payload := '{"a": [1, 2, {"b": null}], "c": "d"}'::json,
    queue_name := 'q_full',
    run_at := '2001-02-03 04:05:06+00',
    max_attempts := 3,
    priority := -7
) \gset

SELECT is(
    to_jsonb(j) ->> v.col, v.expected, format('named arguments: %s', v.col)
)
FROM app_jobs.jobs AS j,
    (VALUES
        ('database_id', '11111111-1111-1111-1111-111111111111'),
        ('task_identifier', 'full'),
        ('queue_name', 'q_full'),
        ('priority', '-7'),
        ('run_at', to_jsonb('2001-02-03 04:05:06+00'::timestamptz) #>> '{}'),
        ('attempts', '0'),
        ('max_attempts', '3'),
        ('key', NULL)
    ) AS v (col, expected)
WHERE j.id = :j2;
SELECT is(
    (SELECT payload::text FROM app_jobs.jobs WHERE id = :j2),
    '{"a": [1, 2, {"b": null}], "c": "d"}',
    'payload is stored as given (json keeps its text)'
);

-- The same call positionally.
SELECT id AS j3 FROM app_jobs.add_job(
    '22222222-2222-2222-2222-222222222222'::uuid, 'positional', '{"p": 1}'::json,
    NULL, 'q_pos', '2002-01-01 00:00:00+00'::timestamptz, 4, 9
) \gset
SELECT is(
    (SELECT ROW(database_id, task_identifier, payload::text, key, queue_name, run_at,
                max_attempts, priority)::text
     FROM app_jobs.jobs WHERE id = :j3),
    ROW('22222222-2222-2222-2222-222222222222'::uuid, 'positional', '{"p": 1}', NULL::text,
        'q_pos', '2002-01-01 00:00:00+00'::timestamptz, 4, 9)::text,
    'positional arguments land in the right columns'
);

-- Explicit NULLs fall back to the defaults.
SELECT id AS j4 FROM app_jobs.add_job(
    identifier := 'nulls', payload := NULL, run_at := NULL,
    max_attempts := NULL, priority := NULL
) \gset
SELECT is(
    (SELECT ROW(payload::text, run_at, max_attempts, priority)::text
     FROM app_jobs.jobs WHERE id = :j4),
    ROW('{}', now(), 25, 0)::text,
    'NULL payload/run_at/max_attempts/priority take the defaults'
);

-- db_id defaults to the jwt.claims.database_id setting, read at call time.
SELECT set_config('jwt.claims.database_id', '33333333-3333-3333-3333-333333333333', true) AS _cfg \gset
SELECT is(
    (app_jobs.add_job(identifier := 'from_setting')).database_id,
    '33333333-3333-3333-3333-333333333333'::uuid,
    'db_id comes from jwt.claims.database_id when not given'
);
SELECT is(
    (app_jobs.add_job(
        db_id := '44444444-4444-4444-4444-444444444444'::uuid, identifier := 'explicit'
    )).database_id,
    '44444444-4444-4444-4444-444444444444'::uuid,
    'an explicit db_id wins over the setting'
);
SELECT is(
    (app_jobs.add_job(db_id := NULL, identifier := 'explicit_null')).database_id,
    NULL::uuid,
    'an explicit NULL db_id stays NULL'
);
SELECT set_config('jwt.claims.database_id', '55555555-5555-5555-5555-555555555555', true) AS _cfg \gset
SELECT is(
    (app_jobs.add_job(identifier := 'changed_setting')).database_id,
    '55555555-5555-5555-5555-555555555555'::uuid,
    'the setting is read at each call'
);
SELECT set_config('jwt.claims.database_id', '', true) AS _cfg \gset
SELECT is(
    (app_jobs.add_job(identifier := 'empty_setting')).database_id,
    NULL::uuid,
    'an empty setting gives a NULL db_id'
);

-- Without a key, every call inserts a new job.
SELECT is(
    (SELECT count(*)::int FROM (
        SELECT app_jobs.add_job(identifier := 'dup') UNION ALL
        SELECT app_jobs.add_job(identifier := 'dup') UNION ALL
        SELECT app_jobs.add_job(identifier := 'dup')
    ) AS s),
    3,
    'three calls return three rows'
);
SELECT is(
    (SELECT count(*)::int FROM app_jobs.jobs WHERE task_identifier = 'dup'),
    3,
    'three identical calls without a key make three jobs'
);
SELECT is(
    (SELECT count(DISTINCT id)::int FROM app_jobs.jobs WHERE task_identifier = 'dup'),
    3,
    'each has its own id'
);

-- Boundary values are accepted and stored exactly as given (not just "no error"): each
-- case's call is made inside lives_ok, then its job is read back.
CREATE TEMP TABLE bounds (
    n serial, what text, identifier text, queue_name text, job_key text,
    max_attempts integer, priority integer, job_id bigint
);
INSERT INTO bounds (what, identifier, queue_name, job_key, max_attempts, priority) VALUES
    ('identifier of 1 character', 'i', NULL, NULL, NULL, NULL),
    ('identifier of 126 characters', repeat('i', 125) || 'j', NULL, NULL, NULL, NULL),
    ('identifier of 126 multi-byte characters', repeat('é', 126), NULL, NULL, NULL, NULL),
    ('queue name of 1 character', 'b', 'q', NULL, NULL, NULL),
    ('queue name of 126 characters', 'b', 'q' || repeat('r', 124) || 's', NULL, NULL, NULL),
    ('key of 1 character', 'b', NULL, 'k', NULL, NULL),
    ('key of 512 characters', 'b', NULL, 'k' || repeat('l', 510) || 'm', NULL, NULL),
    ('max_attempts of 1', 'b', NULL, NULL, 1, NULL),
    ('max_attempts of 10000', 'b', NULL, NULL, 10000, NULL),
    ('the lowest priority', 'b', NULL, NULL, NULL, -2147483648),
    ('the highest priority', 'b', NULL, NULL, NULL, 2147483647);
SELECT lives_ok(
    format(
        'UPDATE bounds SET job_id = (app_jobs.add_job(identifier := %L, queue_name := %L, '
        'job_key := %L, max_attempts := %s, priority := %s)).id WHERE n = %s',
        b.identifier, b.queue_name, b.job_key, coalesce(b.max_attempts::text, 'NULL'),
        coalesce(b.priority::text, 'NULL'), b.n
    ),
    b.what || ' is accepted'
)
FROM bounds AS b ORDER BY b.n;
SELECT is(
    (SELECT ROW(j.task_identifier, j.queue_name, j.key, j.max_attempts, j.priority)::text
     FROM app_jobs.jobs AS j WHERE j.id = b.job_id),
    ROW(b.identifier, b.queue_name, b.job_key, coalesce(b.max_attempts, 25),
        coalesce(b.priority, 0))::text,
    b.what || ' is stored exactly as given'
)
FROM bounds AS b ORDER BY b.n;

-- A run_at in the past is kept as given.
SELECT is(
    (app_jobs.add_job(identifier := 'past', run_at := '1999-12-31 23:59:59+00')).run_at,
    '1999-12-31 23:59:59+00'::timestamptz,
    'run_at in the past is kept'
);
SELECT is(
    (app_jobs.add_job(identifier := 'future', run_at := now() + interval '1 day')).run_at,
    now() + interval '1 day',
    'run_at in the future is kept'
);

SELECT * FROM finish();
ROLLBACK;
