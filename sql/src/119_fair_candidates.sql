-- With tenant_fairness on: the ids of up to p_n claimable jobs of each tenant that has
-- any (database_id; NULL is a tenant too) in the order a claim takes them: priority
-- first, then taking turns (each tenant's 1st job, then each tenant's 2nd, ...), then
-- the tenant with fewer running jobs, then run_at and id. Each tenant gives twice its
-- share of p_n (enough for claimers side by side that skip each other's rows; with many
-- tenants a tenant's 2nd or 3rd job is never reached). Claimable as get_jobs sees it:
-- available, due, of p_task_identifiers (NULL: any), not of a task p_allow gives no
-- token, not in a queue that is full. The rows are not locked: get_jobs locks the first
-- free ones in this order.
CREATE FUNCTION app_jobs._fair_candidates(
    p_now timestamptz,
    p_task_identifiers text[],
    p_allow jsonb,
    p_n integer
) RETURNS bigint[]
LANGUAGE plpgsql STABLE
AS $$
BEGIN
    RETURN ARRAY(
        -- The tenants with available jobs, one index probe each (a loose index scan of
        -- jobs_tenant_claim_idx: the next database_id after the previous one).
        WITH RECURSIVE tenants AS (
            (
                SELECT e.database_id
                FROM app_jobs.jobs AS e
                WHERE e.is_available AND e.database_id IS NOT NULL
                ORDER BY e.database_id
                LIMIT 1
            )
            UNION ALL
            SELECT (
                SELECT e.database_id
                FROM app_jobs.jobs AS e
                WHERE e.is_available AND e.database_id > t.database_id
                ORDER BY e.database_id
                LIMIT 1
            )
            FROM tenants AS t
            WHERE t.database_id IS NOT NULL
        ),

        share AS (
            SELECT least(p_n, 2 * p_n / greatest(count(*), 1) + 1) AS n FROM tenants
        ),

        heads AS (
            SELECT h.*
            FROM tenants AS t
            CROSS JOIN share AS s
            CROSS JOIN LATERAL (
                SELECT e.id, e.database_id, e.priority, e.run_at
                FROM app_jobs.jobs AS e
                WHERE e.database_id = t.database_id
                    AND e.is_available
                    AND e.run_at <= p_now
                    AND (p_task_identifiers IS NULL OR e.task_identifier = ANY(p_task_identifiers))
                    AND coalesce((p_allow ->> e.task_identifier)::integer, 1) > 0
                    AND (e.queue_name IS NULL OR EXISTS (
                        SELECT 1 FROM app_jobs.job_queues AS q
                        WHERE q.queue_name = e.queue_name
                            AND q.running_count < app_jobs._queue_concurrency(q.queue_name)
                    ))
                ORDER BY e.priority, e.run_at, e.id
                LIMIT s.n
            ) AS h
            WHERE t.database_id IS NOT NULL
            UNION ALL
            (
                SELECT e.id, e.database_id, e.priority, e.run_at
                FROM app_jobs.jobs AS e
                WHERE e.database_id IS NULL
                    AND e.is_available
                    AND e.run_at <= p_now
                    AND (p_task_identifiers IS NULL OR e.task_identifier = ANY(p_task_identifiers))
                    AND coalesce((p_allow ->> e.task_identifier)::integer, 1) > 0
                    AND (e.queue_name IS NULL OR EXISTS (
                        SELECT 1 FROM app_jobs.job_queues AS q
                        WHERE q.queue_name = e.queue_name
                            AND q.running_count < app_jobs._queue_concurrency(q.queue_name)
                    ))
                ORDER BY e.priority, e.run_at, e.id
                LIMIT (SELECT s.n FROM share AS s)
            )
        ),

        -- Running jobs per tenant (few: the partial index on locked_at finds them).
        running AS (
            SELECT r.database_id, count(*) AS n
            FROM app_jobs.jobs AS r
            WHERE r.locked_at IS NOT NULL
            GROUP BY r.database_id
        ),

        turns AS (
            SELECT
                h.id,
                h.priority,
                h.run_at,
                coalesce(r.n, 0) AS running,
                row_number() OVER (
                    PARTITION BY h.database_id, h.priority ORDER BY h.run_at, h.id
                ) AS turn
            FROM heads AS h
            LEFT JOIN running AS r ON h.database_id IS NOT DISTINCT FROM r.database_id
        )

        SELECT t.id FROM turns AS t
        ORDER BY t.priority, t.turn, t.running, t.run_at, t.id
    );
END;
$$;
