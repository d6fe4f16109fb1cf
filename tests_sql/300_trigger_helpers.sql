-- Trigger helpers on users' tables: tg_add_job_with_row_id, tg_add_job_with_row, trigger_job_with_fields for INSERT/UPDATE/DELETE, BEFORE and AFTER, payloads, database_id from the row or from jwt.claims.database_id, PJ007 errors.
BEGIN;
\ir setup.psql
SELECT plan(35);

SELECT set_config('jwt.claims.database_id', '00000000-0000-0000-0000-00000000000a', true) AS _ \gset

CREATE TEMP TABLE posts (
    id integer PRIMARY KEY,
    title text,
    n numeric,
    tags text[],
    database_id uuid
);
CREATE TEMP TABLE notes (id integer PRIMARY KEY, txt text);

-- Jobs added since the last call, oldest first, as (task, payload, database_id) text.
CREATE TEMP TABLE seen (id bigint PRIMARY KEY);
CREATE FUNCTION pg_temp.new_jobs() RETURNS text[] LANGUAGE plpgsql AS $$
DECLARE
    v text[];
BEGIN
    SELECT coalesce(array_agg(
        format('%s %s %s', task_identifier, payload::jsonb::text, coalesce(database_id::text, '-'))
        ORDER BY id), '{}')
    INTO v
    FROM app_jobs.jobs WHERE id NOT IN (SELECT id FROM seen);
    INSERT INTO seen SELECT id FROM app_jobs.jobs ON CONFLICT DO NOTHING;
    RETURN v;
END;
$$;

-- 1. tg_add_job_with_row_id, AFTER, all three operations; database_id from the row.
CREATE TRIGGER t_id AFTER INSERT OR UPDATE OR DELETE ON posts
FOR EACH ROW EXECUTE FUNCTION app_jobs.tg_add_job_with_row_id('post_changed');
INSERT INTO posts VALUES (1, 'one', 1.5, '{a}', '00000000-0000-0000-0000-000000000001');
SELECT is(
    pg_temp.new_jobs(),
    ARRAY['post_changed {"id": 1} 00000000-0000-0000-0000-000000000001'],
    'row_id INSERT: {"id": 1}, database_id from the row (not the setting)'
);
INSERT INTO posts VALUES
    (2, 'two', 2, NULL, '00000000-0000-0000-0000-000000000002'),
    (3, 'three', 3, NULL, '00000000-0000-0000-0000-000000000003');
SELECT is(
    pg_temp.new_jobs(),
    ARRAY['post_changed {"id": 2} 00000000-0000-0000-0000-000000000002',
          'post_changed {"id": 3} 00000000-0000-0000-0000-000000000003'],
    'row_id multi-row INSERT: one job per row'
);
UPDATE posts SET id = 20 WHERE id = 2;
SELECT is(
    pg_temp.new_jobs(),
    ARRAY['post_changed {"id": 20} 00000000-0000-0000-0000-000000000002'],
    'row_id UPDATE: the new row''s id'
);
DELETE FROM posts WHERE id = 3;
SELECT is(
    pg_temp.new_jobs(),
    ARRAY['post_changed {"id": 3} 00000000-0000-0000-0000-000000000003'],
    'row_id DELETE: the old row''s id'
);
SELECT is(
    (SELECT ROW(payload::text, queue_name, key, priority, max_attempts, attempts)::text
     FROM app_jobs.jobs ORDER BY id DESC LIMIT 1),
    ROW('{"id" : 3}', NULL::text, NULL::text, 0, 25, 0)::text,
    'trigger jobs take add_job''s defaults'
);
DROP TRIGGER t_id ON posts;

