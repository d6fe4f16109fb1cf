-- pgjobs 0.1.0 -> 0.2.0: cron schedules evaluated in the database (schedule_next_run,
-- run_due_scheduled_jobs), scheduled_jobs.next_run_at.

ALTER TABLE app_jobs.scheduled_jobs ADD COLUMN next_run_at timestamptz;

COMMENT ON COLUMN app_jobs.scheduled_jobs.next_run_at IS
'The next slot to enqueue (NULL once the schedule has ended)';

-- Due schedules, for the scheduler tick.
CREATE INDEX scheduled_jobs_next_run_at_idx ON app_jobs.scheduled_jobs (next_run_at)
WHERE next_run_at IS NOT NULL;

-- sql/src/500_cron_field.sql
-- One value of a cron field: a number or a name, checked against the field's range.
CREATE FUNCTION app_jobs.cron_value(
    p_value text,
    p_min integer,
    p_max integer,
    p_names text[]
) RETURNS integer
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
    v_result integer;
BEGIN
    IF p_value ~ '^\d{1,4}$' THEN
        v_result := p_value::integer;
    ELSE
        v_result := array_position(p_names, p_value) - 1 + p_min;
    END IF;
    IF v_result IS NULL OR v_result NOT BETWEEN p_min AND p_max THEN
        RAISE EXCEPTION 'cron value "%" is not in %..%', p_value, p_min, p_max
            USING ERRCODE = 'PJ008';
    END IF;
    RETURN v_result;
END;
$$;

-- The sorted values a cron field (lists, ranges, steps, names, *) matches.
CREATE FUNCTION app_jobs.cron_field(
    p_field text,
    p_min integer,
    p_max integer,
    p_names text[] DEFAULT NULL
) RETURNS integer[]
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
    v_part text;
    v_match text[];
    v_bounds text[];
    v_step integer;
    v_lo integer;
    v_hi integer;
    v_result integer[] := '{}';
BEGIN
    IF p_field IS NULL OR p_field = '' THEN
        RAISE EXCEPTION 'empty cron field' USING ERRCODE = 'PJ008';
    END IF;
    FOREACH v_part IN ARRAY string_to_array(lower(p_field), ',') LOOP
        v_match := regexp_match(v_part, '^([^/]+)(/(\d{1,4}))?$');
        IF v_match IS NULL THEN
            RAISE EXCEPTION 'invalid cron field "%"', p_field USING ERRCODE = 'PJ008';
        END IF;
        v_step := coalesce(v_match[3]::integer, 1);
        IF v_step < 1 THEN
            RAISE EXCEPTION 'cron step must be at least 1 in "%"', p_field
                USING ERRCODE = 'PJ008';
        END IF;
        IF v_match[1] = '*' THEN
            v_lo := p_min;
            v_hi := p_max;
        ELSE
            v_bounds := regexp_match(v_match[1], '^([a-z0-9]+)(-([a-z0-9]+))?$');
            IF v_bounds IS NULL THEN
                RAISE EXCEPTION 'invalid cron field "%"', p_field USING ERRCODE = 'PJ008';
            END IF;
            v_lo := app_jobs.cron_value(v_bounds[1], p_min, p_max, p_names);
            v_hi := CASE
                WHEN v_bounds[3] IS NOT NULL
                    THEN app_jobs.cron_value(v_bounds[3], p_min, p_max, p_names)
                WHEN v_match[3] IS NOT NULL THEN p_max
                ELSE v_lo
            END;
            IF v_lo > v_hi THEN
                RAISE EXCEPTION 'cron range "%" runs backwards', v_match[1]
                    USING ERRCODE = 'PJ008';
            END IF;
        END IF;
        v_result := v_result || array(SELECT generate_series(v_lo, v_hi, v_step));
    END LOOP;
    RETURN array(SELECT DISTINCT v FROM unnest(v_result) AS v ORDER BY v);
END;
$$;

