-- Input hardening: names (task identifiers, queue names, worker ids) without control or invisible characters or edge whitespace (PJ031, PJ032, PJ036), the payload cap max_payload_bytes (PJ033; set_setting PJ014), run_at between 1970 and 100 years ahead (PJ034), max_attempts at most 10000 (PJ035), worker_id at most 256 characters (PJ005); every rejection changes nothing, the boundaries are accepted and stored exactly as given, and SQL-looking strings in every text argument are stored and treated as plain data.
BEGIN;
\ir setup.psql
SELECT plan(467);
SET LOCAL timezone = 'UTC';


-- Fixture: a waiting keyed job in a queue, a running job, a schedule, a registered worker.
SELECT id AS waiting FROM app_jobs.add_job(identifier := 'waiting', job_key := 'k_existing', queue_name := 'q1') \gset
SELECT id AS running FROM app_jobs.add_job(identifier := 'running', queue_name := 'q2') \gset
SELECT app_jobs.get_job('w1', ARRAY['running']) IS NULL AS _ \gset
SELECT id AS sched FROM app_jobs.add_scheduled_job(
    identifier := 'sched', schedule_info := '{"rule": "* * * * *"}', job_key := 's_existing'
) \gset
SELECT app_jobs.register_worker('w1') IS NULL AS _ \gset
CREATE TEMP TABLE user_rows (id integer);
CREATE TRIGGER bad_task AFTER INSERT ON user_rows
FOR EACH ROW EXECUTE FUNCTION app_jobs.tg_add_job_with_row_id(E'bad\ttask');

CREATE FUNCTION pg_temp.state() RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_build_object(
        'jobs', (SELECT jsonb_agg(to_jsonb(j) ORDER BY j.id) FROM app_jobs.jobs AS j),
        'job_queues', (SELECT jsonb_agg(to_jsonb(q) ORDER BY q.queue_name) FROM app_jobs.job_queues AS q),
        'scheduled_jobs', (SELECT jsonb_agg(to_jsonb(s) ORDER BY s.id) FROM app_jobs.scheduled_jobs AS s),
        'job_history', (SELECT jsonb_agg(to_jsonb(h) ORDER BY h.id) FROM app_jobs.job_history AS h),
        'job_bundles', (SELECT jsonb_agg(to_jsonb(b) ORDER BY b.id) FROM app_jobs.job_bundles AS b),
        'settings', (SELECT jsonb_agg(to_jsonb(s) ORDER BY s.name) FROM app_jobs.settings AS s),
        'workers', (SELECT jsonb_agg(to_jsonb(w) ORDER BY w.id) FROM app_jobs.workers AS w),
        -- Sequences are not rolled back with a failed statement: an unchanged sequence
        -- shows the call was rejected before it tried to insert. (add_bundle creates its
        -- bundle row before its jobs, so the bundle sequence is left out.)
        'jobs_seq', (SELECT ARRAY[last_value::text, is_called::text] FROM app_jobs.jobs_id_seq),
        'scheduled_jobs_seq', (SELECT ARRAY[last_value::text, is_called::text] FROM app_jobs.scheduled_jobs_id_seq),
        'user_rows', (SELECT count(*) FROM user_rows)
    );
$$;
SELECT pg_temp.state() AS before \gset

-- Names that are refused, wherever a task identifier, queue name or worker id goes.
CREATE TEMP TABLE bad_names (what text, name text);
INSERT INTO bad_names VALUES
    ('a tab', E'a\tb'),
    ('a newline', E'send_email\n'),
    ('a carriage return', E'a\rb'),
    ('U+0001', E'\u0001x'),
    ('an escape (ANSI sequence)', E'x\u001b[31mred'),
    ('DEL', E'x\u007f'),
    ('C1 NEL U+0085', E'x\u0085y'),
    ('zero-width space', E'send\u200bemail'),
    ('right-to-left override', E'abc\u202egpj.exe'),
    ('line separator', E'a\u2028b'),
    ('BOM', E'\ufeffa'),
    ('a leading space', ' send_email'),
    ('a trailing space', 'send_email '),
    ('only a space', ' '),
    ('a leading ideographic space', E'\u3000a'),
    ('a trailing no-break space', E'a\u00a0');

CREATE TEMP TABLE cases (n serial, sqlstate text, what text, call text);
-- PJ031: task identifier.
INSERT INTO cases (sqlstate, what, call)
SELECT 'PJ031', 'add_job identifier with ' || b.what,
    format('SELECT app_jobs.add_job(identifier := %L)', b.name)
FROM bad_names AS b;
INSERT INTO cases (sqlstate, what, call) VALUES
    ('PJ031', 'add_job identifier, replacing a keyed job',
     format('SELECT app_jobs.add_job(identifier := %L, job_key := ''k_existing'')', E'wait\ting')),
    ('PJ031', 'add_scheduled_job identifier',
     format('SELECT app_jobs.add_scheduled_job(identifier := %L, schedule_info := ''{}'')', E'a\nb')),
    ('PJ031', 'add_scheduled_job identifier, updating a keyed schedule',
     format('SELECT app_jobs.add_scheduled_job(identifier := %L, schedule_info := ''{}'', job_key := ''s_existing'')', 'sched ')),
    ('PJ031', 'add_bundle job identifier',
     format('SELECT app_jobs.add_bundle(''bt'', %L::jsonb)', jsonb_build_array(jsonb_build_object('identifier', E'a\tb')))),
    ('PJ031', 'job trigger task argument', 'INSERT INTO user_rows VALUES (1)');
