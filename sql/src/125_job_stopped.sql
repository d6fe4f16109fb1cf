-- Everything that follows a job reaching a final state (completed, failed for good,
-- cancelled): its history row, the jobs:stopped event, its dependents (unblocked, or
-- cancelled when it did not complete) and its bundle. The caller holds the job's row
-- and its bundle's row.
CREATE FUNCTION app_jobs._job_stopped(
    p_job app_jobs.jobs,
    p_status text,
    p_worker_id text,
    p_started_at timestamptz,
    p_result jsonb DEFAULT NULL,
    p_error_data jsonb DEFAULT NULL
) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    IF app_jobs.setting('history') <> 'off' THEN
        INSERT INTO app_jobs.job_history (
            job_id, database_id, task_identifier, queue_name, key, payload, priority,
            status, attempts, max_attempts, result, last_error, error_data, worker_id,
            created_at, started_at, origin, bundle_id
        ) VALUES (
            p_job.id, p_job.database_id, p_job.task_identifier, p_job.queue_name, p_job.key,
            p_job.payload, p_job.priority, p_status, p_job.attempts, p_job.max_attempts,
            p_result, p_job.last_error, p_error_data, p_worker_id,
            p_job.created_at, p_started_at, p_job.origin, p_job.bundle_id
        );
    END IF;
    PERFORM app_jobs._notify_job_stopped(p_job, p_status, FALSE);

    IF p_status = 'completed' THEN
        UPDATE app_jobs.jobs AS j
        SET blocked_by = j.blocked_by - 1
        WHERE j.id IN (
            SELECT d.job_id FROM app_jobs.job_dependencies AS d WHERE d.depends_on = p_job.id
        );
        DELETE FROM app_jobs.job_dependencies AS d WHERE d.depends_on = p_job.id;
    ELSE
        PERFORM app_jobs._cancel_dependents(
            ARRAY(
                SELECT d.job_id FROM app_jobs.job_dependencies AS d
                WHERE d.depends_on = p_job.id
            ),
            p_job.id,
            p_status
        );
    END IF;

    IF p_job.bundle_id IS NOT NULL THEN
        PERFORM app_jobs._bundle_job_stopped(p_job.bundle_id, p_status);
    END IF;
END;
$$;

-- One jobs:stopped event, as JSON text: ids and names only, never payload (at most about
-- 2,200 bytes: names are at most 126 characters, the origin is cut to 256).
CREATE FUNCTION app_jobs._stopped_event(
    p_id bigint,
    p_task text,
    p_outcome text,
    p_will_retry boolean,
    p_bundle_id bigint,
    p_origin text
) RETURNS text
LANGUAGE sql IMMUTABLE
AS $$
    SELECT format(
        '{"id": %s, "task": %s, "outcome": %s, "will_retry": %s, "bundle_id": %s, '
        '"origin": %s}',
        p_id, to_json(p_task), to_json(p_outcome), to_json(p_will_retry),
        coalesce(p_bundle_id::text, 'null'), coalesce(to_json(left(p_origin, 256))::text, 'null')
    );
$$;

-- Tell listeners on jobs:stopped that a job stopped.
CREATE FUNCTION app_jobs._notify_job_stopped(
    p_job app_jobs.jobs,
    p_outcome text,
    p_will_retry boolean
) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
BEGIN
    PERFORM app_jobs._notify(
        'jobs:stopped',
        app_jobs._stopped_event(
            p_job.id, p_job.task_identifier, p_outcome, p_will_retry, p_job.bundle_id,
            p_job.origin
        )
    );
END;
$$;

-- Cancel the given jobs, which wait on a dependency that failed or was cancelled, and
-- every job that waits on them in turn, in a few set-based statements (a chain or a fan
-- of any size). Each records why: the stopped dependency for the given jobs, a cancelled
-- one (its lowest id) for the others. Jobs first, then bundles, then queues (the shared
-- lock order). Returns how many were cancelled.
CREATE FUNCTION app_jobs._cancel_dependents(
    p_job_ids bigint[],
    p_dependency_id bigint,
    p_dependency_status text
) RETURNS integer
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_ids bigint[];
    v_reasons bigint[];
    v_jobs app_jobs.jobs[];
    v_bundle record;
