-- Caller code never runs as the owner: as an enqueue, a worker and an admin login (none of them superusers), a type of the caller's own with a cast that tries ALTER ROLE ... SUPERUSER (and records who ran it) is passed through every granted function that takes caller data (implicit casts into json, jsonb, text, uuid, bigint, integer, interval, timestamptz, text[] and bigint[] arguments) and written through each trigger function (the row's JSON is built from the caller's type). The cast may run, but only as the caller: no role becomes superuser, and every recorded run names the caller.
BEGIN;
\ir setup.psql
SELECT plan(12);

SET LOCAL jwt.claims.database_id = '00000000-0000-0000-0000-00000000000a';
CREATE ROLE pgjobs_t_evil_enqueue NOLOGIN IN ROLE pgjobs_enqueue;
CREATE ROLE pgjobs_t_evil_worker NOLOGIN IN ROLE pgjobs_worker;
CREATE ROLE pgjobs_t_evil_admin NOLOGIN IN ROLE pgjobs_admin;
-- A job of tenant A that the calls below may name.
SELECT id AS a1 FROM app_jobs.add_job(
    db_id := '00000000-0000-0000-0000-00000000000a', identifier := 'evil_target'
) \gset

-- Every recorded run of the planted casts: the role it ran as.
CREATE TEMP TABLE ran (who text);
GRANT INSERT, SELECT ON ran TO PUBLIC;

-- The attack, built by each role for itself: a type, a function that records who runs
-- it and tries to make that role a superuser, and implicit casts to every argument type
-- of the API.
CREATE FUNCTION pg_temp.plant(p_role text) RETURNS void LANGUAGE plpgsql AS $plant$
DECLARE
    v_short text;
    v_type text;
BEGIN
    EXECUTE format('CREATE TYPE pg_temp.%I AS ENUM (''x'')', p_role || '_t');
    EXECUTE format($f$
        CREATE FUNCTION pg_temp.%1$I(v pg_temp.%2$I) RETURNS text LANGUAGE plpgsql AS $b$
        BEGIN
            INSERT INTO pg_temp.ran VALUES (current_user);
            BEGIN
                EXECUTE format('ALTER ROLE %%I SUPERUSER', %3$L);
            EXCEPTION WHEN insufficient_privilege THEN
                NULL;
            END;
            RETURN NULL;
        END $b$
    $f$, p_role || '_evil', p_role || '_t', p_role);
    EXECUTE format(
        'CREATE FUNCTION pg_temp.%1$I(v pg_temp.%2$I) RETURNS json LANGUAGE sql '
        || 'AS $b$ SELECT coalesce(pg_temp.%3$I(v)::json, ''{}''::json) $b$',
        p_role || '_json', p_role || '_t', p_role || '_evil'
    );
    EXECUTE format(
        'CREATE CAST (pg_temp.%I AS json) WITH FUNCTION pg_temp.%I(pg_temp.%I) AS IMPLICIT',
        p_role || '_t', p_role || '_json', p_role || '_t'
    );
    EXECUTE format(
        'CREATE CAST (pg_temp.%I AS text) WITH FUNCTION pg_temp.%I(pg_temp.%I) AS IMPLICIT',
        p_role || '_t', p_role || '_evil', p_role || '_t'
    );
    FOR v_short, v_type IN
        SELECT t.short, t.name FROM (VALUES
            ('jsonb', 'jsonb'), ('uuid', 'uuid'), ('int8', 'bigint'), ('int4', 'integer'),
            ('interval', 'interval'), ('tstz', 'timestamptz'), ('texts', 'text[]'),
            ('int8s', 'bigint[]')
        ) AS t (short, name)
    LOOP
        EXECUTE format(
            'CREATE FUNCTION pg_temp.%1$I(v pg_temp.%2$I) RETURNS %3$s LANGUAGE sql '
            || 'AS $b$ SELECT (pg_temp.%4$I(v))::%3$s $b$',
            p_role || '_' || v_short, p_role || '_t', v_type, p_role || '_evil'
        );
        EXECUTE format(
            'CREATE CAST (pg_temp.%1$I AS %2$s) WITH FUNCTION pg_temp.%3$I(pg_temp.%1$I) '
            || 'AS IMPLICIT',
            p_role || '_t', v_type, p_role || '_' || v_short
        );
    END LOOP;
END;
$plant$;

