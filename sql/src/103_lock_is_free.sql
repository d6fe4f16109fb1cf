-- True when nobody live holds a lock: never taken, or older than p_expiry and held by
-- a session that never registered (registered workers are judged by their heartbeat).
CREATE FUNCTION app_jobs._lock_is_free(
    p_locked_at timestamptz,
    p_locked_by text,
    p_expiry interval
) RETURNS boolean
LANGUAGE plpgsql STABLE
AS $$
BEGIN
    -- (PL/pgSQL, as every helper that queries a table: a SQL function with a subquery is
    -- not inlined, and its query is planned again in every transaction.)
    RETURN p_locked_at IS NULL
        OR p_locked_at < now() - p_expiry
        AND NOT EXISTS (SELECT 1 FROM app_jobs.workers AS w WHERE w.id = p_locked_by);
END;
$$;
