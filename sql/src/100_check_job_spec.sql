-- Why a text is not acceptable as a name (task identifier, queue name, worker id); NULL
-- when it is. A name must not contain control characters (C0, DEL, C1) or invisible
-- formatting characters (zero-width, bidirectional controls, line and paragraph
-- separators, BOM), nor begin or end with whitespace. Outside UTF8 databases only the
-- ASCII controls and spaces are known for what they are.
CREATE FUNCTION app_jobs._name_problem(p_name text) RETURNS text
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
    v_utf8 boolean := pg_catalog.getdatabaseencoding() = 'UTF8';
    v_bad text;
BEGIN
    v_bad := substring(p_name FROM CASE
        WHEN v_utf8
            THEN '[\x01-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060\u2066-\u2069\ufeff]'
        ELSE '[\x01-\x1f\x7f]'
    END);
    IF v_bad IS NOT NULL THEN
        RETURN format(
            'contains the control or invisible character U+%s at position %s',
            upper(lpad(to_hex(ascii(v_bad)), 4, '0')), strpos(p_name, v_bad)
        );
    END IF;
    IF p_name ~ (CASE
        WHEN v_utf8 THEN
            '^[ \u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]'
            || '|[ \u00a0\u1680\u2000-\u200a\u202f\u205f\u3000]$'
        ELSE '^ | $'
    END) THEN
        RETURN 'begins or ends with whitespace';
    END IF;
    RETURN NULL;
END;
$$;

COMMENT ON FUNCTION app_jobs._name_problem IS
'Why a task identifier, queue name or worker id is refused (control, invisible or '
'edge-whitespace characters); NULL when it is fine';

-- Raise a distinct SQLSTATE for each invalid field of a job or schedule.
CREATE FUNCTION app_jobs._check_job_spec(
    p_identifier text,
    p_queue_name text,
    p_job_key text,
    p_max_attempts integer
) RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
    v_problem text;
BEGIN
    IF p_identifier IS NULL OR length(p_identifier) NOT BETWEEN 1 AND 126 THEN
        RAISE EXCEPTION 'task identifier must be 1 to 126 characters, got %',
            coalesce(length(p_identifier)::text || ' characters', 'NULL')
            USING ERRCODE = 'PJ001';
    END IF;
    v_problem := app_jobs._name_problem(p_identifier);
    IF v_problem IS NOT NULL THEN
        RAISE EXCEPTION 'task identifier %', v_problem
            USING ERRCODE = 'PJ031',
            HINT = 'Names may not contain control or invisible characters, '
            || 'nor begin or end with whitespace.';
    END IF;
    IF p_queue_name IS NOT NULL AND length(p_queue_name) NOT BETWEEN 1 AND 126 THEN
        RAISE EXCEPTION 'queue name must be 1 to 126 characters, got %',
            length(p_queue_name)
            USING ERRCODE = 'PJ002';
    END IF;
    v_problem := app_jobs._name_problem(p_queue_name);
    IF v_problem IS NOT NULL THEN
        RAISE EXCEPTION 'queue name %', v_problem
            USING ERRCODE = 'PJ032',
            HINT = 'Names may not contain control or invisible characters, '
            || 'nor begin or end with whitespace.';
    END IF;
    IF p_job_key IS NOT NULL AND length(p_job_key) NOT BETWEEN 1 AND 512 THEN
        RAISE EXCEPTION 'job key must be 1 to 512 characters, got %',
            length(p_job_key)
            USING ERRCODE = 'PJ003';
    END IF;
    IF p_max_attempts IS NOT NULL AND p_max_attempts < 1 THEN
        RAISE EXCEPTION 'max_attempts must be at least 1, got %', p_max_attempts
            USING ERRCODE = 'PJ004';
    END IF;
    IF p_max_attempts > 10000 THEN
        RAISE EXCEPTION 'max_attempts must be at most 10000, got %', p_max_attempts
            USING ERRCODE = 'PJ035';
    END IF;
END;
$$;

