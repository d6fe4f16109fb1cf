-- Notifications are a latency hint, never a reason for an enqueue or an outcome to fail:
-- PostgreSQL refuses a commit (54000) once its notification queue is full, which one
-- listener that stops reading (idle in a transaction) can cause. pgjobs' own
-- notifications are skipped while the queue is used at least up to the
-- notify_max_queue_usage setting (default half full; workers poll, so nothing is lost but
-- latency; below 0.1 % nothing is ever skipped) and counted here; metrics() reports the
-- count.
CREATE SEQUENCE app_jobs.notifications_skipped;

COMMENT ON SEQUENCE app_jobs.notifications_skipped IS
'Counts pgjobs notifications skipped because the NOTIFY queue was too full';

-- Send a notification unless the NOTIFY queue is used up to notify_max_queue_usage (then
-- count it). Below 0.1 % of the queue (8 MB), where it always is while listeners keep up,
-- the setting is not even read: the common case costs one cheap function call.
CREATE FUNCTION app_jobs._notify(p_channel text, p_payload text) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_usage double precision := pg_catalog.pg_notification_queue_usage();
BEGIN
    -- (Two statements: the setting's lookup would make one expression a full query.)
    IF v_usage < 0.001 THEN
        PERFORM pg_catalog.pg_notify(p_channel, p_payload);
    ELSIF v_usage < app_jobs.setting('notify_max_queue_usage')::double precision THEN
        PERFORM pg_catalog.pg_notify(p_channel, p_payload);
    ELSE
        PERFORM pg_catalog.nextval('app_jobs.notifications_skipped');
    END IF;
END;
$$;

-- How many notifications notify() skipped since the install.
CREATE FUNCTION app_jobs._notifications_skipped_count() RETURNS bigint
LANGUAGE sql STABLE
AS $$
    SELECT CASE WHEN s.is_called THEN s.last_value ELSE 0 END
    FROM app_jobs.notifications_skipped AS s;
$$;

-- Send JSON events (each a JSON object's text) as JSON arrays, as many per notification
-- as fit well under NOTIFY's 8000-byte limit. Chunks are cut where the running total of
-- the events' byte lengths crosses a multiple of 5000 bytes, so a chunk holds less than
-- 5000 bytes plus one event; callers keep each event under 2500 bytes (names of at most
-- 126 characters, origins cut to 256 characters: at most 6 bytes each once JSON-escaped).
CREATE FUNCTION app_jobs._notify_chunks(p_channel text, p_events text[]) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    PERFORM app_jobs._notify(p_channel, c.events)
    FROM (
        SELECT '[' || string_agg(e.event, ', ' ORDER BY e.n) || ']' AS events
        FROM (
            SELECT
                x.event,
                x.n,
                sum(octet_length(x.event) + 2) OVER (ORDER BY x.n) AS running_bytes
            FROM unnest(p_events) WITH ORDINALITY AS x (event, n)
        ) AS e
        GROUP BY e.running_bytes / 5000
    ) AS c;
END;
$$;
