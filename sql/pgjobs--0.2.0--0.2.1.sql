-- pgjobs 0.2.0 -> 0.2.1: one lock order everywhere (job rows, then queue rows by name),
-- which removes the deadlocks between add_job, get_jobs and batched outcomes;
-- finish_jobs for a worker's batch; queue counts kept by statement-level triggers.

DROP TRIGGER _500_increase_job_queue_count ON app_jobs.jobs;
DROP TRIGGER _500_decrease_job_queue_count ON app_jobs.jobs;

-- sql/src/210_tg_job_queue_count.sql (the changed parts)
-- Count a statement's inserted jobs into their named queues, in queue-name order.
CREATE OR REPLACE FUNCTION app_jobs.tg_increase_job_queue_count() RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    v_queue record;
BEGIN
    FOR v_queue IN
        SELECT n.queue_name, count(*)::integer AS jobs
        FROM new_jobs AS n
        WHERE n.queue_name IS NOT NULL
        GROUP BY n.queue_name
        ORDER BY n.queue_name
    LOOP
        PERFORM app_jobs.change_job_queue_count(v_queue.queue_name, v_queue.jobs);
    END LOOP;
    RETURN NULL;
END;
$$;

-- Count a statement's deleted jobs out of their named queues, in queue-name order.
CREATE OR REPLACE FUNCTION app_jobs.tg_decrease_job_queue_count() RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    v_queue record;
BEGIN
    FOR v_queue IN
        SELECT o.queue_name, count(*)::integer AS jobs
        FROM old_jobs AS o
        WHERE o.queue_name IS NOT NULL
        GROUP BY o.queue_name
        ORDER BY o.queue_name
    LOOP
        PERFORM app_jobs.change_job_queue_count(v_queue.queue_name, -v_queue.jobs);
    END LOOP;
    RETURN NULL;
END;
$$;

-- Statement-level, so a statement touching many queues locks their rows in name order
-- (as every other path does) and two such statements cannot deadlock on job_queues.
CREATE TRIGGER _500_increase_job_queue_count
AFTER INSERT ON app_jobs.jobs
REFERENCING NEW TABLE AS new_jobs
FOR EACH STATEMENT EXECUTE FUNCTION app_jobs.tg_increase_job_queue_count();

CREATE TRIGGER _500_decrease_job_queue_count
AFTER DELETE ON app_jobs.jobs
REFERENCING OLD TABLE AS old_jobs
FOR EACH STATEMENT EXECUTE FUNCTION app_jobs.tg_decrease_job_queue_count();

-- sql/src/120_get_jobs.sql
-- Claim up to batch_size available jobs for a worker, at most one per named queue.
CREATE OR REPLACE FUNCTION app_jobs.get_jobs(
    worker_id text,
    task_identifiers text[] DEFAULT NULL,
    job_expiry interval DEFAULT '4 hours',
    batch_size integer DEFAULT 1
) RETURNS SETOF app_jobs.jobs
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_now timestamptz := now();
    v_expired timestamptz := now() - coalesce(job_expiry, interval '4 hours');