-- sql/src/501_schedule_spec.sql
-- Validate schedule_info and expand it into the sets of matching values.
CREATE FUNCTION app_jobs.schedule_spec(p_info json) RETURNS jsonb
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    v_info jsonb;
    v_tz text;
    v_rule text;
    v_fields text[];
    v_sets jsonb := '{}'::jsonb;
    v_key text;
    v_json_keys text[] := ARRAY['minute', 'hour', 'dayOfMonth', 'month', 'dayOfWeek'];
    v_mins integer[] := ARRAY[0, 0, 1, 1, 0];
    v_maxs integer[] := ARRAY[59, 23, 31, 12, 7];
    v_values integer[];
    v_star boolean[] := ARRAY[TRUE, TRUE, TRUE, TRUE, TRUE];
    v_start timestamptz;
    v_end timestamptz;
    v_backfill interval;
    i integer;
BEGIN
    IF p_info IS NULL OR json_typeof(p_info) <> 'object' THEN
        RAISE EXCEPTION 'schedule_info must be a JSON object' USING ERRCODE = 'PJ008';
    END IF;
    v_info := p_info::jsonb;

    v_tz := coalesce(v_info ->> 'tz', 'UTC');
    BEGIN
        PERFORM now() AT TIME ZONE v_tz;
    EXCEPTION WHEN invalid_parameter_value THEN
        RAISE EXCEPTION 'unknown time zone "%"', v_tz USING ERRCODE = 'PJ010';
    END;

    IF v_info ? 'rule' THEN
        v_rule := lower(btrim(v_info ->> 'rule'));
        v_rule := CASE v_rule
            WHEN '@yearly' THEN '0 0 1 1 *'
            WHEN '@annually' THEN '0 0 1 1 *'
            WHEN '@monthly' THEN '0 0 1 * *'
            WHEN '@weekly' THEN '0 0 * * 0'
            WHEN '@daily' THEN '0 0 * * *'
            WHEN '@midnight' THEN '0 0 * * *'
            WHEN '@hourly' THEN '0 * * * *'
            ELSE v_rule
        END;
        v_fields := regexp_split_to_array(coalesce(v_rule, ''), '\s+');
        IF cardinality(v_fields) <> 5 THEN
            RAISE EXCEPTION 'cron rule "%" must have 5 fields', v_info ->> 'rule'
                USING ERRCODE = 'PJ008';
        END IF;
        FOR i IN 1..5 LOOP
            v_values := app_jobs.cron_field(
                v_fields[i], v_mins[i], v_maxs[i],
                CASE i
                    WHEN 4 THEN ARRAY[
                        'jan', 'feb', 'mar', 'apr', 'may', 'jun',
                        'jul', 'aug', 'sep', 'oct', 'nov', 'dec'
                    ]
                    WHEN 5 THEN ARRAY['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat']
                END
            );
            v_star[i] := left(v_fields[i], 1) = '*';
            v_sets := v_sets || jsonb_build_object(v_json_keys[i], v_values);
        END LOOP;
    ELSE
        FOR i IN 1..5 LOOP
            v_key := v_json_keys[i];
            IF v_info ? v_key THEN
                IF jsonb_typeof(v_info -> v_key) <> 'array'
                    OR jsonb_array_length(v_info -> v_key) = 0
                    OR EXISTS (
                        SELECT 1 FROM jsonb_array_elements(v_info -> v_key) AS e
                        WHERE jsonb_typeof(e) <> 'number'
                            OR e::text !~ '^\d{1,4}$'
                            OR e::text::integer NOT BETWEEN v_mins[i] AND v_maxs[i]
                    ) THEN
                    RAISE EXCEPTION '% must be a non-empty array of integers in %..%',
                        v_key, v_mins[i], v_maxs[i]
                        USING ERRCODE = 'PJ008';
                END IF;
                v_values := array(
                    SELECT DISTINCT e::text::integer
                    FROM jsonb_array_elements(v_info -> v_key) AS e ORDER BY 1
                );
                v_star[i] := FALSE;
            ELSE
                v_values := array(SELECT generate_series(v_mins[i], v_maxs[i]));
            END IF;
            v_sets := v_sets || jsonb_build_object(v_key, v_values);
        END LOOP;
    END IF;

    -- 7 is Sunday too.
    v_sets := jsonb_set(v_sets, '{dayOfWeek}', to_jsonb(array(
        SELECT DISTINCT CASE WHEN d::integer = 7 THEN 0 ELSE d::integer END
        FROM jsonb_array_elements_text(v_sets -> 'dayOfWeek') AS d ORDER BY 1
    )));

    BEGIN
        v_start := (v_info ->> 'start')::timestamptz;
        v_end := (v_info ->> 'end')::timestamptz;
        v_backfill := (v_info ->> 'backfill')::interval;
    EXCEPTION WHEN data_exception THEN
        RAISE EXCEPTION 'start, end or backfill of schedule_info is not valid: %', sqlerrm
            USING ERRCODE = 'PJ008';
    END;
    IF v_end < v_start THEN
        RAISE EXCEPTION 'schedule end % is before its start %', v_end, v_start
            USING ERRCODE = 'PJ011';
    END IF;
    IF v_backfill < interval '0' THEN
        RAISE EXCEPTION 'backfill must not be negative' USING ERRCODE = 'PJ008';
    END IF;

    RETURN v_sets || jsonb_build_object(
        'dom_star', v_star[3], 'dow_star', v_star[5], 'tz', v_tz,
        'start', v_start, 'end', v_end, 'backfill', v_backfill
    );
