-- The trigger functions below run with the rights of whoever fires them (SECURITY
-- INVOKER, see 950_security.sql): turning the row into JSON may run casts of the
-- caller's own types, which must never run as the extension's owner. Only the finished
-- payload crosses into add_job, which checks the tenant and enqueues as the owner.

-- Enqueue for a user's trigger: task from the trigger's first argument, tenant from the
-- row's database_id column when it has one (else db_id's default, the claim).
CREATE FUNCTION app_jobs._enqueue_from_trigger(
    p_tg_argv text[],
    p_row jsonb,
    p_payload json
) RETURNS app_jobs.jobs
LANGUAGE plpgsql VOLATILE
SECURITY INVOKER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
DECLARE
    -- TG_ARGV counts from 0: take the first element whatever the lower bound.
    v_task text := p_tg_argv[array_lower(p_tg_argv, 1)];
BEGIN
    IF coalesce(cardinality(p_tg_argv), 0) < 1 THEN
        RAISE EXCEPTION 'job trigger needs the task identifier as its first argument'
            USING ERRCODE = 'PJ007';
    END IF;
    IF p_row ? 'database_id' THEN
        RETURN app_jobs.add_job(
            db_id := (p_row ->> 'database_id')::uuid,
            identifier := v_task,
            payload := p_payload
        );
    END IF;
    RETURN app_jobs.add_job(identifier := v_task, payload := p_payload);
END;
$$;

-- Row trigger: enqueue TG_ARGV[0] with payload {"id": <row id>}.
CREATE FUNCTION app_jobs.tg_add_job_with_row_id() RETURNS trigger
LANGUAGE plpgsql VOLATILE
SECURITY INVOKER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
DECLARE
    v_row jsonb := to_jsonb(CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END);
BEGIN
    PERFORM app_jobs._enqueue_from_trigger(
        TG_ARGV, v_row, json_build_object('id', v_row -> 'id')
    );
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END;
$$;

COMMENT ON FUNCTION app_jobs.tg_add_job_with_row_id IS
'Row trigger: enqueue the task named by the first argument with {"id": row.id}';

-- Row trigger: enqueue TG_ARGV[0] with the whole row as payload.
CREATE FUNCTION app_jobs.tg_add_job_with_row() RETURNS trigger
LANGUAGE plpgsql VOLATILE
SECURITY INVOKER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
DECLARE
    v_row jsonb := to_jsonb(CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END);
BEGIN
    PERFORM app_jobs._enqueue_from_trigger(
        TG_ARGV,
        v_row,
        to_json(CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END)
    );
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END;
$$;

COMMENT ON FUNCTION app_jobs.tg_add_job_with_row IS
'Row trigger: enqueue the task named by the first argument with the row as payload';

-- Row trigger: enqueue TG_ARGV[0] with the columns named by the other arguments.
CREATE FUNCTION app_jobs.trigger_job_with_fields() RETURNS trigger
LANGUAGE plpgsql VOLATILE
SECURITY INVOKER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
DECLARE
    v_row jsonb := to_jsonb(CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END);
    v_payload jsonb := '{}'::jsonb;
    v_field text;
BEGIN
    FOREACH v_field IN ARRAY coalesce(TG_ARGV[1:], ARRAY[]::text[])
    LOOP
        IF NOT v_row ? v_field THEN
            RAISE EXCEPTION 'job trigger field "%" is not a column of %.%',
                v_field, TG_TABLE_SCHEMA, TG_TABLE_NAME
                USING ERRCODE = 'PJ007';
        END IF;
        v_payload := v_payload || jsonb_build_object(v_field, v_row -> v_field);
    END LOOP;
    PERFORM app_jobs._enqueue_from_trigger(TG_ARGV, v_row, v_payload::json);
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END;
$$;

COMMENT ON FUNCTION app_jobs.trigger_job_with_fields IS
'Row trigger: arguments are the task, then the columns copied into the payload';