BEGIN
    PERFORM app_jobs.check_worker_id(worker_id);
    IF batch_size IS NULL OR batch_size NOT BETWEEN 1 AND 10000 THEN
        RAISE EXCEPTION 'batch_size must be 1 to 10000, got %',
            coalesce(batch_size::text, 'NULL')
            USING ERRCODE = 'PJ006';
    END IF;

    -- Locks older than job_expiry belong to workers presumed dead: free them.
    UPDATE app_jobs.jobs AS j
    SET locked_at = NULL, locked_by = NULL
    WHERE j.id IN (
        SELECT e.id FROM app_jobs.jobs AS e
        WHERE e.locked_at < v_expired AND e.attempts < e.max_attempts
        FOR UPDATE SKIP LOCKED
    );

    -- Lock order, shared by every function here: job rows first, then queue rows in
    -- name order. Locking a queue row before its jobs could deadlock with add_job,
    -- which holds a job row when its trigger counts the job into the queue.
    RETURN QUERY
    WITH candidates AS (
        SELECT j.id, j.queue_name, j.priority, j.run_at
        FROM app_jobs.jobs AS j
        WHERE j.is_available
            AND j.run_at <= v_now
            AND (task_identifiers IS NULL OR j.task_identifier = ANY(task_identifiers))
            AND (
                j.queue_name IS NULL
                OR EXISTS (
                    SELECT 1 FROM app_jobs.job_queues AS q
                    WHERE q.queue_name = j.queue_name
                        AND (q.locked_at IS NULL OR q.locked_at < v_expired)
                )
                -- Only the head of a named queue: never overtake an earlier job
                -- whose row another session happens to hold for a moment.
                AND NOT EXISTS (
                    SELECT 1 FROM app_jobs.jobs AS e
                    WHERE e.queue_name = j.queue_name
                        AND e.is_available
                        AND e.run_at <= v_now
                        AND (e.priority, e.run_at, e.id) < (j.priority, j.run_at, j.id)
                )
            )
        ORDER BY j.priority, j.run_at, j.id
        LIMIT batch_size
        FOR UPDATE OF j SKIP LOCKED
    ),

    first_per_queue AS (
        SELECT DISTINCT ON (c.queue_name) c.id, c.queue_name
        FROM candidates AS c
        WHERE c.queue_name IS NOT NULL
        ORDER BY c.queue_name, c.priority, c.run_at, c.id
    ),

    -- The queues still free once locked (the lock re-reads the newest row version).
    free_queues AS (
        SELECT q.queue_name
        FROM app_jobs.job_queues AS q
        WHERE q.queue_name IN (SELECT f.queue_name FROM first_per_queue AS f)
            AND (q.locked_at IS NULL OR q.locked_at < v_expired)
        ORDER BY q.queue_name
        FOR UPDATE SKIP LOCKED
    ),

    chosen AS (
        SELECT c.id, c.queue_name FROM candidates AS c WHERE c.queue_name IS NULL
        UNION ALL
        SELECT f.id, f.queue_name
        FROM first_per_queue AS f
        INNER JOIN free_queues AS fq ON f.queue_name = fq.queue_name
    ),

    locked_queues AS (
        UPDATE app_jobs.job_queues AS q
        SET locked_by = worker_id, locked_at = v_now
        FROM free_queues AS fq
        WHERE q.queue_name = fq.queue_name
        RETURNING q.queue_name
    ),

    claimed AS (
        UPDATE app_jobs.jobs AS j
        SET attempts = j.attempts + 1, locked_by = worker_id, locked_at = v_now
        FROM chosen AS c
        WHERE j.id = c.id
        RETURNING j.*
    )

    -- locked_queues runs to completion although nothing reads it.
    SELECT cl.*
    FROM claimed AS cl
    ORDER BY cl.priority, cl.run_at, cl.id;
END;
$$;

COMMENT ON FUNCTION app_jobs.get_jobs IS
'Claim up to batch_size jobs (one per named queue) for worker_id';

-- sql/src/132_finish_jobs.sql
-- Record a worker's batch of outcomes in one transaction: a NULL error completes the job,
-- any other fails it. Returns the jobs the worker still held, as complete_job/fail_job do.
CREATE FUNCTION app_jobs.finish_jobs(
    worker_id text,
    job_ids bigint[],
    error_messages text[]
) RETURNS SETOF app_jobs.jobs
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_outcome record;
    v_job app_jobs.jobs;
BEGIN
    PERFORM app_jobs.check_worker_id(worker_id);
    IF cardinality(job_ids) IS DISTINCT FROM cardinality(error_messages) THEN
        RAISE EXCEPTION 'job_ids and error_messages must have the same length (% and %)',
            coalesce(cardinality(job_ids)::text, 'NULL'),
            coalesce(cardinality(error_messages)::text, 'NULL')
            USING ERRCODE = 'PJ012';
    END IF;

    -- Lock order shared with get_jobs and add_job: every job row first, then queue
    -- rows in name order, so a batch cannot deadlock with either.
    PERFORM 1
    FROM app_jobs.jobs AS j
    WHERE j.id = ANY(job_ids) AND j.locked_by = finish_jobs.worker_id
    ORDER BY j.id
    FOR UPDATE;

    FOR v_outcome IN
        SELECT o.job_id, o.error_message
        FROM unnest(job_ids, error_messages) AS o (job_id, error_message)
        INNER JOIN app_jobs.jobs AS j ON o.job_id = j.id
        WHERE j.locked_by = finish_jobs.worker_id
        ORDER BY j.queue_name NULLS FIRST, j.id
    LOOP
        IF v_outcome.error_message IS NULL THEN
            v_job := app_jobs.complete_job(worker_id, v_outcome.job_id);
        ELSE
            v_job := app_jobs.fail_job(worker_id, v_outcome.job_id, v_outcome.error_message);
        END IF;
        -- A job listed twice is finished once.
        IF v_job.id IS NOT NULL THEN
            RETURN NEXT v_job;
        END IF;
    END LOOP;
    RETURN;
END;
$$;

COMMENT ON FUNCTION app_jobs.finish_jobs IS
'Worker batch: complete (NULL error) or fail each listed job the worker still holds';

