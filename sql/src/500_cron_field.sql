-- One value of a cron field: a number or a name, checked against the field's range.
CREATE FUNCTION app_jobs._cron_value(
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
CREATE FUNCTION app_jobs._cron_field(
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
            v_lo := app_jobs._cron_value(v_bounds[1], p_min, p_max, p_names);
            v_hi := CASE
                WHEN v_bounds[3] IS NOT NULL
                    THEN app_jobs._cron_value(v_bounds[3], p_min, p_max, p_names)
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
