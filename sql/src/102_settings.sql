-- The value of a setting, or its default when it was never set.
CREATE FUNCTION app_jobs.setting(p_name text) RETURNS text
LANGUAGE sql STABLE
AS $$
    SELECT coalesce(
        (SELECT s.value FROM app_jobs.settings AS s WHERE s.name = p_name),
        CASE p_name WHEN 'history' THEN 'on' WHEN 'history_retention' THEN '7 days' END
    );
$$;

-- Change a setting, refusing unknown names and values that do not parse (PJ014).
CREATE FUNCTION app_jobs.set_setting(name text, value text) RETURNS text
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_value text := value;
BEGIN
    IF name = 'history' AND lower(v_value) IN ('on', 'off') THEN
        v_value := lower(v_value);
    ELSIF name = 'history_retention' AND v_value IS NOT NULL THEN
        BEGIN
            IF v_value::interval < interval '0' THEN
                RAISE EXCEPTION USING ERRCODE = 'invalid_datetime_format';
            END IF;
        EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow
            OR interval_field_overflow THEN
            RAISE EXCEPTION 'history_retention must be an interval of zero or more, got "%"',
                v_value
                USING ERRCODE = 'PJ014';
        END;
    ELSE
        RAISE EXCEPTION 'unknown setting % or bad value "%"', coalesce(name, 'NULL'), v_value
            USING HINT = 'history takes on or off; history_retention an interval',
            ERRCODE = 'PJ014';
    END IF;
    INSERT INTO app_jobs.settings AS s (name, value)
    VALUES (set_setting.name, v_value)
    ON CONFLICT ON CONSTRAINT settings_pkey DO UPDATE SET value = excluded.value;
    RETURN v_value;
END;
$$;

COMMENT ON FUNCTION app_jobs.set_setting IS
'Set history (on/off) or history_retention (interval); PJ014 on anything else';