END;
$$;

-- sql/src/502_schedule_next_run.sql
-- The instant a local slot fires: a skipped local time fires at the first valid
-- instant after it; a repeated one at its first occurrence.
CREATE FUNCTION app_jobs.local_slot_instant(p_local timestamp, p_tz text) RETURNS timestamptz
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    v_instant timestamptz := p_local AT TIME ZONE p_tz;
    v_valid timestamp := p_local;
    v_offset interval;
BEGIN
    IF (v_instant AT TIME ZONE p_tz) <> p_local THEN
        WHILE ((v_valid AT TIME ZONE p_tz) AT TIME ZONE p_tz) <> v_valid LOOP
            v_valid := v_valid + interval '1 minute';
        END LOOP;
        RETURN v_valid AT TIME ZONE p_tz;
    END IF;
    FOREACH v_offset IN ARRAY ARRAY[interval '2 hours', '1 hour', '30 minutes'] LOOP
        IF ((v_instant - v_offset) AT TIME ZONE p_tz) = p_local THEN
            RETURN v_instant - v_offset;
        END IF;
    END LOOP;
    RETURN v_instant;
END;
$$;

-- First slot of an expanded schedule (schedule_spec) strictly after p_after; NULL once ended.
CREATE FUNCTION app_jobs.spec_next_run(
    p_spec jsonb,
    p_after timestamptz
) RETURNS timestamptz
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    v_tz text := p_spec ->> 'tz';
    v_start timestamptz := (p_spec ->> 'start')::timestamptz;
    v_end timestamptz := (p_spec ->> 'end')::timestamptz;
    v_minutes integer[] := array(SELECT jsonb_array_elements_text(p_spec -> 'minute')::integer);
    v_hours integer[] := array(SELECT jsonb_array_elements_text(p_spec -> 'hour')::integer);
    v_doms integer[] := array(SELECT jsonb_array_elements_text(p_spec -> 'dayOfMonth')::integer);
    v_months integer[] := array(SELECT jsonb_array_elements_text(p_spec -> 'month')::integer);
    v_dows integer[] := array(SELECT jsonb_array_elements_text(p_spec -> 'dayOfWeek')::integer);
    v_either boolean := NOT (p_spec ->> 'dom_star')::boolean
        AND NOT (p_spec ->> 'dow_star')::boolean;
    v_after timestamptz := p_after;
    v_first timestamp;
    v_day date;
    v_from integer;
    v_slot integer;
    v_instant timestamptz;
    v_day_ok boolean;