-- Calls with the caller's value in each argument that takes data; {v} stands for it.
CREATE TEMP TABLE calls (role text, call text);
INSERT INTO calls VALUES
('enqueue', 'app_jobs.add_job(identifier := ''evil'', payload := {v})'),
('enqueue', 'app_jobs.add_job(identifier := {v}, payload := ''{}'')'),
('enqueue', 'app_jobs.add_job(db_id := {v}, identifier := ''evil'')'),
('enqueue', 'app_jobs.add_job(identifier := ''evil'', job_key := {v})'),
('enqueue', 'app_jobs.add_job(identifier := ''evil'', queue_name := {v})'),
('enqueue', 'app_jobs.add_job(identifier := ''evil'', run_at := {v})'),
('enqueue', 'app_jobs.add_job(identifier := ''evil'', max_attempts := {v})'),
('enqueue', 'app_jobs.add_job(identifier := ''evil'', timeout := {v})'),
('enqueue', 'app_jobs.add_job(identifier := ''evil'', origin := {v})'),
('enqueue', 'app_jobs.add_job(identifier := ''evil'', job_key_mode := {v})'),
('enqueue', 'app_jobs.add_job(identifier := ''evil'', depends_on := {v})'),
('enqueue', 'app_jobs.add_bundle(''b'', {v})'),
('enqueue', 'app_jobs.add_bundle({v}, ''[{"identifier": "e"}]'')'),
('enqueue', 'app_jobs.add_bundle(''b'', ''[{"identifier": "e"}]'', followup := {v})'),
('enqueue', 'app_jobs.add_scheduled_job(identifier := ''evil'', schedule_info := {v})'),
('enqueue', 'app_jobs.add_scheduled_job(identifier := ''evil'', payload := {v}, schedule_info := ''{"rule": "@daily"}'')'),
('enqueue', 'app_jobs.cancel_job({v})'),
('enqueue', 'app_jobs.schedule_next_run({v}, now())'),
('worker', 'app_jobs.get_jobs({v})'),
('worker', 'app_jobs.get_jobs(''w'', {v})'),
('worker', 'app_jobs.get_jobs(''w'', NULL, {v})'),
('worker', 'app_jobs.finish_jobs(''w'', {v})'),
('worker', 'app_jobs.fail_job(''w'', 1, {v})'),
('worker', 'app_jobs.set_progress(''w'', 1, 5, {v})'),
('worker', 'app_jobs.register_worker(''w'', {v})'),
('worker', 'app_jobs.register_worker(''w'', tasks := {v})'),
('worker', 'app_jobs.worker_heartbeat({v})'),
('worker', 'app_jobs.reap_dead_workers({v})'),
('worker', 'app_jobs.release_jobs(''w'', {v})'),
('worker', 'app_jobs.run_due_scheduled_jobs({v})'),
('worker', 'app_jobs.run_scheduled_job(1, {v})'),
('admin', 'app_jobs.set_setting(''history'', {v})'),
('admin', 'app_jobs.set_task_settings({v})'),
('admin', 'app_jobs.set_task_settings(''t'', retry_delays := ARRAY[{v}])'),
('admin', 'app_jobs.set_queue_concurrency({v}, 2)'),
('admin', 'app_jobs.reschedule_jobs({v})'),
('admin', 'app_jobs.permanently_fail_jobs(ARRAY[1]::bigint[], {v})'),
('admin', 'app_jobs.remove_job({v})'),
('admin', 'app_jobs.delete_finished_jobs({v})'),
('admin', 'app_jobs.waiting_jobs({v})'),
('admin', 'app_jobs.force_unlock_workers({v})');

-- Run every call of a role as that role, with the caller's value as each argument type
-- PostgreSQL picks a cast for; a refusal is fine, only who ran the cast matters.
CREATE FUNCTION pg_temp.attack(p_role text) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    v_call text;
    v_made integer := 0;
