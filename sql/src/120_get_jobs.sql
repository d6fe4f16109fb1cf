-- Claim up to batch_size available jobs for a worker, within each named queue's
-- concurrency (one at a time unless queue_settings says more) and each task's rate limit.
-- job_expiry NULL (the default) means the job_expiry setting. With the tenant_fairness
-- setting on, tenants take turns (app_jobs._fair_candidates gives the order).
CREATE FUNCTION app_jobs.get_jobs(
    worker_id text,
    task_identifiers text[] DEFAULT NULL,
    job_expiry interval DEFAULT NULL,
    batch_size integer DEFAULT 1
) RETURNS SETOF app_jobs.jobs
LANGUAGE plpgsql VOLATILE
-- JIT only slows these short queries down (and the planner's row guesses invite it).
SET jit = off
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
DECLARE
    v_now timestamptz := now();
    v_expiry interval := app_jobs._job_expiry(job_expiry);
    v_expired timestamptz;
    v_clock timestamptz := clock_timestamp();
    v_bucket record;
    v_tokens double precision;
    v_allow jsonb;
    v_fair bigint[];
BEGIN
    PERFORM app_jobs._check_worker_id(worker_id);
    PERFORM app_jobs._check_job_expiry(job_expiry);
    v_expired := v_now - v_expiry;
    IF batch_size IS NULL OR batch_size NOT BETWEEN 1 AND 10000 THEN
        RAISE EXCEPTION 'batch_size must be 1 to 10000, got %',
            coalesce(batch_size::text, 'NULL')
            USING ERRCODE = 'PJ006';
    END IF;

    -- Locks older than job_expiry whose holder never registered (no heartbeat to go
    -- by) belong to workers presumed dead (as in the original get_job, the next claim
    -- takes them over); registered workers' jobs are freed by reap_dead_workers when
    -- their heartbeat stops. One index probe finds whether there is any such lock (the
    -- oldest lock: a min() the planner always takes from jobs_locked_at_idx).
    IF (SELECT min(e.locked_at) FROM app_jobs.jobs AS e) < v_expired THEN
        -- (SKIP LOCKED: another claimer ending the same claims is not waited for.)
        PERFORM app_jobs._end_cancelled_claims(ARRAY(
            SELECT e.id FROM app_jobs.jobs AS e
            WHERE e.locked_at < v_expired AND e.cancel_requested_at IS NOT NULL
                AND app_jobs._lock_is_free(e.locked_at, e.locked_by, v_expiry)
            ORDER BY e.id
            FOR UPDATE SKIP LOCKED
        ));
        UPDATE app_jobs.jobs AS j
        SET locked_at = NULL, locked_by = NULL
        WHERE j.id IN (
            SELECT e.id FROM app_jobs.jobs AS e
            WHERE e.locked_at < v_expired AND e.attempts < e.max_attempts
                AND app_jobs._lock_is_free(e.locked_at, e.locked_by, v_expiry)
            FOR UPDATE SKIP LOCKED
        );
    END IF;

    -- Rate-limited tasks: refill each token bucket and note how many starts it allows.
    -- The rows stay locked (in task order) until commit, so claimers of a limited task
    -- take turns and the limit holds across any number of workers.
    FOR v_bucket IN
        SELECT ts.*
        FROM app_jobs.task_settings AS ts
        WHERE ts.rate_limit IS NOT NULL
            AND (task_identifiers IS NULL OR ts.task_identifier = ANY(task_identifiers))
        ORDER BY ts.task_identifier
        FOR UPDATE
    LOOP
        v_tokens := least(
            coalesce(v_bucket.rate_burst, v_bucket.rate_limit),
            coalesce(v_bucket.tokens, 0)
            + greatest(extract(EPOCH FROM v_clock - v_bucket.refilled_at), 0)
            / extract(EPOCH FROM v_bucket.rate_interval) * v_bucket.rate_limit
        );
        UPDATE app_jobs.task_settings AS ts
        SET tokens = v_tokens, refilled_at = greatest(ts.refilled_at, v_clock)
        WHERE ts.task_identifier = v_bucket.task_identifier;
        v_allow := coalesce(v_allow, '{}'::jsonb)
            || jsonb_build_object(v_bucket.task_identifier, floor(v_tokens)::integer);
    END LOOP;

    -- Tenant fairness: the candidates, in the order they are to be taken (several per
    -- tenant, so that claimers side by side, skipping each other's locks, find enough).
    IF app_jobs.setting('tenant_fairness') = 'on' THEN
        v_fair := app_jobs._fair_candidates(v_now, task_identifiers, v_allow, batch_size);
    END IF;

    IF v_fair IS NOT NULL AND v_allow IS NULL AND NOT EXISTS (SELECT 1 FROM app_jobs.job_queues) THEN
        -- The common case below, in the fair order.
        RETURN QUERY
        WITH claimed AS (
        UPDATE app_jobs.jobs AS j
        SET
            attempts = j.attempts + 1, locked_by = worker_id, locked_at = v_now,
            updated_at = v_now, progress = NULL, stage = NULL
        WHERE j.id = ANY(ARRAY(
            SELECT e.id
            FROM unnest(v_fair) WITH ORDINALITY AS f (id, turn)
            INNER JOIN app_jobs.jobs AS e ON f.id = e.id
            WHERE e.is_available AND e.run_at <= v_now AND e.queue_name IS NULL
            ORDER BY f.turn
            LIMIT batch_size
            FOR UPDATE OF e SKIP LOCKED
        ))
        RETURNING j.*
        )

        SELECT cl.* FROM claimed AS cl ORDER BY array_position(v_fair, cl.id);
        RETURN;
    END IF;

    -- The common case: no rate limit applies and no job is in a named queue (no queue has
    -- a row). Then the claim is the plain ordered SKIP LOCKED pick, of jobs without a
    -- queue only: a queued job committed after the check above is left to the next
    -- claim, which locks its queue (taking it here would skip the queue's concurrency and
    -- lock its queue row out of name order, a deadlock with add_job).
    IF v_allow IS NULL AND NOT EXISTS (SELECT 1 FROM app_jobs.job_queues) THEN
        RETURN QUERY
        WITH claimed AS (
        UPDATE app_jobs.jobs AS j
        SET
            attempts = j.attempts + 1, locked_by = worker_id, locked_at = v_now,
            updated_at = v_now, progress = NULL, stage = NULL
        -- An id array, not a join: a cached plan cannot know the batch size, and a
        -- join sized for a guess would scan the whole table.
        -- (The LIMIT comes from a lateral row, not a parameter: a cached generic plan
        -- would assume a parameter LIMIT means 10 % of the table and sort it all.)
        WHERE j.id = ANY(ARRAY(
            SELECT c.id
            FROM (SELECT batch_size AS n) AS g
            CROSS JOIN LATERAL (
                SELECT e.id
                FROM app_jobs.jobs AS e
                WHERE e.is_available
                    AND e.run_at <= v_now
                    AND e.queue_name IS NULL
                    AND (task_identifiers IS NULL OR e.task_identifier = ANY(task_identifiers))
                ORDER BY e.priority, e.run_at, e.id
                LIMIT g.n
                FOR UPDATE OF e SKIP LOCKED
            ) AS c
        ))
        RETURNING j.*
        )

        SELECT cl.* FROM claimed AS cl ORDER BY cl.priority, cl.run_at, cl.id;
        RETURN;
    END IF;

    -- Lock order, shared by every function here: job rows first, then queue rows in
    -- name order. Locking a queue row before its jobs could deadlock with add_job,
    -- which holds a job row when its trigger counts the job into the queue.
    RETURN QUERY
    WITH task_groups AS (
        -- One group for the tasks without a rate limit (up to the whole batch), one per
        -- rate-limited task with tokens left (up to its tokens), so a limited task
        -- cannot crowd the others out of a batch.
        SELECT NULL::text AS task, batch_size AS cap
        UNION ALL
        SELECT a.key, least(a.value::integer, batch_size)
        FROM jsonb_each_text(coalesce(v_allow, '{}'::jsonb)) AS a
        WHERE a.value::integer > 0
    ),

    locked AS (
        SELECT c.*
        FROM task_groups AS g
        CROSS JOIN LATERAL (
            SELECT j.id, j.queue_name, j.task_identifier, j.priority, j.run_at
            FROM app_jobs.jobs AS j
            WHERE j.is_available
                AND j.run_at <= v_now
                AND (task_identifiers IS NULL OR j.task_identifier = ANY(task_identifiers))
                AND CASE
                    WHEN g.task IS NULL THEN v_allow IS NULL OR NOT v_allow ? j.task_identifier
                    ELSE j.task_identifier = g.task
                END
                AND (
                    j.queue_name IS NULL
                    OR EXISTS (
                        SELECT 1
                        FROM app_jobs.job_queues AS q
                        WHERE q.queue_name = j.queue_name
                            AND q.running_count < app_jobs._queue_concurrency(q.queue_name)
                            -- Among the first free-slot jobs of its queue: never overtake
                            -- an earlier job whose row another session holds for a moment.
                            AND (
                                SELECT count(*)
                                FROM (
                                    SELECT 1
                                    FROM app_jobs.jobs AS e
                                    WHERE e.queue_name = j.queue_name
                                        AND e.is_available
                                        AND e.run_at <= v_now
                                        AND (e.priority, e.run_at, e.id)
                                        < (j.priority, j.run_at, j.id)
                                    LIMIT app_jobs._queue_concurrency(q.queue_name)
                                    - q.running_count
                                ) AS earlier
                            ) < app_jobs._queue_concurrency(q.queue_name) - q.running_count
                    )
                )
                AND (v_fair IS NULL OR j.id = ANY(v_fair))
            -- (With fairness off the first key is NULL, a constant the index order meets.)
            ORDER BY
                CASE WHEN v_fair IS NOT NULL THEN array_position(v_fair, j.id) END,
                j.priority, j.run_at, j.id
            LIMIT g.cap
            FOR UPDATE OF j SKIP LOCKED
        ) AS c
    ),

    candidates AS (
        SELECT l.id, l.queue_name, l.task_identifier, l.priority, l.run_at
        FROM locked AS l
        ORDER BY
            CASE WHEN v_fair IS NOT NULL THEN array_position(v_fair, l.id) END,
            l.priority, l.run_at, l.id
        LIMIT batch_size
    ),

    -- The queues that still have free slots once locked (the lock re-reads the row).
    free_queues AS (
        SELECT
            q.queue_name,
            app_jobs._queue_concurrency(q.queue_name) - q.running_count AS free_slots
        FROM app_jobs.job_queues AS q
        WHERE q.queue_name IN (SELECT c.queue_name FROM candidates AS c)
            AND q.running_count < app_jobs._queue_concurrency(q.queue_name)
        ORDER BY q.queue_name
        FOR UPDATE SKIP LOCKED
    ),

    ranked AS (
        SELECT
            c.id,
            c.queue_name,
            c.task_identifier,
            row_number() OVER (
                PARTITION BY c.queue_name ORDER BY c.priority, c.run_at, c.id
            ) AS queue_rank,
            row_number() OVER (
                PARTITION BY c.task_identifier ORDER BY c.priority, c.run_at, c.id
            ) AS task_rank
        FROM candidates AS c
    ),

    chosen AS (
        SELECT r.id, r.queue_name, r.task_identifier
        FROM ranked AS r
        LEFT JOIN free_queues AS fq ON r.queue_name = fq.queue_name
        WHERE (r.queue_name IS NULL OR r.queue_rank <= fq.free_slots)
            AND (
                v_allow IS NULL
                OR NOT v_allow ? r.task_identifier
                OR r.task_rank <= (v_allow ->> r.task_identifier)::integer
            )
    ),

    locked_queues AS (
        UPDATE app_jobs.job_queues AS q
        SET locked_by = worker_id, locked_at = v_now
        WHERE q.queue_name IN (SELECT c.queue_name FROM chosen AS c)
        RETURNING q.queue_name
    ),

    spent_tokens AS (
        UPDATE app_jobs.task_settings AS ts
        SET tokens = ts.tokens - n.started
        FROM (
            SELECT c.task_identifier, count(*) AS started
            FROM chosen AS c
            GROUP BY c.task_identifier
        ) AS n
        WHERE ts.task_identifier = n.task_identifier AND ts.rate_limit IS NOT NULL
        RETURNING ts.task_identifier
    ),

    claimed AS (
        UPDATE app_jobs.jobs AS j
        SET
            attempts = j.attempts + 1, locked_by = worker_id, locked_at = v_now,
            updated_at = v_now, progress = NULL, stage = NULL
        WHERE j.id = ANY(ARRAY(SELECT c.id FROM chosen AS c))
        RETURNING j.*
    )

    -- locked_queues and spent_tokens run to completion although nothing reads them.
    SELECT cl.*
    FROM claimed AS cl
    ORDER BY
        CASE WHEN v_fair IS NOT NULL THEN array_position(v_fair, cl.id) END,
        cl.priority, cl.run_at, cl.id;
END;
$$;

COMMENT ON FUNCTION app_jobs.get_jobs IS
'Claim up to batch_size jobs (one per named queue) for worker_id';