BEGIN
    IF p_after IS NULL THEN
        RETURN NULL;
    END IF;
    IF v_start IS NOT NULL AND v_start - interval '1 microsecond' > v_after THEN
        v_after := v_start - interval '1 microsecond';
    END IF;
    v_first := date_trunc('minute', v_after AT TIME ZONE v_tz) + interval '1 minute';
    v_day := v_first::date;
    v_from := extract(HOUR FROM v_first)::integer * 60 + extract(MINUTE FROM v_first)::integer;

    -- Eight years cover every satisfiable combination (Feb 29 included).
    FOR i IN 0..2930 LOOP
        IF v_end IS NOT NULL AND (v_day::timestamp AT TIME ZONE v_tz) > v_end + interval '1 day' THEN
            RETURN NULL;
        END IF;
        IF extract(MONTH FROM v_day)::integer = ANY(v_months) THEN
            v_day_ok := CASE
                WHEN v_either THEN extract(DAY FROM v_day)::integer = ANY(v_doms)
                    OR extract(DOW FROM v_day)::integer = ANY(v_dows)
                ELSE extract(DAY FROM v_day)::integer = ANY(v_doms)
                    AND extract(DOW FROM v_day)::integer = ANY(v_dows)
            END;
            IF v_day_ok THEN
                FOR v_slot IN
                    SELECT h * 60 + m FROM unnest(v_hours) AS h, unnest(v_minutes) AS m
                    WHERE h * 60 + m >= v_from ORDER BY 1
                LOOP
                    v_instant := app_jobs.local_slot_instant(
                        v_day + make_interval(mins => v_slot), v_tz
                    );
                    IF v_instant > v_after THEN
                        IF v_end IS NOT NULL AND v_instant > v_end THEN
                            RETURN NULL;
                        END IF;
                        RETURN v_instant;
                    END IF;
                END LOOP;
            END IF;
        END IF;
        v_day := v_day + 1;
        v_from := 0;
    END LOOP;
    RETURN NULL;
END;
$$;

-- First slot of a schedule strictly after `after` (and not before its start); NULL once ended.
CREATE FUNCTION app_jobs.schedule_next_run(
    schedule_info json,
    after timestamptz
) RETURNS timestamptz
LANGUAGE sql STABLE
AS $$
    SELECT app_jobs.spec_next_run(app_jobs.schedule_spec(schedule_info), after);
$$;

COMMENT ON FUNCTION app_jobs.schedule_next_run IS
'First slot strictly after `after`, no earlier than start; NULL once past end';

-- sql/src/510_run_due_scheduled_jobs.sql
-- Enqueue the job of every due schedule slot exactly once; safe from many workers at once.
CREATE FUNCTION app_jobs.run_due_scheduled_jobs(
    as_of timestamptz DEFAULT now()
) RETURNS SETOF app_jobs.jobs
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_schedule app_jobs.scheduled_jobs;
    v_spec jsonb;
    v_backfill interval;
    v_slots timestamptz[];
    v_slot timestamptz;
    v_next timestamptz;
    v_job app_jobs.jobs;