-- 2. tg_add_job_with_row: the whole row as payload.
CREATE TRIGGER t_row AFTER INSERT OR UPDATE OR DELETE ON posts
FOR EACH ROW EXECUTE FUNCTION app_jobs.tg_add_job_with_row('post_row');
INSERT INTO posts VALUES (4, 'four', 4.25, '{x,y}', '00000000-0000-0000-0000-000000000004');
SELECT is(
    (SELECT payload::jsonb FROM app_jobs.jobs ORDER BY id DESC LIMIT 1),
    (SELECT to_jsonb(p) FROM posts AS p WHERE id = 4),
    'row INSERT: payload is the new row'
);
SELECT is(
    (SELECT payload::text FROM app_jobs.jobs ORDER BY id DESC LIMIT 1),
    '{"id":4,"title":"four","n":4.25,"tags":["x","y"],"database_id":"00000000-0000-0000-0000-000000000004"}',
    'row payload keeps column order and types'
);
UPDATE posts SET title = 'FOUR' WHERE id = 4;
SELECT is(
    (SELECT payload::jsonb ->> 'title' FROM app_jobs.jobs ORDER BY id DESC LIMIT 1),
    'FOUR',
    'row UPDATE: payload is the new row'
);
DELETE FROM posts WHERE id = 4;
SELECT is(
    (SELECT payload::jsonb FROM app_jobs.jobs ORDER BY id DESC LIMIT 1),
    '{"id": 4, "title": "FOUR", "n": 4.25, "tags": ["x", "y"],
      "database_id": "00000000-0000-0000-0000-000000000004"}'::jsonb,
    'row DELETE: payload is the old row'
);
SELECT is(
    pg_temp.new_jobs(),
    ARRAY[
        'post_row {"n": 4.25, "id": 4, "tags": ["x", "y"], "title": "four", "database_id": "00000000-0000-0000-0000-000000000004"} 00000000-0000-0000-0000-000000000004',
        'post_row {"n": 4.25, "id": 4, "tags": ["x", "y"], "title": "FOUR", "database_id": "00000000-0000-0000-0000-000000000004"} 00000000-0000-0000-0000-000000000004',
        'post_row {"n": 4.25, "id": 4, "tags": ["x", "y"], "title": "FOUR", "database_id": "00000000-0000-0000-0000-000000000004"} 00000000-0000-0000-0000-000000000004'
    ],
    'row: one job per operation, task and database_id right'
);
DROP TRIGGER t_row ON posts;

-- 3. trigger_job_with_fields: only the named columns.
CREATE TRIGGER t_fields AFTER INSERT OR UPDATE OR DELETE ON posts
FOR EACH ROW EXECUTE FUNCTION app_jobs.trigger_job_with_fields('post_fields', 'title', 'n', 'tags');
INSERT INTO posts VALUES (5, 'five', 5, '{}', NULL);
UPDATE posts SET title = NULL, n = -1 WHERE id = 5;
DELETE FROM posts WHERE id = 5;
SELECT is(
    pg_temp.new_jobs(),
    ARRAY[
        'post_fields {"n": 5, "tags": [], "title": "five"} -',
        'post_fields {"n": -1, "tags": [], "title": null} -',
        'post_fields {"n": -1, "tags": [], "title": null} -'
    ],
    'fields: INSERT new, UPDATE new, DELETE old values of the named columns only'
);
DROP TRIGGER t_fields ON posts;
CREATE TRIGGER t_fields0 AFTER INSERT ON posts
FOR EACH ROW EXECUTE FUNCTION app_jobs.trigger_job_with_fields('post_nofields');
INSERT INTO posts VALUES (6, 'six', 6, NULL, '00000000-0000-0000-0000-000000000006');
SELECT is(
    pg_temp.new_jobs(),
    ARRAY['post_nofields {} 00000000-0000-0000-0000-000000000006'],
    'fields: with only the task argument the payload is {}'
);
DROP TRIGGER t_fields0 ON posts;