BEGIN
    FOR v_call IN SELECT c.call FROM pg_temp.calls AS c WHERE c.role = p_role LOOP
        BEGIN
            EXECUTE 'SELECT ' || replace(v_call, '{v}', format('''x''::pg_temp.%I', current_user || '_t'));
        EXCEPTION WHEN OTHERS THEN
            NULL;
        END;
        v_made := v_made + 1;
    END LOOP;
    RETURN v_made;
END;
$$;
GRANT EXECUTE ON FUNCTION pg_temp.plant(text), pg_temp.attack(text) TO PUBLIC;
GRANT SELECT ON calls TO PUBLIC;

SET LOCAL ROLE pgjobs_t_evil_enqueue;
SELECT pg_temp.plant('pgjobs_t_evil_enqueue');
SELECT is(pg_temp.attack('enqueue'), 18, 'enqueue: 18 calls made with the caller''s type');
RESET ROLE;
SET LOCAL ROLE pgjobs_t_evil_worker;
SELECT pg_temp.plant('pgjobs_t_evil_worker');
SELECT is(pg_temp.attack('worker'), 13, 'worker: 13 calls made with the caller''s type');
RESET ROLE;
SET LOCAL ROLE pgjobs_t_evil_admin;
SELECT pg_temp.plant('pgjobs_t_evil_admin');
SELECT is(pg_temp.attack('admin'), 10, 'admin: 10 calls made with the caller''s type');
RESET ROLE;

-- The trigger functions: the row holds the caller's type; its cast to json runs when
-- the row becomes the payload. The enqueue role writes a table of its own with each.
SET LOCAL ROLE pgjobs_t_evil_enqueue;
CREATE TEMP TABLE evil_rows (id int, m pg_temp.pgjobs_t_evil_enqueue_t, database_id uuid);
CREATE TRIGGER t1 AFTER INSERT ON evil_rows FOR EACH ROW
EXECUTE FUNCTION app_jobs.tg_add_job_with_row('evil_row');
CREATE TRIGGER t2 AFTER INSERT ON evil_rows FOR EACH ROW
EXECUTE FUNCTION app_jobs.tg_add_job_with_row_id('evil_row_id');
CREATE TRIGGER t3 AFTER INSERT ON evil_rows FOR EACH ROW
EXECUTE FUNCTION app_jobs.trigger_job_with_fields('evil_fields', 'id', 'm');
INSERT INTO evil_rows VALUES (1, 'x', '00000000-0000-0000-0000-00000000000a');
RESET ROLE;
SELECT is(
    (SELECT array_agg(task_identifier ORDER BY task_identifier) FROM app_jobs.jobs
     WHERE task_identifier LIKE 'evil\_row%' OR task_identifier = 'evil_fields'),
    ARRAY['evil_fields', 'evil_row', 'evil_row_id'],
    'the three trigger functions enqueued their jobs'
);
SELECT is(
    (SELECT count(*)::integer FROM ran WHERE who = 'pgjobs_t_evil_enqueue') >= 3, TRUE,
    'the casts in the rows ran (as the caller), at least once per trigger function'
);

-- Nobody became a superuser; every run of a planted cast was the caller's own.
SELECT is(
    (SELECT array_agg(rolname ORDER BY rolname) FROM pg_roles
     WHERE rolname LIKE 'pgjobs\_t\_evil\_%' AND rolsuper),
    NULL,
    'no role became superuser'
);
SELECT is(
    (SELECT count(*)::integer FROM ran WHERE who = 'pgjobs_t_evil_worker') > 0
    AND (SELECT count(*)::integer FROM ran WHERE who = 'pgjobs_t_evil_admin') > 0, TRUE,
    'the worker''s and admin''s planted casts ran too (as themselves)'
);
SELECT is_empty(
    $$SELECT who FROM ran
      WHERE who NOT IN ('pgjobs_t_evil_enqueue', 'pgjobs_t_evil_worker', 'pgjobs_t_evil_admin')$$,
    'no planted cast ever ran as the owner (or anyone but its caller)'
);

-- What a trigger function enqueues is the caller's JSON, computed as the caller.
SELECT is(
    (SELECT payload::text FROM app_jobs.jobs WHERE task_identifier = 'evil_fields'),
    '{"m": {}, "id": 1}',
    'trigger_job_with_fields: the payload holds what the caller''s cast made'
);
SELECT is(
    (SELECT database_id FROM app_jobs.jobs WHERE task_identifier = 'evil_row'),
    '00000000-0000-0000-0000-00000000000a'::uuid,
    'the tenant comes from the row, checked by add_job'
);

-- The same row for another tenant is refused by add_job (the trigger runs as the caller,
-- add_job still checks the tenant).
SET LOCAL ROLE pgjobs_t_evil_enqueue;
SELECT throws_ok(
    $$INSERT INTO evil_rows VALUES (2, 'x', '00000000-0000-0000-0000-00000000000b')$$,
    'PJ030', NULL, 'a row of another tenant: PJ030 from add_job'
);
RESET ROLE;
-- And a role without pgjobs_enqueue cannot enqueue through them at all.
CREATE ROLE pgjobs_t_nobody NOLOGIN;
GRANT INSERT ON evil_rows TO pgjobs_t_nobody;
SET LOCAL ROLE pgjobs_t_nobody;
SELECT throws_ok(
    $$INSERT INTO evil_rows VALUES (3, NULL, '00000000-0000-0000-0000-00000000000a')$$,
    '42501', NULL, 'a writer without pgjobs_enqueue: permission denied (it runs as itself)'
);
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
