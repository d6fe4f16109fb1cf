-- True when nobody live holds a lock: never taken, or older than p_expiry and held by
-- a session that never registered (registered workers are judged by their heartbeat).
CREATE FUNCTION app_jobs.lock_is_free(
    p_locked_at timestamptz,
    p_locked_by text,
    p_expiry interval
) RETURNS boolean
LANGUAGE sql STABLE
AS $$
    SELECT p_locked_at IS NULL
        OR p_locked_at < now() - p_expiry
        AND NOT EXISTS (SELECT 1 FROM app_jobs.workers AS w WHERE w.id = p_locked_by);
$$;