-- PJ032: queue name.
INSERT INTO cases (sqlstate, what, call)
SELECT 'PJ032', 'add_job queue_name with ' || b.what,
    format('SELECT app_jobs.add_job(identifier := ''t'', queue_name := %L)', b.name)
FROM bad_names AS b;
INSERT INTO cases (sqlstate, what, call) VALUES
    ('PJ032', 'add_job queue_name, replacing a keyed job',
     format('SELECT app_jobs.add_job(identifier := ''t'', job_key := ''k_existing'', queue_name := %L)', E'q1\n')),
    ('PJ032', 'add_scheduled_job queue_name',
     format('SELECT app_jobs.add_scheduled_job(identifier := ''t'', schedule_info := ''{}'', queue_name := %L)', E'q\u202e')),
    ('PJ032', 'add_bundle job queue_name',
     'SELECT app_jobs.add_bundle(''bt'', ''[{"identifier": "a", "queue_name": " q"}]'')');
-- PJ033: payload larger than max_payload_bytes (default 262144 bytes of JSON text).
INSERT INTO cases (sqlstate, what, call) VALUES
    ('PJ033', 'add_job payload of 262145 bytes',
     format('SELECT app_jobs.add_job(identifier := ''t'', payload := %L::json)', '"' || repeat('x', 262143) || '"')),
    ('PJ033', 'add_job payload of 262145 bytes in 131072 characters (bytes are counted)',
     format('SELECT app_jobs.add_job(identifier := ''t'', payload := %L::json)', '"' || repeat('é', 131071) || 'x"')),
    ('PJ033', 'add_job payload of 1 MB',
     'SELECT app_jobs.add_job(identifier := ''t'', payload := json_build_object(''x'', repeat(''x'', 1000000)))'),
    ('PJ033', 'add_job payload of 1 MB, replacing a keyed job',
     'SELECT app_jobs.add_job(identifier := ''t'', job_key := ''k_existing'', payload := json_build_object(''x'', repeat(''x'', 1000000)))'),
    ('PJ033', 'add_scheduled_job payload of 1 MB',
     'SELECT app_jobs.add_scheduled_job(identifier := ''t'', schedule_info := ''{}'', payload := json_build_object(''x'', repeat(''x'', 1000000)))'),
    ('PJ033', 'add_bundle job payload of 1 MB',
     'SELECT app_jobs.add_bundle(''bt'', jsonb_build_array(jsonb_build_object(''identifier'', ''a'', ''payload'', repeat(''x'', 1000000))))'),
    ('PJ033', 'job trigger row of 1 MB',
     'SELECT app_jobs._enqueue_from_trigger(ARRAY[''t''], ''{}'', json_build_object(''x'', repeat(''x'', 1000000)))');
-- PJ034: run_at before 1970, more than 100 years ahead, or infinite.
INSERT INTO cases (sqlstate, what, call)
SELECT 'PJ034', 'add_job run_at ' || v.what,
    format('SELECT app_jobs.add_job(identifier := ''t'', run_at := %s)', v.expr)
FROM (VALUES
    ('infinity', '''infinity'''),
    ('-infinity', '''-infinity'''),
    ('a microsecond before 1970', '''1969-12-31 23:59:59.999999+00'''),
    ('in 1900', '''1900-01-01 00:00+00'''),
    ('in 4713 BC', '''4713-01-01 00:00+00 BC'''),
    ('a microsecond past 100 years from now', 'now() + interval ''100 years 1 microsecond'''),
    ('in the year 294276', '''294276-12-31 23:59:59+00''')
) AS v (what, expr);
INSERT INTO cases (sqlstate, what, call) VALUES
    ('PJ034', 'add_job run_at infinity, replacing a keyed job',
     'SELECT app_jobs.add_job(identifier := ''t'', job_key := ''k_existing'', run_at := ''infinity'')'),
    ('PJ034', 'add_job run_at infinity, with preserve_run_at',
     'SELECT app_jobs.add_job(identifier := ''t'', job_key := ''k_existing'', run_at := ''infinity'', job_key_mode := ''preserve_run_at'')'),
    ('PJ034', 'add_bundle job run_at infinity',
     'SELECT app_jobs.add_bundle(''bt'', ''[{"identifier": "a", "run_at": "infinity"}]'')'),
    ('PJ034', 'add_bundle job run_at in 1969',
     'SELECT app_jobs.add_bundle(''bt'', ''[{"identifier": "a", "run_at": "1969-07-20T20:17:00Z"}]'')');
INSERT INTO cases (sqlstate, what, call) VALUES
    ('PJ034', 'run_due_scheduled_jobs as_of infinity (it would never run out of slots)',
     'SELECT * FROM app_jobs.run_due_scheduled_jobs(''infinity'')'),
    ('PJ034', 'run_due_scheduled_jobs as_of -infinity',
     'SELECT * FROM app_jobs.run_due_scheduled_jobs(''-infinity'')'),
    ('PJ034', 'run_due_scheduled_jobs as_of in 1969',
     'SELECT * FROM app_jobs.run_due_scheduled_jobs(''1969-12-31 23:59:59+00'')');
