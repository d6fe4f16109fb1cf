-- Everything that follows a job reaching a final state (completed, failed for good,
-- cancelled): its history row, the jobs:stopped event, its dependents (unblocked, or
-- cancelled when it did not complete) and its bundle. The caller holds the job's row
-- and its bundle's row.
CREATE FUNCTION app_jobs.job_stopped(
    p_job app_jobs.jobs,
    p_status text,
    p_worker_id text,
    p_started_at timestamptz,
    p_result jsonb DEFAULT NULL,
    p_error_data jsonb DEFAULT NULL
) RETURNS void
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_dependent bigint;
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
    PERFORM app_jobs.notify_job_stopped(p_job, p_status, FALSE);

    IF p_status = 'completed' THEN
        UPDATE app_jobs.jobs AS j
        SET blocked_by = j.blocked_by - 1
        WHERE j.id IN (
            SELECT d.job_id FROM app_jobs.job_dependencies AS d WHERE d.depends_on = p_job.id
        );
        DELETE FROM app_jobs.job_dependencies AS d WHERE d.depends_on = p_job.id;
    ELSE
        FOR v_dependent IN
            SELECT d.job_id FROM app_jobs.job_dependencies AS d
            WHERE d.depends_on = p_job.id
            ORDER BY d.job_id
        LOOP
            PERFORM app_jobs.cancel_dependent(v_dependent, p_job.id, p_status);
        END LOOP;
    END IF;

    IF p_job.bundle_id IS NOT NULL THEN
        PERFORM app_jobs.bundle_job_stopped(p_job.bundle_id, p_status);
    END IF;
END;
$$;

-- Tell listeners on jobs:stopped that a job stopped: ids and names only, never payload.
CREATE FUNCTION app_jobs.notify_job_stopped(
    p_job app_jobs.jobs,
    p_outcome text,
    p_will_retry boolean
) RETURNS void
LANGUAGE sql VOLATILE
AS $$
    SELECT pg_catalog.pg_notify(
        'jobs:stopped',
        json_build_object(
            'id', p_job.id, 'task', p_job.task_identifier, 'outcome', p_outcome,
            'will_retry', p_will_retry, 'bundle_id', p_job.bundle_id,
            'origin', left(p_job.origin, 256)
        )::text
    );
$$;

-- Tell jobs:stopped listeners that a batch of jobs completed: one notification per
-- chunk of events (a JSON array, each chunk well under NOTIFY's 8,000 bytes).
CREATE FUNCTION app_jobs.notify_jobs_completed(
    p_ids bigint[],
    p_tasks text[],
    p_origins text[]
) RETURNS void
LANGUAGE sql VOLATILE
AS $$
    SELECT pg_catalog.pg_notify('jobs:stopped', c.events::text)
    FROM (
        SELECT json_agg(e.event ORDER BY e.n) AS events
        FROM (
            SELECT
                x.n,
                json_build_object(
                    'id', x.id, 'task', x.task, 'outcome', 'completed',
                    'will_retry', FALSE, 'bundle_id', NULL, 'origin', left(x.origin, 256)
                ) AS event,
                sum(octet_length(x.task) + coalesce(octet_length(left(x.origin, 256)), 0) + 120)
                    OVER (ORDER BY x.n) AS running_bytes
            FROM unnest(p_ids, p_tasks, p_origins) WITH ORDINALITY AS x (id, task, origin, n)
        ) AS e
        GROUP BY e.running_bytes::bigint / 6000
    ) AS c;
$$;

-- Cancel a job waiting on a dependency that failed or was cancelled; returns its row.
CREATE FUNCTION app_jobs.cancel_dependent(
    p_job_id bigint,
    p_dependency_id bigint,
    p_dependency_status text
) RETURNS app_jobs.jobs
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_job app_jobs.jobs;
BEGIN
    DELETE FROM app_jobs.job_dependencies AS d WHERE d.job_id = p_job_id;
    DELETE FROM app_jobs.jobs AS j WHERE j.id = p_job_id RETURNING * INTO v_job;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    v_job.last_error := format('dependency %s %s', p_dependency_id, p_dependency_status);
    PERFORM app_jobs.lock_bundles(ARRAY[v_job.bundle_id]);
    PERFORM app_jobs.job_stopped(
        v_job, 'cancelled', NULL, NULL, NULL,
        jsonb_build_object(
            'reason', 'dependency', 'dependency_id', p_dependency_id,
            'dependency_status', p_dependency_status
        )
    );
    RETURN v_job;
END;
$$;