-- 4. BEFORE triggers let the row operation through.
CREATE TRIGGER b_id BEFORE INSERT OR UPDATE OR DELETE ON posts
FOR EACH ROW EXECUTE FUNCTION app_jobs.tg_add_job_with_row_id('before_id');
CREATE TRIGGER b_row BEFORE INSERT OR UPDATE OR DELETE ON posts
FOR EACH ROW EXECUTE FUNCTION app_jobs.tg_add_job_with_row('before_row');
CREATE TRIGGER b_fields BEFORE INSERT OR UPDATE OR DELETE ON posts
FOR EACH ROW EXECUTE FUNCTION app_jobs.trigger_job_with_fields('before_fields', 'id');
INSERT INTO posts VALUES (7, 'seven', 7, NULL, NULL);
SELECT is((SELECT title FROM posts WHERE id = 7), 'seven', 'BEFORE INSERT: the row is inserted as given');
UPDATE posts SET title = 'SEVEN' WHERE id = 7;
SELECT is((SELECT title FROM posts WHERE id = 7), 'SEVEN', 'BEFORE UPDATE: the row is updated');
DELETE FROM posts WHERE id = 7;
SELECT is((SELECT count(*)::int FROM posts WHERE id = 7), 0, 'BEFORE DELETE: the row is deleted');
SELECT is(
    (SELECT array_agg(j ORDER BY j) FROM unnest(pg_temp.new_jobs()) AS j),
    ARRAY[
        'before_fields {"id": 7} -', 'before_fields {"id": 7} -', 'before_fields {"id": 7} -',
        'before_id {"id": 7} -', 'before_id {"id": 7} -', 'before_id {"id": 7} -',
        'before_row {"n": 7, "id": 7, "tags": null, "title": "SEVEN", "database_id": null} -',
        'before_row {"n": 7, "id": 7, "tags": null, "title": "SEVEN", "database_id": null} -',
        'before_row {"n": 7, "id": 7, "tags": null, "title": "seven", "database_id": null} -'
    ],
    'BEFORE triggers: three jobs per operation'
);
DROP TRIGGER b_id ON posts;
DROP TRIGGER b_row ON posts;
DROP TRIGGER b_fields ON posts;

-- 5. A table without database_id: the jwt.claims.database_id setting is used.
-- (Triggers fire in name order: n_fields, n_id, n_row.)
CREATE TRIGGER n_id AFTER INSERT OR UPDATE OR DELETE ON notes
FOR EACH ROW EXECUTE FUNCTION app_jobs.tg_add_job_with_row_id('note');
CREATE TRIGGER n_row AFTER INSERT ON notes
FOR EACH ROW EXECUTE FUNCTION app_jobs.tg_add_job_with_row('note_row');
CREATE TRIGGER n_fields AFTER INSERT ON notes
FOR EACH ROW EXECUTE FUNCTION app_jobs.trigger_job_with_fields('note_fields', 'txt');
INSERT INTO notes VALUES (1, 'hello');
SELECT is(
    pg_temp.new_jobs(),
    ARRAY[
        'note_fields {"txt": "hello"} 00000000-0000-0000-0000-00000000000a',
        'note {"id": 1} 00000000-0000-0000-0000-00000000000a',
        'note_row {"id": 1, "txt": "hello"} 00000000-0000-0000-0000-00000000000a'
    ],
    'no database_id column: all three helpers take the setting'
);
SELECT set_config('jwt.claims.database_id', '00000000-0000-0000-0000-00000000000b', true) AS _ \gset
UPDATE notes SET txt = 'bye';
DELETE FROM notes;
SELECT is(
    pg_temp.new_jobs(),
    ARRAY[
        'note {"id": 1} 00000000-0000-0000-0000-00000000000b',
        'note {"id": 1} 00000000-0000-0000-0000-00000000000b'
    ],
    'the setting is read at each operation (UPDATE and DELETE)'
);
SELECT set_config('jwt.claims.database_id', '', true) AS _ \gset
INSERT INTO notes VALUES (2, 'anon');
SELECT is(
    pg_temp.new_jobs(),
    ARRAY['note_fields {"txt": "anon"} -', 'note {"id": 2} -', 'note_row {"id": 2, "txt": "anon"} -'],
    'no column and an empty setting: database_id NULL'
);
-- A row's database_id wins over the setting.
SELECT set_config('jwt.claims.database_id', '00000000-0000-0000-0000-00000000000c', true) AS _ \gset
CREATE TRIGGER t_id2 AFTER INSERT ON posts
FOR EACH ROW EXECUTE FUNCTION app_jobs.tg_add_job_with_row_id('post_again');
INSERT INTO posts VALUES (8, 'eight', 8, NULL, '00000000-0000-0000-0000-000000000008');
SELECT is(
    pg_temp.new_jobs(),
    ARRAY['post_again {"id": 8} 00000000-0000-0000-0000-000000000008'],
    'database_id column wins over the setting'
);
DROP TRIGGER t_id2 ON posts;