-- PJ037: payload nesting arrays and objects more than 256 deep.
INSERT INTO cases (sqlstate, what, call) VALUES
    ('PJ037', 'add_job payload of 257 nested arrays',
     format('SELECT app_jobs.add_job(identifier := ''t'', payload := %L)', repeat('[', 257) || repeat(']', 257))),
    ('PJ037', 'add_job payload of 257 nested objects',
     format('SELECT app_jobs.add_job(identifier := ''t'', payload := %L)', repeat('{"a": ', 257) || '1' || repeat('}', 257))),
    ('PJ037', 'add_job payload of 1000 nested arrays, with \u0000 and escaped brackets in a string',
     format('SELECT app_jobs.add_job(identifier := ''t'', payload := %L)',
        '{"s": "\u0000 \\ \" [[[", "a": ' || repeat('[', 1000) || repeat(']', 1000) || '}')),
    ('PJ037', 'add_job payload too deep under a duplicate key (jsonb would keep the other)',
     format('SELECT app_jobs.add_job(identifier := ''t'', payload := %L)',
        '{"a": ' || repeat('[', 1000) || repeat(']', 1000) || ', "a": 1}')),
    ('PJ037', 'add_job payload too deep, replacing a keyed job',
     format('SELECT app_jobs.add_job(identifier := ''t'', job_key := ''k_existing'', payload := %L)', repeat('[', 300) || repeat(']', 300))),
    ('PJ037', 'add_scheduled_job payload too deep',
     format('SELECT app_jobs.add_scheduled_job(identifier := ''t'', schedule_info := ''{}'', payload := %L)', repeat('[', 300) || repeat(']', 300))),
    ('PJ037', 'add_bundle job payload too deep',
     format('SELECT app_jobs.add_bundle(''bt'', %L)', '[{"identifier": "a", "payload": ' || repeat('[', 300) || repeat(']', 300) || '}]'));
