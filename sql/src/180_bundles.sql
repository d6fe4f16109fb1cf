-- Lock bundle rows in id order: after job rows, before queue rows (the shared order).
CREATE FUNCTION app_jobs._lock_bundles(p_bundle_ids bigint[]) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    PERFORM 1 FROM app_jobs.job_bundles AS b
    WHERE b.id = ANY(p_bundle_ids)
    ORDER BY b.id
    FOR UPDATE;
END;
$$;

-- Count p_count stopped jobs of a bundle (none for a NULL status); when they were the
-- last (or the bundle is empty), stop the bundle: outcome,
-- the follow-up job (payload: bundle id, outcome, counts, the follow-up's own payload)
-- and a jobs:bundle_stopped event.
CREATE FUNCTION app_jobs._bundle_job_stopped(
    p_bundle_id bigint,
    p_status text,
    p_count integer DEFAULT 1
) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_bundle app_jobs.job_bundles;
    v_outcome text;
    v_followup app_jobs.jobs;
BEGIN
    UPDATE app_jobs.job_bundles AS b
    SET
        completed_count = b.completed_count
        + (p_status IS NOT DISTINCT FROM 'completed')::integer * p_count,
        failed_count = b.failed_count
        + (p_status IS NOT DISTINCT FROM 'failed')::integer * p_count,
        cancelled_count = b.cancelled_count
        + (p_status IS NOT DISTINCT FROM 'cancelled')::integer * p_count
    WHERE b.id = p_bundle_id AND b.stopped_at IS NULL
    RETURNING * INTO v_bundle;
    IF NOT FOUND
        OR v_bundle.completed_count + v_bundle.failed_count + v_bundle.cancelled_count
        < v_bundle.job_count THEN
        RETURN;
    END IF;

    v_outcome := CASE
        WHEN v_bundle.completed_count = v_bundle.job_count THEN 'completed' ELSE 'failed'
    END;
    IF v_bundle.followup IS NOT NULL THEN
        v_followup := app_jobs.add_job(
            db_id := v_bundle.database_id,
            identifier := v_bundle.followup ->> 'identifier',
            payload := json_build_object(
                'bundle_id', v_bundle.id,
                'bundle_type', v_bundle.bundle_type,
                'outcome', v_outcome,
                'completed', v_bundle.completed_count,
                'failed', v_bundle.failed_count,
                'cancelled', v_bundle.cancelled_count,
                'payload', v_bundle.followup -> 'payload'
            ),
            queue_name := v_bundle.followup ->> 'queue_name',
            priority := coalesce((v_bundle.followup ->> 'priority')::integer, 0),
            max_attempts := (v_bundle.followup ->> 'max_attempts')::integer,
            origin := v_bundle.origin
        );
    END IF;
    UPDATE app_jobs.job_bundles AS b
    SET outcome = v_outcome, stopped_at = now(), followup_job_id = v_followup.id
    WHERE b.id = v_bundle.id;
    PERFORM app_jobs._notify(
        'jobs:bundle_stopped',
        json_build_object(
            'id', v_bundle.id, 'bundle_type', v_bundle.bundle_type,
            'origin', v_bundle.origin, 'outcome', v_outcome,
            'followup_job_id', v_followup.id
        )::text
    );
END;
$$;

-- Create a bundle and its jobs in one go. jobs: a JSON array of job specs
-- {identifier, payload, queue_name, run_at, max_attempts, priority, timeout};
-- followup: an optional spec {identifier, payload, queue_name, priority, max_attempts}
-- for the job enqueued once every job of the bundle stopped.
CREATE FUNCTION app_jobs.add_bundle(
    bundle_type text,
    jobs jsonb,
    origin text DEFAULT NULL,
    followup jsonb DEFAULT NULL,
    db_id uuid DEFAULT nullif(current_setting('jwt.claims.database_id', TRUE), '')::uuid
) RETURNS app_jobs.job_bundles
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
DECLARE
    v_bundle app_jobs.job_bundles;
    v_bad jsonb;
    v_spec jsonb;
    v_job app_jobs.jobs;
BEGIN
    PERFORM app_jobs._check_tenant(db_id);
    IF jsonb_typeof(jobs) IS DISTINCT FROM 'array' OR jsonb_array_length(jobs) = 0 THEN
        RAISE EXCEPTION 'jobs must be a non-empty JSON array of job specs'
            USING ERRCODE = 'PJ026';
    END IF;
    SELECT e INTO v_bad FROM jsonb_array_elements(jobs) AS e
    WHERE jsonb_typeof(e) IS DISTINCT FROM 'object'
        OR jsonb_typeof(e -> 'identifier') IS DISTINCT FROM 'string'
        OR e ? 'job_key' OR e ? 'depends_on'
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'bad job spec in bundle: %', v_bad
            USING ERRCODE = 'PJ026',
            HINT = 'Each spec is an object with a string "identifier"; job_key and '
            || 'depends_on are not allowed in bundles.';
    END IF;
    IF followup IS NOT NULL
        AND (
            jsonb_typeof(followup) IS DISTINCT FROM 'object'
            OR jsonb_typeof(followup -> 'identifier') IS DISTINCT FROM 'string'
            OR length(followup ->> 'identifier') NOT BETWEEN 1 AND 126
            OR coalesce(jsonb_typeof(followup -> 'queue_name'), 'null') NOT IN ('string', 'null')
            OR length(followup ->> 'queue_name') NOT BETWEEN 1 AND 126
            OR coalesce(followup ->> 'priority', '0') !~ '^-?\d{1,9}$'
            OR coalesce(followup ->> 'max_attempts', '1') !~ '^\d{1,9}$'
            OR (followup ->> 'max_attempts')::integer < 1
        ) THEN
        RAISE EXCEPTION 'bad followup spec %', followup
            USING ERRCODE = 'PJ026',
            HINT = 'followup: {"identifier": 1-126 characters, "payload": any, '
            || '"queue_name": 1-126 characters, "priority": integer, "max_attempts": >= 1}';
    END IF;
    IF length(origin) NOT BETWEEN 1 AND 256 THEN
        RAISE EXCEPTION 'origin must be 1 to 256 characters, got %', length(origin)
            USING ERRCODE = 'PJ022';
    END IF;
    IF bundle_type IS NULL OR length(bundle_type) NOT BETWEEN 1 AND 126 THEN
        RAISE EXCEPTION 'bundle_type must be 1 to 126 characters'
            USING ERRCODE = 'PJ026';
    END IF;
    -- The follow-up must pass add_job's checks now, not when the bundle's last job
    -- finishes (that job's completion would fail): its name rules (PJ031, PJ032),
    -- max_attempts (PJ035), and its payload as enqueued, counts at their largest (PJ033,
    -- PJ037).
    IF followup IS NOT NULL THEN
        PERFORM app_jobs._check_job_spec(
            followup ->> 'identifier', followup ->> 'queue_name', NULL,
            (followup ->> 'max_attempts')::integer
        );
        PERFORM app_jobs._check_payload(json_build_object(
            'bundle_id', 9223372036854775807, 'bundle_type', bundle_type,
            'outcome', 'completed', 'completed', 2147483647, 'failed', 2147483647,
            'cancelled', 2147483647, 'payload', followup -> 'payload'
        ));
    END IF;

    INSERT INTO app_jobs.job_bundles AS b (
        database_id, bundle_type, origin, job_count, followup
    ) VALUES (db_id, bundle_type, origin, jsonb_array_length(jobs), followup)
    RETURNING * INTO v_bundle;

    FOR v_spec IN SELECT e FROM jsonb_array_elements(jobs) AS e LOOP
        v_job := app_jobs.add_job(
            db_id := db_id,
            identifier := v_spec ->> 'identifier',
            payload := coalesce((v_spec -> 'payload')::json, '{}'::json),
            queue_name := v_spec ->> 'queue_name',
            run_at := coalesce((v_spec ->> 'run_at')::timestamptz, now()),
            max_attempts := (v_spec ->> 'max_attempts')::integer,
            priority := coalesce((v_spec ->> 'priority')::integer, 0),
            timeout := (v_spec ->> 'timeout')::interval,
            origin := coalesce(v_spec ->> 'origin', add_bundle.origin)
        );
        IF v_job.id IS NULL THEN
            -- Enqueues of this task are being ignored (test helpers): one job fewer.
            UPDATE app_jobs.job_bundles AS b SET job_count = b.job_count - 1
            WHERE b.id = v_bundle.id;
            CONTINUE;
        END IF;
        UPDATE app_jobs.jobs AS j SET bundle_id = v_bundle.id WHERE j.id = v_job.id;
    END LOOP;
    -- Every job ignored (test helpers): the bundle stops at once.
    PERFORM app_jobs._bundle_job_stopped(v_bundle.id, NULL);
    SELECT * INTO v_bundle FROM app_jobs.job_bundles AS b WHERE b.id = v_bundle.id;
    RETURN v_bundle;
END;
$$;

COMMENT ON FUNCTION app_jobs.add_bundle IS
'Create a bundle of jobs atomically; its follow-up job runs once all of them stopped';

-- A bundle job that had failed for good and is given new attempts (retry_job,
-- reschedule_jobs, a key upsert) is no longer counted as failed.
CREATE FUNCTION app_jobs._tg_bundle_job_revived() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    UPDATE app_jobs.job_bundles AS b
    SET failed_count = b.failed_count - 1
    WHERE b.id = new.bundle_id AND b.stopped_at IS NULL AND b.failed_count > 0;
    RETURN NULL;
END;
$$;

CREATE TRIGGER _600_bundle_job_revived
AFTER UPDATE OF attempts, max_attempts ON app_jobs.jobs
FOR EACH ROW WHEN (
    new.bundle_id IS NOT NULL
    AND old.locked_at IS NULL AND old.attempts >= old.max_attempts
    AND new.attempts < new.max_attempts
)
EXECUTE FUNCTION app_jobs._tg_bundle_job_revived();
