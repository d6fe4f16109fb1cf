-- Raise PJ005 unless a worker id was given.
CREATE FUNCTION app_jobs.check_worker_id(p_worker_id text) RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF p_worker_id IS NULL OR p_worker_id = '' THEN
        RAISE EXCEPTION 'worker_id is required'
            USING ERRCODE = 'PJ005';
    END IF;
END;
$$;