-- Raise PJ033 when a payload is larger than the max_payload_bytes setting (its JSON
-- text, in bytes), PJ037 when it nests arrays and objects more than 256 deep (more than
-- common JSON parsers take: Python's gives up at about 1000). Payloads of up to 1 kB,
-- the least the setting allows, are not measured against it; only a payload with more
-- than 256 opening brackets (so more than 512 bytes) can be too deep.
CREATE FUNCTION app_jobs._check_payload(p_payload json) RETURNS void
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    v_text text := p_payload::text;
    v_bytes integer := octet_length(v_text);
    v_max bigint;
BEGIN
    IF v_bytes > 1024 THEN
        v_max := app_jobs.setting('max_payload_bytes')::bigint;
        IF v_bytes > v_max THEN
            RAISE EXCEPTION 'payload is % bytes, more than max_payload_bytes (%)',
                v_bytes, v_max
                USING ERRCODE = 'PJ033',
                HINT = 'Store large data elsewhere and pass a reference to it, or raise '
                || 'the limit: app_jobs.set_setting(''max_payload_bytes'', ...).';
        END IF;
    END IF;
    IF v_bytes > 512 AND length(v_text) - length(translate(v_text, '[{', '')) > 256 THEN
        -- Only the shape matters, rewritten as arrays of zeros: escapes dropped (in pairs,
        -- so quotes stay balanced), strings and numbers made 0, objects made arrays (jsonb
        -- would drop all but the last of duplicate keys, and takes neither \u0000 nor
        -- 1e999999).
        IF jsonb_path_exists(
            regexp_replace(
                translate(
                    regexp_replace(
                        regexp_replace(v_text, '\\(u[0-9a-fA-F]{4}|.)', '', 'g'),
                        '"[^"]*"', '0', 'g'
                    ),
                    '{}:', '[],'
                ),
                '-?[0-9][0-9.eE+-]*', '0', 'g'
            )::jsonb,
            'strict $.**{256} ? (@.type() == "array")'
        ) THEN
            RAISE EXCEPTION 'payload nests arrays and objects more than 256 deep'
                USING ERRCODE = 'PJ037';
        END IF;
    END IF;
END;
$$;

-- Raise PJ034 unless run_at (NULL: now) lies between 1970 and 100 years from now;
-- p_what names the argument in the message.
CREATE FUNCTION app_jobs._check_run_at(
    p_run_at timestamptz,
    p_what text DEFAULT 'run_at'
) RETURNS void
LANGUAGE plpgsql STABLE
AS $$
BEGIN
    -- (-infinity and infinity fall outside too.)
    IF p_run_at < '1970-01-01 00:00:00+00'::timestamptz
        OR p_run_at > now() + interval '100 years' THEN
        RAISE EXCEPTION '% must be between 1970-01-01 and 100 years from now, got %',
            p_what, p_run_at
            USING ERRCODE = 'PJ034';
    END IF;
END;
$$;

-- Raise PJ040 unless job_expiry (how long a claim of a worker that never registered
-- holds) is positive and at most 100 years; NULL means the default.
CREATE FUNCTION app_jobs._check_job_expiry(p_job_expiry interval) RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF p_job_expiry <= interval '0' OR p_job_expiry > interval '100 years' THEN
        RAISE EXCEPTION 'job_expiry must be positive and at most 100 years, got %',
            p_job_expiry
            USING ERRCODE = 'PJ040';
    END IF;
END;
$$;

-- Every check of one job's fields, as add_job and add_jobs apply them (max_attempts and
-- timeout with the task's defaults applied): PJ001-PJ004, PJ017, PJ022, PJ031-PJ035,
-- PJ037, PJ038.
CREATE FUNCTION app_jobs._check_job(
    p_identifier text,
    p_queue_name text,
    p_job_key text,
    p_max_attempts integer,
    p_payload json,
    p_run_at timestamptz,
    p_timeout interval,
    p_origin text
) RETURNS void
LANGUAGE plpgsql STABLE
AS $$
BEGIN
    PERFORM app_jobs._check_job_spec(p_identifier, p_queue_name, p_job_key, p_max_attempts);
    PERFORM app_jobs._check_payload(p_payload);
    PERFORM app_jobs._check_run_at(p_run_at);
    IF p_timeout <= interval '0' THEN
        RAISE EXCEPTION 'timeout must be positive, got %', p_timeout
            USING ERRCODE = 'PJ017';
    END IF;
    -- (Longer is no limit at all, and beyond what clients such as Python can represent.)
    IF p_timeout > interval '100 years' THEN
        RAISE EXCEPTION 'timeout must be at most 100 years, got %', p_timeout
            USING ERRCODE = 'PJ038';
    END IF;
    IF length(p_origin) NOT BETWEEN 1 AND 256 THEN
        RAISE EXCEPTION 'origin must be 1 to 256 characters, got %', length(p_origin)
            USING ERRCODE = 'PJ022';
    END IF;
END;
$$;