-- sql/src/510_run_due_scheduled_jobs.sql
-- Enqueue the job of every due schedule slot exactly once; safe from many workers at once.
CREATE OR REPLACE FUNCTION app_jobs.run_due_scheduled_jobs(
    as_of timestamptz DEFAULT now()
) RETURNS SETOF app_jobs.jobs
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    v_schedule app_jobs.scheduled_jobs;
    v_spec jsonb;
    v_backfill interval;
    v_slots timestamptz[];
    v_slot timestamptz;
    v_next timestamptz;
    v_job app_jobs.jobs;
    v_due_schedules bigint[] := '{}';
    v_due_slots timestamptz[] := '{}';
    v_job_schedules bigint[] := '{}';
    v_job_ids bigint[] := '{}';
    v_due record;
BEGIN
    -- A schedule another session is ticking is skipped: that session runs its slots,
    -- and moves next_run_at past them in the same transaction as the jobs.
    FOR v_schedule IN
        SELECT * FROM app_jobs.scheduled_jobs AS s
        WHERE s.next_run_at <= as_of
        ORDER BY s.next_run_at, s.id
        FOR UPDATE SKIP LOCKED
    LOOP
        -- Parse the schedule once; every slot below is computed from the parsed form.
        v_spec := app_jobs.schedule_spec(v_schedule.schedule_info);
        v_backfill := (v_spec ->> 'backfill')::interval;
        v_slot := v_schedule.next_run_at;
        IF v_backfill IS NULL THEN
            -- Only the latest missed slot; start looking an hour back when far behind.
            v_next := app_jobs.spec_next_run(v_spec, as_of - interval '1 hour');
            IF v_next > v_slot AND v_next <= as_of THEN
                v_slot := v_next;
            END IF;
            LOOP
                v_next := app_jobs.spec_next_run(v_spec, v_slot);
                EXIT WHEN v_next IS NULL OR v_next > as_of;
                v_slot := v_next;
            END LOOP;
            v_slots := ARRAY[v_slot];
        ELSE
            -- Every missed slot within the backfill window.
            IF v_slot < as_of - v_backfill THEN
                v_slot := app_jobs.spec_next_run(
                    v_spec, as_of - v_backfill - interval '1 microsecond'
                );
            END IF;
            v_slots := '{}';
            WHILE v_slot IS NOT NULL AND v_slot <= as_of LOOP
                v_slots := v_slots || v_slot;
                v_slot := app_jobs.spec_next_run(v_spec, v_slot);
            END LOOP;
        END IF;

        v_due_schedules := v_due_schedules || array_fill(v_schedule.id, ARRAY[cardinality(v_slots)]);
        v_due_slots := v_due_slots || v_slots;

        UPDATE app_jobs.scheduled_jobs AS s
        SET
            last_scheduled = coalesce(v_slots[cardinality(v_slots)], s.last_scheduled),
            next_run_at = app_jobs.spec_next_run(v_spec, as_of)
        WHERE s.id = v_schedule.id;
    END LOOP;

    -- Enqueue in queue-name order: each job counts into its queue's row, and taking
    -- queue rows in name order is what keeps this tick from deadlocking with add_job.
    FOR v_due IN
        SELECT s.*, d.slot
        FROM unnest(v_due_schedules, v_due_slots) WITH ORDINALITY AS d (schedule_id, slot, n)
        INNER JOIN app_jobs.scheduled_jobs AS s ON d.schedule_id = s.id
        ORDER BY s.queue_name NULLS FIRST, d.n
    LOOP
        v_job := app_jobs.add_job(
            db_id := v_due.database_id,
            identifier := v_due.task_identifier,
            payload := v_due.payload,
            queue_name := v_due.queue_name,
            run_at := v_due.slot,
            max_attempts := v_due.max_attempts,
            priority := v_due.priority
        );
        v_job_schedules := v_job_schedules || v_due.id;
        v_job_ids := v_job_ids || v_job.id;
        RETURN NEXT v_job;
    END LOOP;

    -- Each schedule remembers the job of its latest slot.
    UPDATE app_jobs.scheduled_jobs AS s
    SET last_scheduled_id = latest.job_id
    FROM (
        SELECT DISTINCT ON (e.schedule_id) e.schedule_id, e.job_id
        FROM unnest(v_job_schedules, v_job_ids) WITH ORDINALITY AS e (schedule_id, job_id, n)
        ORDER BY e.schedule_id, e.n DESC
    ) AS latest
    WHERE s.id = latest.schedule_id;
END;
$$;

COMMENT ON FUNCTION app_jobs.run_due_scheduled_jobs IS
'Scheduler tick: enqueue every due slot once (latest missed slot, or all within backfill)';

-- The version of the app_jobs objects, for installs without CREATE EXTENSION.
CREATE OR REPLACE FUNCTION app_jobs.pgjobs_version() RETURNS text
LANGUAGE sql IMMUTABLE
AS $$ SELECT '0.2.1'::text $$;