-- PJ038: timeout longer than 100 years (the task's default timeout included).
INSERT INTO cases (sqlstate, what, call) VALUES
    ('PJ038', 'add_job timeout 100 years and 1 second',
     'SELECT app_jobs.add_job(identifier := ''t'', timeout := ''100 years 1 second'')'),
    ('PJ038', 'add_job timeout 1000000000 days (beyond what Python can represent)',
     'SELECT app_jobs.add_job(identifier := ''t'', timeout := ''1000000000 days'')'),
    ('PJ038', 'add_job timeout 178000000 years, replacing a keyed job',
     'SELECT app_jobs.add_job(identifier := ''t'', job_key := ''k_existing'', timeout := ''178000000 years'')'),
    ('PJ038', 'add_bundle job timeout 1000 years',
     'SELECT app_jobs.add_bundle(''bt'', ''[{"identifier": "a", "timeout": "1000 years"}]'')');
-- A bundle's follow-up job is checked when the bundle is created: later, the completion
-- of the bundle's last job would fail.
INSERT INTO cases (sqlstate, what, call) VALUES
    ('PJ031', 'add_bundle follow-up identifier',
     format('SELECT app_jobs.add_bundle(''bt'', ''[{"identifier": "a"}]'', followup := %L)',
        jsonb_build_object('identifier', E'after\ttab'))),
    ('PJ032', 'add_bundle follow-up queue_name',
     'SELECT app_jobs.add_bundle(''bt'', ''[{"identifier": "a"}]'', followup := ''{"identifier": "f", "queue_name": "q "}'')'),
    ('PJ035', 'add_bundle follow-up max_attempts 20000',
     'SELECT app_jobs.add_bundle(''bt'', ''[{"identifier": "a"}]'', followup := ''{"identifier": "f", "max_attempts": 20000}'')'),
    ('PJ033', 'add_bundle follow-up payload of 300000 characters',
     format('SELECT app_jobs.add_bundle(''bt'', ''[{"identifier": "a"}]'', followup := %L)',
        jsonb_build_object('identifier', 'f', 'payload', repeat('x', 300000)))),
    ('PJ037', 'add_bundle follow-up payload too deep',
     format('SELECT app_jobs.add_bundle(''bt'', ''[{"identifier": "a"}]'', followup := %L)',
        '{"identifier": "f", "payload": ' || repeat('[', 300) || repeat(']', 300) || '}'));
-- PJ035: max_attempts above 10000.
INSERT INTO cases (sqlstate, what, call) VALUES
    ('PJ035', 'add_job max_attempts 10001', 'SELECT app_jobs.add_job(identifier := ''t'', max_attempts := 10001)'),
    ('PJ035', 'add_job max_attempts 2147483647', 'SELECT app_jobs.add_job(identifier := ''t'', max_attempts := 2147483647)'),
    ('PJ035', 'add_job max_attempts 10001, replacing a keyed job',
     'SELECT app_jobs.add_job(identifier := ''t'', job_key := ''k_existing'', max_attempts := 10001)'),
    ('PJ035', 'add_scheduled_job max_attempts 10001',
     'SELECT app_jobs.add_scheduled_job(identifier := ''t'', schedule_info := ''{}'', max_attempts := 10001)'),
    ('PJ035', 'add_bundle job max_attempts 10001',
     'SELECT app_jobs.add_bundle(''bt'', ''[{"identifier": "a", "max_attempts": 10001}]'')'),
    ('PJ035', 'reschedule_jobs max_attempts 10001',
     format('SELECT * FROM app_jobs.reschedule_jobs(ARRAY[%s], max_attempts := 10001)', :waiting));
-- PJ036: worker_id that is not a clean name; PJ005: longer than 256 characters.
INSERT INTO cases (sqlstate, what, call)
SELECT 'PJ036', v.fn || ' worker_id with ' || b.what, format(v.call, b.name)
FROM bad_names AS b
CROSS JOIN (VALUES
    ('get_job', 'SELECT app_jobs.get_job(%L)'),
    ('get_jobs', 'SELECT * FROM app_jobs.get_jobs(%L, batch_size := 5)')
) AS v (fn, call);
INSERT INTO cases (sqlstate, what, call) VALUES
    ('PJ036', 'complete_job worker_id', format('SELECT app_jobs.complete_job(%L, %s)', E'w1\n', :running)),
    ('PJ036', 'fail_job worker_id', format('SELECT app_jobs.fail_job(%L, %s, ''e'')', ' w1', :running)),
    ('PJ036', 'finish_jobs worker_id',
     format('SELECT * FROM app_jobs.finish_jobs(%L, ''[{"id": %s}]'')', E'w1\u200b', :running)),
    ('PJ036', 'release_jobs worker_id', format('SELECT app_jobs.release_jobs(%L)', E'w1\r')),
    ('PJ036', 'register_worker worker_id', format('SELECT app_jobs.register_worker(%L)', E'w\u0007')),
    ('PJ036', 'worker_heartbeat worker_id', format('SELECT * FROM app_jobs.worker_heartbeat(%L)', 'w1 ')),
    ('PJ036', 'get_scheduled_job worker_id', format('SELECT app_jobs.get_scheduled_job(%L)', E'\tw')),
    ('PJ005', 'get_job worker_id of 257 characters', format('SELECT app_jobs.get_job(%L)', repeat('w', 257))),
    ('PJ005', 'get_jobs worker_id of 257 characters',
     format('SELECT * FROM app_jobs.get_jobs(%L, batch_size := 3)', repeat('w', 257))),
    ('PJ005', 'complete_job worker_id of 257 characters',
     format('SELECT app_jobs.complete_job(%L, %s)', repeat('w', 257), :running));
-- PJ014: bad max_payload_bytes.
INSERT INTO cases (sqlstate, what, call)
SELECT 'PJ014', 'set_setting max_payload_bytes ' || coalesce(to_json(v.v)::text, 'NULL'),
    format('SELECT app_jobs.set_setting(''max_payload_bytes'', %L)', v.v)
FROM (VALUES
    ('1023'), ('0'), ('-1'), ('-262144'), ('1073741825'), ('99999999999999999999'), (''),
    (NULL), ('abc'), ('256 kB'), ('1e6'), ('262144.5'), ('2 62144'), ('0x40000'),
    (E'\u3000262144')
) AS v (v);

-- Each case: the right SQLSTATE, and nothing changed.
SELECT throws_ok(c.call, c.sqlstate, NULL, format('%s: %s', c.sqlstate, c.what))
    || E'\n'
    || is(pg_temp.state(), :'before'::jsonb, format('  ... and case %s changed nothing', c.n))
FROM cases AS c
ORDER BY c.n;

SELECT is((SELECT count(*)::int FROM cases), 140, 'all 140 cases ran');
SELECT set_eq(
    'SELECT DISTINCT sqlstate FROM cases',
    ARRAY['PJ005', 'PJ014', 'PJ031', 'PJ032', 'PJ033', 'PJ034', 'PJ035', 'PJ036', 'PJ037', 'PJ038'],
    'every new SQLSTATE is exercised'
);

-- The messages say what is wrong (and never echo the offending name raw).
SELECT throws_ok(c.call, c.sqlstate, c.msg, format('%s message: %s', c.sqlstate, c.msg))
FROM (VALUES
    (1, format('SELECT app_jobs.add_job(identifier := %L)', E'a\tb'), 'PJ031',
     'task identifier contains the control or invisible character U+0009 at position 2'),
    (2, 'SELECT app_jobs.add_job(identifier := ''t'', queue_name := ''q '')', 'PJ032',
     'queue name begins or ends with whitespace'),
    (3, format('SELECT app_jobs.add_job(identifier := ''t'', payload := %L::json)', '"' || repeat('x', 262143) || '"'),
     'PJ033', 'payload is 262145 bytes, more than max_payload_bytes (262144)'),
    (4, 'SELECT app_jobs.add_job(identifier := ''t'', run_at := ''1969-12-31 23:00:00+00'')',
     'PJ034', 'run_at must be between 1970-01-01 and 100 years from now, got 1969-12-31 23:00:00+00'),
    (5, 'SELECT app_jobs.add_job(identifier := ''t'', run_at := ''infinity'')',
     'PJ034', 'run_at must be between 1970-01-01 and 100 years from now, got infinity'),
    (11, 'SELECT * FROM app_jobs.run_due_scheduled_jobs(''infinity'')', 'PJ034',
     'as_of must be between 1970-01-01 and 100 years from now, got infinity'),
    (12, format('SELECT app_jobs.add_job(identifier := ''t'', payload := %L)', repeat('[', 257) || repeat(']', 257)),
     'PJ037', 'payload nests arrays and objects more than 256 deep'),
    (13, 'SELECT app_jobs.add_job(identifier := ''t'', timeout := ''1000 years'')', 'PJ038',
     'timeout must be at most 100 years, got 1000 years'),
    (6, 'SELECT app_jobs.add_job(identifier := ''t'', max_attempts := 10001)', 'PJ035',
     'max_attempts must be at most 10000, got 10001'),
    (7, format('SELECT app_jobs.get_job(%L)', E'w\u202e'), 'PJ036',
     'worker_id contains the control or invisible character U+202E at position 2'),
    (8, format('SELECT app_jobs.get_job(%L)', repeat('w', 257)), 'PJ005',
     'worker_id must be at most 256 characters, got 257'),
    (9, 'SELECT app_jobs.set_setting(''max_payload_bytes'', ''1023'')', 'PJ014',
     'max_payload_bytes must be 1024 to 1073741824 bytes, got "1023"'),
    (10, format('SELECT app_jobs.set_setting(%L, %L)', E'x\ny', E'\'); DROP TABLE app_jobs.jobs; --'), 'PJ014',
     'unknown setting "x\ny" or bad value "''); DROP TABLE app_jobs.jobs; --"')
) AS c (n, call, sqlstate, msg)
ORDER BY c.n;
SELECT is(pg_temp.state(), :'before'::jsonb, 'after the messages, everything is as it was');

-- The settings table holds only sane values, whoever writes to it.
SELECT throws_ok(
    format('INSERT INTO app_jobs.settings VALUES (''max_payload_bytes'', %L)', v.v), '23514', NULL,
    format('settings refuses max_payload_bytes %s written directly', v.v)
)
FROM (VALUES ('abc'), ('100'), ('1023'), ('1073741825'), (' 2048')) AS v (v);

-- 2. Boundaries and ordinary names are accepted, and stored exactly as given: each call
-- below is made inside lives_ok (it keeps the id of the row it returns), then the row is
-- read back and every listed column compared, as text, with what was given.
CREATE TEMP TABLE accepted (
    n serial, what text, tbl text DEFAULT 'jobs', call text, expected jsonb, row_id bigint
);
-- The listed columns of a stored row as text (json payloads as their exact text: a
-- \u0000 in them cannot go through jsonb).
CREATE FUNCTION pg_temp.stored(p_tbl text, p_id bigint, p_cols jsonb) RETURNS jsonb
LANGUAGE sql AS $$
    SELECT jsonb_object_agg(k, CASE k WHEN 'payload' THEN r.payload ELSE r.cols ->> k END)
    FROM jsonb_object_keys(p_cols) AS k,
        (
            SELECT j.payload::text AS payload, json_build_object(
                'task_identifier', j.task_identifier, 'queue_name', j.queue_name,
                'locked_by', j.locked_by, 'run_at', j.run_at, 'max_attempts', j.max_attempts,
                'timeout', j.timeout, 'priority', j.priority
            ) AS cols
            FROM app_jobs.jobs AS j WHERE p_tbl = 'jobs' AND j.id = p_id
            UNION ALL
            SELECT s.payload::text, json_build_object(
                'task_identifier', s.task_identifier, 'max_attempts', s.max_attempts,
                'schedule_info', s.schedule_info::text, 'next_run_at', s.next_run_at
            )
            FROM app_jobs.scheduled_jobs AS s WHERE p_tbl = 'scheduled_jobs' AND s.id = p_id
        ) AS r;
$$;
INSERT INTO accepted (what, call, expected)
SELECT format('name %s as identifier and queue name', to_json(v.name)),
    format('app_jobs.add_job(identifier := %L, queue_name := %L)', v.name, v.name),
    jsonb_build_object('task_identifier', v.name, 'queue_name', v.name)
FROM (VALUES
    ('send_email'), ('tasks.py'), ('tasks.send-email:v2'), ('app/jobs@eu-west-1'),
    ('Send email'), ('a  b'), ('TASK_A'), ('tâche_日本語'), ('🚀 launch'), ('x'),
    ('a"b''c\d'), ('%s %I $1 %%'), (repeat('é', 126)), ('q' || repeat('r', 124) || 's')
) AS v (name);
-- A worker id is stored as the lock holder of the job it claims (one job per case).
INSERT INTO app_jobs.jobs (task_identifier)
SELECT 'wid_' || g FROM generate_series(1, 4) AS g;
INSERT INTO accepted (what, call, expected)
SELECT format('worker_id %s', v.what),
    format('app_jobs.get_job(%L, ARRAY[%L])', v.w, 'wid_' || v.k),
    jsonb_build_object('locked_by', v.w, 'task_identifier', 'wid_' || v.k)
FROM (VALUES
    (1, 'of 256 characters', 'w' || repeat('x', 254) || 'y'),
    (2, 'host-pid-hex', 'db-host.example-1234-0a1b2c'),
    (3, 'with a colon and spaces', 'worker 1: eu'), (4, 'unicode', 'wörker-日本')
) AS v (k, what, w);
INSERT INTO accepted (what, call, expected)
SELECT format('run_at %s', v.what),
    format('app_jobs.add_job(identifier := ''edge'', run_at := %s)', v.expr),
    jsonb_build_object('run_at', to_json(v.stored) #>> '{}')
FROM (VALUES
    ('1970-01-01 00:00:00+00', '''1970-01-01 00:00:00+00''', '1970-01-01 00:00:00+00'::timestamptz),
    ('exactly 100 years from now', 'now() + interval ''100 years''', now() + interval '100 years'),
    ('NULL (now)', 'NULL', now()),
    ('in a non-UTC zone on the lower bound', '''1970-01-01 01:00:00+01''', '1970-01-01 00:00:00+00')
) AS v (what, expr, stored);
INSERT INTO accepted (what, call, expected) VALUES
    ('max_attempts 10000', 'app_jobs.add_job(identifier := ''edge'', max_attempts := 10000)',
     '{"max_attempts": "10000"}'),
    ('timeout 100 years', 'app_jobs.add_job(identifier := ''edge'', timeout := ''100 years'')',
     '{"timeout": "100 years"}'),
    ('priority -2147483648', 'app_jobs.add_job(identifier := ''edge'', priority := -2147483648)',
     '{"priority": "-2147483648"}'),
    ('priority 2147483647', 'app_jobs.add_job(identifier := ''edge'', priority := 2147483647)',
     '{"priority": "2147483647"}'),
    ('a job of a task without settings, max_attempts 10',
     'app_jobs.add_job(identifier := ''many'', max_attempts := 10)', '{"max_attempts": "10"}');
INSERT INTO accepted (what, call, expected)
SELECT 'a payload ' || v.what,
    format('app_jobs.add_job(identifier := ''edge'', payload := %L)', v.p),
    jsonb_build_object('payload', v.p)
FROM (VALUES
    ('of 256 nested arrays', repeat('[', 256) || repeat(']', 256)),
    ('of 256 nested objects around a number', repeat('{"a": ', 256) || '1' || repeat('}', 256)),
    ('of 3000 shallow arrays', '[' || repeat('[1], ', 2999) || '[1]]'),
    ('with 5000 brackets in a string', '{"s": "' || repeat('[{', 2500) || '"}'),
    ('with \u0000 in a string', '{"s": "\u0000"}'),
    ('with 1e999999 and 300 shallow arrays', '{"n": 1e999999, "a": [' || repeat('[1], ', 300) || '1]}')
) AS v (what, p);
INSERT INTO accepted (what, tbl, call, expected) VALUES
    ('a schedule with max_attempts 10000', 'scheduled_jobs',
     'app_jobs.add_scheduled_job(identifier := ''edge'', schedule_info := ''{"rule": "@daily"}'', max_attempts := 10000)',
     '{"max_attempts": "10000", "schedule_info": "{\"rule\": \"@daily\"}"}');
INSERT INTO accepted (what, tbl, call, expected)
SELECT format('a schedule in time zone %s', tz), 'scheduled_jobs',
    format('app_jobs.add_scheduled_job(identifier := ''tz'', schedule_info := %L)',
        json_build_object('rule', '@daily', 'tz', tz)),
    jsonb_build_object(
        'schedule_info', json_build_object('rule', '@daily', 'tz', tz)::text,
        'next_run_at', to_json(app_jobs.schedule_next_run(
            json_build_object('rule', '@daily', 'tz', tz), now())) #>> '{}'
    )
FROM unnest(ARRAY['UTC', 'Europe/Berlin', 'America/Argentina/Buenos_Aires', 'Etc/GMT+5']) AS tz;

SELECT lives_ok(
    format('UPDATE accepted SET row_id = (%s).id WHERE n = %s', a.call, a.n),
    a.what || ' is accepted'
)
FROM accepted AS a ORDER BY a.n;
SELECT is(pg_temp.stored(a.tbl, a.row_id, a.expected), a.expected, a.what || ' is stored as given')
FROM accepted AS a ORDER BY a.n;

-- A task default max_attempts or timeout (set_task_settings) is held to the same bound
-- when it is set (else add_job, and the scheduler tick, would refuse every job of it).
SELECT throws_ok(
    'SELECT app_jobs.set_task_settings(''many'', max_attempts := 20000)', 'PJ035',
    'max_attempts must be at most 10000, got 20000',
    'set_task_settings refuses a default max_attempts of 20000'
);
SELECT is(
    (SELECT count(*)::integer FROM app_jobs.task_settings WHERE task_identifier = 'many'), 0,
    'and stores nothing'
);
SELECT throws_ok(
    'SELECT app_jobs.set_task_settings(''slow'', timeout := ''200 years'')', 'PJ038',
    'timeout must be at most 100 years, got 200 years',
    'set_task_settings refuses a default timeout of 200 years'
);
SELECT is(
    (SELECT ROW(max_attempts, timeout)::text FROM app_jobs.set_task_settings(
        'edge_task', max_attempts := 10000, timeout := '100 years'
    )),
    ROW(10000, interval '100 years')::text,
    'and takes the bounds themselves (10000 attempts, 100 years), stored as given'
);
SELECT id AS edge_task_job FROM app_jobs.add_job(identifier := 'edge_task') \gset
SELECT is(
    (SELECT ROW(max_attempts, timeout)::text FROM app_jobs.jobs WHERE id = :edge_task_job),
    ROW(10000, interval '100 years')::text,
    'a job of that task gets those defaults'
);

-- Payload cap: exactly max_payload_bytes passes (and is stored whole), one byte more does not.
SELECT id AS big_job FROM app_jobs.add_job(
    identifier := 'big', payload := ('"' || repeat('x', 262142) || '"')::json
) \gset
SELECT id AS big_sched FROM app_jobs.add_scheduled_job(
    identifier := 'big', schedule_info := '{"rule": "@daily"}',
    payload := ('"' || repeat('y', 262142) || '"')::json
) \gset
SELECT is(
    (SELECT ROW(octet_length(payload::text), md5(payload::text))::text FROM app_jobs.jobs WHERE id = :big_job),
    ROW(262144, md5('"' || repeat('x', 262142) || '"'))::text,
    'a payload of exactly 262144 bytes is accepted and stored whole'
);
SELECT is(
    (SELECT ROW(octet_length(payload::text), md5(payload::text))::text FROM app_jobs.scheduled_jobs WHERE id = :big_sched),
    ROW(262144, md5('"' || repeat('y', 262142) || '"'))::text,
    'a schedule payload of exactly 262144 bytes is accepted and stored whole'
);
SELECT is(app_jobs.setting('max_payload_bytes'), '262144', 'max_payload_bytes defaults to 262144');
SELECT is(app_jobs.set_setting('max_payload_bytes', v.v), v.stored, format('set_setting max_payload_bytes %s', to_json(v.v)))
FROM (VALUES ('1073741824', '1073741824'), (' +2048 ', '2048'), ('0001024', '1024')) AS v (v, stored);
SELECT is(app_jobs.setting('max_payload_bytes'), '1024', 'the last one counts');
SELECT is(
    (SELECT payload::text FROM app_jobs.add_job(
        identifier := 'small', payload := ('{"a": "' || repeat('x', 1015) || '"}')::json)),
    '{"a": "' || repeat('x', 1015) || '"}',
    'with max_payload_bytes 1024, a payload of 1024 bytes is accepted'
);
SELECT is(
    (SELECT payload::text FROM app_jobs.jobs WHERE task_identifier = 'small'),
    '{"a": "' || repeat('x', 1015) || '"}',
    'and stored as given'
);
SELECT throws_ok(
    format('SELECT app_jobs.add_job(identifier := ''small'', payload := %L::json)', '{"a": "' || repeat('x', 1016) || '"}'),
    'PJ033', 'payload is 1025 bytes, more than max_payload_bytes (1024)',
    'with max_payload_bytes 1024, a payload of 1025 bytes is refused'
);
SELECT throws_ok(
    format('SELECT app_jobs.add_bundle(''bt'', %L::jsonb)', jsonb_build_array(
        jsonb_build_object('identifier', 'small'),
        jsonb_build_object('identifier', 'small', 'payload', repeat('x', 2000))
    )),
    'PJ033', NULL,
    'a bundle with one job over the cap is refused as a whole'
);
SELECT is(
    (SELECT count(*)::int FROM app_jobs.job_bundles), 0, '... and no bundle is left behind'
);
SELECT is(
    (SELECT count(*)::int FROM app_jobs.jobs WHERE task_identifier = 'small'), 1,
    '... nor any of its jobs'
);

-- 3. SQL-looking strings are data: in every text argument they are stored verbatim,
-- claimed, finished and recorded as given, and nothing else happens.
CREATE TEMP TABLE evil (n serial, s text);
INSERT INTO evil (s) VALUES
    ($e$'); DROP TABLE app_jobs.jobs; --$e$),
    ($e$%I$e$),
    ($e$$1$e$),
    ($e$%s %L %%$e$),
    ($e$' OR '1'='1$e$),
    ($e$$$; DROP TABLE app_jobs.jobs; $$$e$),
    ($e$\'; SELECT pg_sleep(10); --$e$),
    ($e$"; DELETE FROM app_jobs.settings; --$e$),
    ($e$:'x' ${x} @x ?$e$),
    ($e$E'\x27'::text$e$);

DELETE FROM app_jobs.jobs;
DELETE FROM app_jobs.job_history;
SELECT app_jobs.set_setting('max_payload_bytes', '262144') IS NULL AS _ \gset
SELECT pg_temp.state() AS clean \gset

SELECT is(
    (SELECT count(*)::int FROM evil AS e, LATERAL app_jobs.add_job(
        identifier := e.s, payload := json_build_object(e.s, e.s), job_key := e.s,
        queue_name := e.s, origin := e.s
    ) AS j
    WHERE j.task_identifier = e.s AND j.queue_name = e.s AND j.key = e.s AND j.origin = e.s
        AND j.payload ->> e.s = e.s),
    10,
    'add_job stores each string verbatim in identifier, payload, job_key, queue_name and origin'
);
SELECT is(
    (SELECT count(*)::int FROM evil AS e, LATERAL app_jobs.add_job(
        identifier := e.s, payload := json_build_object(e.s, 2), job_key := e.s,
        queue_name := e.s, origin := e.s
    ) AS j WHERE j.payload ->> e.s = '2'),
    10,
    'and replaces by those keys (job_key_mode replace)'
);
SELECT is(
    (SELECT count(*)::int FROM app_jobs.jobs), 10, 'ten jobs, one per string'
);
SELECT is(
    (SELECT count(*)::int FROM app_jobs.job_queues AS q JOIN evil AS e ON q.queue_name = e.s
     WHERE q.job_count = 1),
    10,
    'each string is a queue with its one job'
);
SELECT throws_ok(
    format('SELECT app_jobs.add_job(identifier := ''t'', job_key_mode := %L)', e.s), 'PJ021', NULL,
    format('job_key_mode %s is refused as an unknown mode', to_json(e.s))
)
FROM evil AS e ORDER BY e.n;
SELECT is(
    (SELECT count(*)::int FROM app_jobs.get_jobs('w ''); DROP TABLE app_jobs.jobs; -- $1 %I',
        (SELECT array_agg(s) FROM evil), batch_size := 20)
     WHERE locked_by = 'w ''); DROP TABLE app_jobs.jobs; -- $1 %I'),
    10,
    'a worker whose id and task list are such strings claims all ten'
);
SELECT is(
    (SELECT count(*)::int FROM (SELECT * FROM evil WHERE n <= 5) AS e, LATERAL app_jobs.fail_job(
        'w ''); DROP TABLE app_jobs.jobs; -- $1 %I',
        (SELECT j.id FROM app_jobs.jobs AS j WHERE j.key = e.s), e.s
    ) AS j WHERE j.last_error = e.s),
    5,
    'fail_job stores the error message verbatim'
);
SELECT is(
    (SELECT count(*)::int FROM (SELECT * FROM evil WHERE n > 5) AS e, LATERAL app_jobs.complete_job(
        'w ''); DROP TABLE app_jobs.jobs; -- $1 %I',
        (SELECT j.id FROM app_jobs.jobs AS j WHERE j.key = e.s)
    ) AS j WHERE j.id IS NOT NULL),
    5,
    'complete_job finishes the other five'
);
SELECT is(
    (SELECT count(*)::int FROM app_jobs.job_history AS h JOIN evil AS e ON h.task_identifier = e.s
     WHERE h.queue_name = e.s AND h.key = e.s AND h.origin = e.s AND h.payload ->> e.s = '2'
        AND h.status = 'completed'),
    5,
    'job_history records them verbatim'
);
SELECT is(
    (SELECT array_agg(app_jobs.cancel_job(j.id) ORDER BY j.id) FROM app_jobs.jobs AS j),
    array_fill('cancelled'::text, ARRAY[5]),
    'cancel_job cancels the failed-and-waiting five by id'
);
SELECT throws_ok(
    format('SELECT app_jobs.cancel_job(%L)', e.s), '22P02', NULL,
    format('cancel_job(%s) is not a job id', to_json(e.s))
)
FROM evil AS e ORDER BY e.n;
SELECT is(
    (SELECT count(*)::int FROM app_jobs.job_history AS h JOIN evil AS e ON h.task_identifier = e.s
     WHERE h.status = 'cancelled' AND h.queue_name = e.s AND h.last_error = 'cancelled'),
    5,
    'and job_history records the cancellations under the same names'
);
SELECT is(
    (SELECT count(*)::int FROM evil AS e, LATERAL app_jobs.add_scheduled_job(
        identifier := e.s, payload := json_build_object(e.s, e.s),
        schedule_info := '{"rule": "@hourly"}', job_key := e.s, queue_name := e.s
    ) AS s
    WHERE s.task_identifier = e.s AND s.key = e.s AND s.queue_name = e.s
        AND s.payload ->> e.s = e.s),
    10,
    'add_scheduled_job stores each string verbatim in identifier, payload, job_key and queue_name'
);
SELECT is(
    (SELECT count(*)::int FROM app_jobs.scheduled_jobs AS s JOIN evil AS e ON s.key = e.s
     WHERE (app_jobs.run_scheduled_job(s.id)).task_identifier = e.s),
    10,
    'and the jobs its schedules enqueue carry them'
);
SELECT throws_ok(
    format('SELECT app_jobs.add_scheduled_job(identifier := ''t'', schedule_info := %L)',
        json_build_object('rule', e.s)),
    'PJ008', NULL,
    format('a schedule rule %s is refused as an invalid rule', to_json(e.s))
)
FROM evil AS e ORDER BY e.n;
SELECT throws_ok(
    format('SELECT app_jobs.add_scheduled_job(identifier := ''t'', schedule_info := %L)',
        json_build_object('rule', '@daily', 'tz', e.s)),
    'PJ010', NULL,
    format('a schedule time zone %s is refused as unknown', to_json(e.s))
)
FROM evil AS e ORDER BY e.n;
SELECT throws_ok(
    format('SELECT app_jobs.set_setting(%L, %L)', w.name, w.value), 'PJ014', NULL,
    format('set_setting(%s, %s) is refused', to_json(w.name), to_json(w.value))
)
FROM evil AS e
CROSS JOIN (VALUES (1, NULL), (2, 'history'), (3, 'history_retention'), (4, 'max_payload_bytes')) AS v (k, name)
CROSS JOIN LATERAL (
    SELECT coalesce(v.name, e.s) AS name, CASE WHEN v.name IS NULL THEN 'on' ELSE e.s END AS value
) AS w
WHERE e.n IN (1, 2, 3, 6) AND NOT (e.n = 3 AND v.k = 3)
ORDER BY e.n, v.k;
-- ('$1' is an interval to PostgreSQL: 1 second. Stored the way it is read.)
SELECT is(
    app_jobs.set_setting('history_retention', '$1'), '00:00:01',
    'set_setting history_retention $1 is 1 second to PostgreSQL, stored as 00:00:01'
);
DELETE FROM app_jobs.settings WHERE name = 'history_retention';
SELECT is(
    (SELECT jsonb_agg(to_jsonb(s) ORDER BY s.name) FROM app_jobs.settings AS s),
    '[{"name": "max_payload_bytes", "value": "262144"}]'::jsonb,
    'settings hold only what set_setting accepted'
);
SELECT has_table('app_jobs', 'jobs', 'app_jobs.jobs is still there');
SELECT has_table('app_jobs', 'settings', 'app_jobs.settings is still there');
SELECT is(
    (SELECT count(*)::int FROM app_jobs.job_queues AS q
     WHERE q.job_count <> (SELECT count(*) FROM app_jobs.jobs AS j WHERE j.queue_name = q.queue_name)),
    0,
    'every queue counts exactly its jobs'
);

SELECT * FROM finish();
ROLLBACK;