BEGIN
    IF coalesce(cardinality(p_job_ids), 0) = 0 THEN
        RETURN 0;
    END IF;
    -- Every dependency edge into the doomed set once (UNION drops an edge seen before, so
    -- a job reached by several paths is expanded once); a given job's reason is the
    -- stopped dependency (NULL here), any other's the lowest doomed job it waits on.
    WITH RECURSIVE doomed (id, reason) AS (
        SELECT g.id, NULL::bigint FROM unnest(p_job_ids) AS g (id)
        UNION
        SELECT d.job_id, d.depends_on
        FROM app_jobs.job_dependencies AS d
        INNER JOIN doomed ON d.depends_on = doomed.id
    ),

    reasons AS (
        SELECT
            dm.id,
            -- A given job (NULL reason) is cancelled by the stopped dependency.
            CASE WHEN bool_or(dm.reason IS NULL) THEN NULL ELSE min(dm.reason) END AS reason
        FROM doomed AS dm
        GROUP BY dm.id
    )

    SELECT coalesce(array_agg(r.id ORDER BY r.id), '{}'), array_agg(r.reason ORDER BY r.id)
    INTO v_ids, v_reasons
    FROM reasons AS r;
    PERFORM 1 FROM app_jobs.jobs AS j WHERE j.id = ANY(v_ids) ORDER BY j.id FOR UPDATE;
    PERFORM app_jobs._lock_bundles(ARRAY(
        SELECT j.bundle_id FROM app_jobs.jobs AS j WHERE j.id = ANY(v_ids)
    ));

    -- (Arrays, not a temporary table: a caller could have created one of that name.)
    DELETE FROM app_jobs.job_dependencies AS d WHERE d.job_id = ANY(v_ids);
    WITH gone AS (
        DELETE FROM app_jobs.jobs AS j
        WHERE j.id = ANY(v_ids)
        RETURNING j.*
    )

    SELECT coalesce(array_agg(g::app_jobs.jobs ORDER BY g.id), '{}') INTO v_jobs
    FROM gone AS g;

    IF app_jobs.setting('history') <> 'off' THEN
        INSERT INTO app_jobs.job_history (
            job_id, database_id, task_identifier, queue_name, key, payload, priority,
            status, attempts, max_attempts, last_error, error_data, created_at, origin,
            bundle_id
        )
        SELECT
            c.id, c.database_id, c.task_identifier, c.queue_name, c.key, c.payload,
            c.priority, 'cancelled', c.attempts, c.max_attempts,
            format('dependency %s %s', r.dependency_id, r.dependency_status),
            jsonb_build_object(
                'reason', 'dependency', 'dependency_id', r.dependency_id,
                'dependency_status', r.dependency_status
            ),
            c.created_at, c.origin, c.bundle_id
        FROM unnest(v_jobs) AS c
        INNER JOIN (
            SELECT
                x.id,
                coalesce(x.reason, p_dependency_id) AS dependency_id,
                CASE WHEN x.reason IS NULL THEN p_dependency_status ELSE 'cancelled' END
                    AS dependency_status
            FROM unnest(v_ids, v_reasons) AS x (id, reason)
        ) AS r ON c.id = r.id
        ORDER BY c.id;
    END IF;
    PERFORM app_jobs._notify_chunks('jobs:stopped', ARRAY(
        SELECT app_jobs._stopped_event(
            c.id, c.task_identifier, 'cancelled', FALSE, c.bundle_id, c.origin
        )
        FROM unnest(v_jobs) AS c
        ORDER BY c.id
    ));
    FOR v_bundle IN
        SELECT c.bundle_id AS id, count(*)::integer AS n
        FROM unnest(v_jobs) AS c
        WHERE c.bundle_id IS NOT NULL
        GROUP BY c.bundle_id
        ORDER BY c.bundle_id
    LOOP
        PERFORM app_jobs._bundle_job_stopped(v_bundle.id, 'cancelled', v_bundle.n);
    END LOOP;
    RETURN cardinality(v_jobs);
END;
$$;