BEGIN
    -- A schedule another session is ticking is skipped: that session runs its slots,
    -- and moves next_run_at past them in the same transaction as the jobs.
    FOR v_schedule IN
        SELECT * FROM app_jobs.scheduled_jobs AS s
        WHERE s.next_run_at <= as_of
        ORDER BY s.next_run_at, s.id
        FOR UPDATE SKIP LOCKED
    LOOP
        -- Parse the schedule once; every slot below is computed from the parsed form.
        v_spec := app_jobs.schedule_spec(v_schedule.schedule_info);
        v_backfill := (v_spec ->> 'backfill')::interval;
        v_slot := v_schedule.next_run_at;
        IF v_backfill IS NULL THEN
            -- Only the latest missed slot; start looking an hour back when far behind.
            v_next := app_jobs.spec_next_run(v_spec, as_of - interval '1 hour');
            IF v_next > v_slot AND v_next <= as_of THEN
                v_slot := v_next;
            END IF;
            LOOP
                v_next := app_jobs.spec_next_run(v_spec, v_slot);
                EXIT WHEN v_next IS NULL OR v_next > as_of;
                v_slot := v_next;
            END LOOP;
            v_slots := ARRAY[v_slot];
        ELSE
            -- Every missed slot within the backfill window.
            IF v_slot < as_of - v_backfill THEN
                v_slot := app_jobs.spec_next_run(
                    v_spec, as_of - v_backfill - interval '1 microsecond'
                );
            END IF;
            v_slots := '{}';
            WHILE v_slot IS NOT NULL AND v_slot <= as_of LOOP
                v_slots := v_slots || v_slot;
                v_slot := app_jobs.spec_next_run(v_spec, v_slot);
            END LOOP;
        END IF;

        FOREACH v_slot IN ARRAY v_slots LOOP
            v_job := app_jobs.add_job(
                db_id := v_schedule.database_id,
                identifier := v_schedule.task_identifier,
                payload := v_schedule.payload,
                queue_name := v_schedule.queue_name,
                run_at := v_slot,
                max_attempts := v_schedule.max_attempts,
                priority := v_schedule.priority
            );
            RETURN NEXT v_job;
        END LOOP;

        UPDATE app_jobs.scheduled_jobs AS s
        SET
            last_scheduled = coalesce(v_slots[cardinality(v_slots)], s.last_scheduled),
            last_scheduled_id = coalesce(v_job.id, s.last_scheduled_id),
            next_run_at = app_jobs.spec_next_run(v_spec, as_of)
        WHERE s.id = v_schedule.id;
        v_job := NULL;
    END LOOP;
END;
$$;

COMMENT ON FUNCTION app_jobs.run_due_scheduled_jobs IS
'Scheduler tick: enqueue every due slot once (latest missed slot, or all within backfill)';

-- sql/src/520_tg_scheduled_jobs_next_run.sql
-- Validate a schedule when it is written and compute its first slot.
CREATE FUNCTION app_jobs.tg_scheduled_jobs_next_run() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    -- Rewriting the same schedule keeps its pending slot.
    IF tg_op = 'UPDATE' AND old.schedule_info::text = new.schedule_info::text THEN
        RETURN new;
    END IF;
    new.next_run_at := app_jobs.schedule_next_run(new.schedule_info, now());
    RETURN new;
END;
$$;

CREATE TRIGGER _200_next_run_at
BEFORE INSERT OR UPDATE OF schedule_info ON app_jobs.scheduled_jobs
FOR EACH ROW EXECUTE FUNCTION app_jobs.tg_scheduled_jobs_next_run();

-- Schedules written before 0.2.0 get their next slot; one that does not parse is left
-- without one (it never fires) and reported.
DO $$
DECLARE
    v_row record;
BEGIN
    FOR v_row IN SELECT s.id, s.schedule_info FROM app_jobs.scheduled_jobs AS s LOOP
        BEGIN
            UPDATE app_jobs.scheduled_jobs AS s
            SET next_run_at = app_jobs.schedule_next_run(v_row.schedule_info, now())
            WHERE s.id = v_row.id;
        EXCEPTION WHEN sqlstate 'PJ008' OR sqlstate 'PJ010' OR sqlstate 'PJ011' THEN
            RAISE WARNING 'scheduled job % has an invalid schedule_info: %', v_row.id, sqlerrm;
        END;
    END LOOP;
END;
$$;

-- The version of the app_jobs objects, for installs without CREATE EXTENSION.
CREATE OR REPLACE FUNCTION app_jobs.pgjobs_version() RETURNS text
LANGUAGE sql IMMUTABLE
AS $$ SELECT '0.2.0'::text $$;
