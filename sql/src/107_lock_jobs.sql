-- Lock job rows p_job_ids in the order every writer of pgjobs follows, so that no two
-- of them (nor add_job, which takes a queue row, and get_jobs) can deadlock: the job
-- rows by id, then their bundles by id, then their queues by name. Waits for each row,
-- or with p_skip_locked leaves out the jobs whose row, or whose queue's row, another
-- session holds (bundles are always waited for: only jobs of a bundle hold them, and
-- briefly). Returns the ids of the jobs locked, with their queue row, in id order.
CREATE FUNCTION app_jobs._lock_jobs(
    p_job_ids bigint[],
    p_skip_locked boolean DEFAULT FALSE
) RETURNS bigint[]
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_ids bigint[];
    v_bundles bigint[];
    v_queues text[];
BEGIN
    IF p_skip_locked THEN
        v_ids := ARRAY(
            SELECT j.id FROM app_jobs.jobs AS j
            WHERE j.id = ANY(p_job_ids)
            ORDER BY j.id
            FOR UPDATE SKIP LOCKED
        );
    ELSE
        v_ids := ARRAY(
            SELECT j.id FROM app_jobs.jobs AS j
            WHERE j.id = ANY(p_job_ids)
            ORDER BY j.id
            FOR UPDATE
        );
    END IF;
    SELECT
        array_agg(DISTINCT j.bundle_id) FILTER (WHERE j.bundle_id IS NOT NULL),
        array_agg(DISTINCT j.queue_name) FILTER (WHERE j.queue_name IS NOT NULL)
    INTO v_bundles, v_queues
    FROM app_jobs.jobs AS j
    WHERE j.id = ANY(v_ids);
    IF v_bundles IS NOT NULL THEN
        PERFORM app_jobs._lock_bundles(v_bundles);
    END IF;
    IF v_queues IS NULL THEN
        RETURN v_ids;
    END IF;
    IF NOT p_skip_locked THEN
        PERFORM 1 FROM app_jobs.job_queues AS q
        WHERE q.queue_name = ANY(v_queues)
        ORDER BY q.queue_name
        FOR UPDATE;
        RETURN v_ids;
    END IF;
    -- A queue row an open enqueue transaction holds (it counts its job in until it
    -- commits) leaves that queue's jobs out, rather than making the caller wait.
    v_queues := ARRAY(
        SELECT q.queue_name FROM app_jobs.job_queues AS q
        WHERE q.queue_name = ANY(v_queues)
        ORDER BY q.queue_name
        FOR UPDATE SKIP LOCKED
    );
    RETURN ARRAY(
        SELECT j.id FROM app_jobs.jobs AS j
        WHERE j.id = ANY(v_ids) AND (j.queue_name IS NULL OR j.queue_name = ANY(v_queues))
        ORDER BY j.id
    );
END;
$$;
