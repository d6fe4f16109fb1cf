-- Raise PJ005 unless a worker id of 1 to 256 characters was given, PJ036 when it is not
-- a clean name (see name_problem).
CREATE FUNCTION app_jobs._check_worker_id(p_worker_id text) RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
    v_problem text;
BEGIN
    IF p_worker_id IS NULL OR p_worker_id = '' THEN
        RAISE EXCEPTION 'worker_id is required'
            USING ERRCODE = 'PJ005';
    END IF;
    IF length(p_worker_id) > 256 THEN
        RAISE EXCEPTION 'worker_id must be at most 256 characters, got %',
            length(p_worker_id)
            USING ERRCODE = 'PJ005';
    END IF;
    v_problem := app_jobs._name_problem(p_worker_id);
    IF v_problem IS NOT NULL THEN
        RAISE EXCEPTION 'worker_id %', v_problem
            USING ERRCODE = 'PJ036',
            HINT = 'Names may not contain control or invisible characters, '
            || 'nor begin or end with whitespace.';
    END IF;
END;
$$;
