-- Validate schedule_info and expand it into the sets of matching values.
CREATE FUNCTION app_jobs._schedule_spec(p_info json) RETURNS jsonb
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
            v_values := app_jobs._cron_field(
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
    -- Bounded to what clients can represent (Python's datetime ends with year 9999);
    -- infinity is no start or end at all.
    IF v_start NOT BETWEEN '1970-01-01 00:00:00+00' AND '9999-12-31 00:00:00+00'
        OR v_end NOT BETWEEN '1970-01-01 00:00:00+00' AND '9999-12-31 00:00:00+00' THEN
        RAISE EXCEPTION 'schedule start and end must lie between 1970 and 9999, got % and %',
            v_start, v_end
            USING ERRCODE = 'PJ008';
    END IF;
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
