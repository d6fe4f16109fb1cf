-- The value of a setting, or its default when it was never set.
CREATE FUNCTION app_jobs.setting(p_name text) RETURNS text
LANGUAGE plpgsql STABLE
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
BEGIN
    RETURN coalesce(
        (SELECT s.value FROM app_jobs.settings AS s WHERE s.name = p_name),
        CASE p_name
            WHEN 'history' THEN 'on'
            WHEN 'history_retention' THEN '7 days'
            WHEN 'max_payload_bytes' THEN '262144'
            WHEN 'notify_max_queue_usage' THEN '0.5'
            WHEN 'job_expiry' THEN '4 hours'
            WHEN 'tenant_fairness' THEN 'off'
        END
    );
END;
$$;

-- How long the claim of a worker that never registered holds: p_job_expiry, or the
-- job_expiry setting when NULL.
CREATE FUNCTION app_jobs._job_expiry(p_job_expiry interval DEFAULT NULL) RETURNS interval
LANGUAGE plpgsql STABLE
AS $$
BEGIN
    RETURN coalesce(p_job_expiry, app_jobs.setting('job_expiry')::interval);
END;
$$;

-- Change a setting, refusing unknown names and values that do not parse (PJ014).
CREATE FUNCTION app_jobs.set_setting(name text, value text) RETURNS text
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
DECLARE
    v_value text := value;
BEGIN
    IF name IN ('history', 'tenant_fairness') AND lower(v_value) IN ('on', 'off') THEN
        v_value := lower(v_value);
    ELSIF name = 'history_retention' AND v_value IS NOT NULL THEN
        BEGIN
            IF v_value::interval < interval '0' THEN
                RAISE EXCEPTION USING ERRCODE = 'invalid_datetime_format';
            END IF;
            -- Stored the way PostgreSQL reads it ('$1', say, is 1 second to it).
            v_value := v_value::interval::text;
        EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow
            OR interval_field_overflow THEN
            RAISE EXCEPTION 'history_retention must be an interval of zero or more, got %',
                to_json(v_value)
                USING ERRCODE = 'PJ014';
        END;
    ELSIF name = 'job_expiry' AND v_value IS NOT NULL THEN
        BEGIN
            PERFORM app_jobs._check_job_expiry(v_value::interval);
            v_value := v_value::interval::text;
        EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow
            OR interval_field_overflow OR SQLSTATE 'PJ040' THEN
            RAISE EXCEPTION 'job_expiry must be a positive interval of at most 100 years, got %',
                to_json(v_value)
                USING ERRCODE = 'PJ014';
        END;
    ELSIF name = 'max_payload_bytes' THEN
        IF (CASE
            WHEN v_value !~ '^[ \t\n\r]*\+?[0-9]{1,18}[ \t\n\r]*$' THEN TRUE
            ELSE v_value::bigint NOT BETWEEN 1024 AND 1073741824
        END) IS NOT FALSE THEN
            RAISE EXCEPTION 'max_payload_bytes must be 1024 to 1073741824 bytes, got %',
                coalesce(to_json(v_value)::text, 'NULL')
                USING ERRCODE = 'PJ014';
        END IF;
        v_value := v_value::bigint::text;
    ELSIF name = 'notify_max_queue_usage' THEN
        IF (CASE
            WHEN v_value !~ '^[ \t\n\r]*(0|1)?(\.[0-9]{1,6})?[ \t\n\r]*$' THEN TRUE
            WHEN btrim(v_value, E' \t\n\r') IN ('', '.') THEN TRUE
            ELSE v_value::numeric NOT BETWEEN 0 AND 1
        END) IS NOT FALSE THEN
            RAISE EXCEPTION 'notify_max_queue_usage must be a fraction from 0 to 1, got %',
                coalesce(to_json(v_value)::text, 'NULL')
                USING ERRCODE = 'PJ014';
        END IF;
        v_value := v_value::numeric::text;
    ELSE
        -- Values are echoed as JSON strings: control characters cannot reach the log raw.
        RAISE EXCEPTION 'unknown setting % or bad value %',
            coalesce(to_json(name)::text, 'NULL'), coalesce(to_json(v_value)::text, 'NULL')
            USING HINT = 'history and tenant_fairness take on or off; '
            || 'history_retention an interval; '
            || 'max_payload_bytes a number of bytes (1024 to 1073741824); '
            || 'notify_max_queue_usage a fraction (0 to 1); job_expiry an interval',
            ERRCODE = 'PJ014';
    END IF;
    INSERT INTO app_jobs.settings AS s (name, value)
    VALUES (set_setting.name, v_value)
    ON CONFLICT ON CONSTRAINT settings_pkey DO UPDATE SET value = excluded.value;
    RETURN v_value;
END;
$$;

COMMENT ON FUNCTION app_jobs.set_setting IS
'Set history (on/off), history_retention (interval), max_payload_bytes (1024 to '
'1073741824), notify_max_queue_usage (0 to 1), job_expiry (interval) or tenant_fairness '
'(on/off); PJ014 on anything else';
