-- The instant a local slot fires: a skipped local time fires at the first valid
-- instant after it; a repeated one at its first occurrence.
CREATE FUNCTION app_jobs._local_slot_instant(p_local timestamp, p_tz text) RETURNS timestamptz
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
CREATE FUNCTION app_jobs._spec_next_run(
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
                    v_instant := app_jobs._local_slot_instant(
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
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
    SELECT app_jobs._spec_next_run(app_jobs._schedule_spec(schedule_info), after);
$$;

COMMENT ON FUNCTION app_jobs.schedule_next_run IS
'First slot strictly after `after`, no earlier than start; NULL once past end';