-- 6. Errors: the user's statement fails and nothing is written.
SELECT count(*) AS jobs_before FROM app_jobs.jobs \gset
CREATE TEMP TABLE bad (id integer, database_id uuid);
CREATE TABLE pg_temp.bad_cases (n int, trg text, fn text, args text, sqlstate text, what text);
INSERT INTO pg_temp.bad_cases VALUES
    (1, 'e1', 'tg_add_job_with_row_id', '', 'PJ007', 'tg_add_job_with_row_id without a task'),
    (2, 'e2', 'tg_add_job_with_row', '', 'PJ007', 'tg_add_job_with_row without a task'),
    (3, 'e3', 'trigger_job_with_fields', '', 'PJ007', 'trigger_job_with_fields without a task'),
    (4, 'e4', 'trigger_job_with_fields', '''t'', ''nope''', 'PJ007',
     'trigger_job_with_fields with an unknown field'),
    (5, 'e5', 'trigger_job_with_fields', '''t'', ''id'', ''ID''', 'PJ007',
     'trigger_job_with_fields: field names are case-sensitive'),
    (6, 'e6', 'tg_add_job_with_row_id', '''''', 'PJ001', 'an empty task name'),
    (7, 'e7', 'tg_add_job_with_row', repeat('x', 127)::text, 'PJ001', 'a 127-character task name');
UPDATE pg_temp.bad_cases SET args = quote_literal(args) WHERE n = 7;
CREATE FUNCTION pg_temp.try_bad(p_trg text, p_fn text, p_args text, p_op text) RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    -- Only the trigger of this case is active.
    ALTER TABLE bad DISABLE TRIGGER USER;
    EXECUTE format(
        'CREATE TRIGGER %I AFTER INSERT OR UPDATE OR DELETE ON bad FOR EACH ROW '
        'EXECUTE FUNCTION app_jobs.%I(%s)', p_trg, p_fn, p_args);
    RETURN p_op;
END;
$$;
SELECT throws_ok(
    pg_temp.try_bad(c.trg, c.fn, c.args, 'INSERT INTO bad VALUES (1, NULL)'),
    c.sqlstate, NULL, c.what || ' raises ' || c.sqlstate
)
FROM pg_temp.bad_cases AS c
ORDER BY c.n;
SELECT is((SELECT count(*)::int FROM bad), 0, 'no row reached the user table');
SELECT is((SELECT count(*) FROM app_jobs.jobs), :jobs_before::bigint, 'no job was added');
-- UPDATE and DELETE fail the same way.
DO $$
BEGIN
    ALTER TABLE bad DISABLE TRIGGER USER;
    INSERT INTO bad VALUES (1, NULL);
    ALTER TABLE bad ENABLE TRIGGER e1;
END;
$$;
SELECT throws_ok('UPDATE bad SET id = 2', 'PJ007', NULL, 'UPDATE through a task-less trigger raises PJ007');
SELECT throws_ok('DELETE FROM bad', 'PJ007', NULL, 'DELETE through a task-less trigger raises PJ007');
SELECT is((SELECT id FROM bad), 1, 'the user row is unchanged');
SELECT is((SELECT count(*) FROM app_jobs.jobs), :jobs_before::bigint, 'and still no job was added');

-- Error messages name the problem.
ALTER TABLE bad DISABLE TRIGGER USER;
ALTER TABLE bad ENABLE TRIGGER e4;
SELECT throws_ok(
    'INSERT INTO bad VALUES (3, NULL)', 'PJ007',
    'job trigger field "nope" is not a column of ' || pg_my_temp_schema()::regnamespace || '.bad',
    'unknown field: the message names the field and the table'
);
ALTER TABLE bad DISABLE TRIGGER USER;
ALTER TABLE bad ENABLE TRIGGER e2;
SELECT throws_ok(
    'INSERT INTO bad VALUES (3, NULL)', 'PJ007',
    'job trigger needs the task identifier as its first argument',
    'no task: the message says what is missing'
);

SELECT * FROM finish();
ROLLBACK;
