-- Register (or re-register) a worker process; it must then heartbeat every interval.
CREATE FUNCTION app_jobs.register_worker(
    worker_id text,
    host text DEFAULT NULL,
    pid integer DEFAULT NULL,
    tasks text[] DEFAULT NULL,
    heartbeat_interval interval DEFAULT '5 seconds'
) RETURNS app_jobs.workers
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
DECLARE
    v_worker app_jobs.workers;
BEGIN
    PERFORM app_jobs._check_worker_id(worker_id);
    IF length(worker_id) > 256 THEN
        RAISE EXCEPTION 'worker_id must be at most 256 characters, got %', length(worker_id)
            USING ERRCODE = 'PJ005';
    END IF;
    IF heartbeat_interval IS NULL OR heartbeat_interval <= interval '0' THEN
        RAISE EXCEPTION 'heartbeat_interval must be positive, got %',
            coalesce(heartbeat_interval::text, 'NULL')
            USING ERRCODE = 'PJ018';
    END IF;
    INSERT INTO app_jobs.workers AS w (id, host, pid, tasks, heartbeat_interval)
    VALUES (worker_id, host, pid, tasks, heartbeat_interval)
    ON CONFLICT (id) DO UPDATE SET
        host = excluded.host,
        pid = excluded.pid,
        tasks = excluded.tasks,
        heartbeat_interval = excluded.heartbeat_interval,
        last_heartbeat = now()
    RETURNING * INTO v_worker;
    RETURN v_worker;
END;
$$;

COMMENT ON FUNCTION app_jobs.register_worker IS
'Register a worker process (id, host, pid, tasks) and the interval it heartbeats at';

-- Record how new jobs wake a worker (listen, silent or poll; PJ044 otherwise); PJ019
-- when the worker is not registered.
CREATE FUNCTION app_jobs.set_worker_wakeup(worker_id text, wakeup text) RETURNS void
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
BEGIN
    PERFORM app_jobs._check_worker_id(worker_id);
    IF wakeup IS NULL OR wakeup NOT IN ('listen', 'silent', 'poll') THEN
        RAISE EXCEPTION 'wakeup must be listen, silent or poll, got %',
            coalesce(wakeup, 'NULL')
            USING ERRCODE = 'PJ044';
    END IF;
    UPDATE app_jobs.workers AS w SET wakeup = set_worker_wakeup.wakeup
    WHERE w.id = set_worker_wakeup.worker_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'worker % is not registered (presumed dead and reaped?)', worker_id
            USING ERRCODE = 'PJ019';
    END IF;
END;
$$;

COMMENT ON FUNCTION app_jobs.set_worker_wakeup IS
'How new jobs wake the worker: listen, silent (LISTEN hears nothing: polling) or poll';

-- A worker's sign of life; returns the claims it still holds and which must stop.
-- PJ019 when the worker is not registered (it was presumed dead and reaped).
CREATE FUNCTION app_jobs.worker_heartbeat(worker_id text)
RETURNS TABLE (job_id bigint, attempt integer, cancel_requested boolean)
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
BEGIN
    PERFORM app_jobs._check_worker_id(worker_id);
    UPDATE app_jobs.workers AS w SET last_heartbeat = now()
    WHERE w.id = worker_heartbeat.worker_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'worker % is not registered (presumed dead and reaped?)', worker_id
            USING ERRCODE = 'PJ019';
    END IF;
    RETURN QUERY
    SELECT j.id, j.attempts, j.cancel_requested_at IS NOT NULL
    FROM app_jobs.jobs AS j
    WHERE j.locked_by = worker_heartbeat.worker_id
    ORDER BY j.id;
END;
$$;

COMMENT ON FUNCTION app_jobs.worker_heartbeat IS
'Heartbeat: returns the jobs the worker holds and whether each was asked to cancel';

-- A worker leaving cleanly: hand back what it holds and forget it.
CREATE FUNCTION app_jobs.unregister_worker(worker_id text) RETURNS void
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
BEGIN
    PERFORM app_jobs.release_jobs(worker_id);
    DELETE FROM app_jobs.workers AS w WHERE w.id = unregister_worker.worker_id;
END;
$$;

COMMENT ON FUNCTION app_jobs.unregister_worker IS
'Release everything a stopping worker holds and remove its registration';

-- Free the jobs of workers silent for dead_for: each running job counts a failed attempt
-- (backoff from the last heartbeat), a cancel-requested one ends cancelled. Safe to run
-- from every worker at once. Each dead worker is reaped in a subtransaction of its own:
-- one that cannot be (a lock wait timing out, say) is reported with status 'error' and a
-- WARNING, stays registered for the next reap, and the others are reaped. PJ013 when
-- dead_for is under 3 heartbeat intervals.
CREATE FUNCTION app_jobs.reap_dead_workers(dead_for interval DEFAULT '20 seconds')
RETURNS TABLE (worker_id text, job_id bigint, status text)
LANGUAGE plpgsql VOLATILE
-- JIT only slows these short queries down (and the planner's row guesses invite it).
SET jit = off
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
AS $$
DECLARE
    v_longest interval;
    v_worker app_jobs.workers;
    v_job app_jobs.jobs;
    v_done app_jobs.jobs;
    v_error text;
    v_job_ids bigint[];
    v_locked bigint[];
    v_statuses text[];
BEGIN
    SELECT max(w.heartbeat_interval) INTO v_longest FROM app_jobs.workers AS w;
    IF dead_for IS NULL OR dead_for < 3 * coalesce(v_longest, interval '0')
        OR dead_for <= interval '0' THEN
        RAISE EXCEPTION 'dead_for must be positive and at least 3 heartbeat intervals, got %',
            coalesce(dead_for::text, 'NULL')
            USING ERRCODE = 'PJ013',
            DETAIL = format(
                'The longest heartbeat interval of a registered worker is %s.',
                coalesce(v_longest::text, 'none')
            );
    END IF;

    FOR v_worker IN
        SELECT * FROM app_jobs.workers AS w
        WHERE w.last_heartbeat < now() - dead_for
        ORDER BY w.id
        FOR UPDATE SKIP LOCKED
    LOOP
        v_error := format(
            'worker %s stopped heartbeating at %s (presumed dead)',
            v_worker.id, v_worker.last_heartbeat
        );
        -- (Rows are returned only once the worker's subtransaction succeeded.)
        v_job_ids := '{}';
        v_statuses := '{}';
        BEGIN
            -- Every row the loop writes, locked in the shared order (see _lock_jobs).
            v_locked := app_jobs._lock_jobs(ARRAY(
                SELECT j.id FROM app_jobs.jobs AS j WHERE j.locked_by = v_worker.id
            ));
            FOR v_job IN
                SELECT * FROM app_jobs.jobs AS j
                WHERE j.id = ANY(v_locked) AND j.locked_by = v_worker.id
                ORDER BY j.queue_name NULLS FIRST, j.id
            LOOP
                v_done := app_jobs._finish_claim(
                    v_worker.id, v_job.id, NULL, 'failed', v_error,
                    jsonb_build_object(
                        'reason', 'worker_dead', 'worker_id', v_worker.id,
                        'last_heartbeat', v_worker.last_heartbeat
                    ),
                    NULL, v_worker.last_heartbeat
                );
                v_job_ids := v_job_ids || v_job.id;
                v_statuses := v_statuses || app_jobs._claim_status(v_done, 'failed');
            END LOOP;
            UPDATE app_jobs.job_queues AS q
            SET locked_by = NULL, locked_at = NULL
            WHERE q.locked_by = v_worker.id;
            DELETE FROM app_jobs.workers AS w WHERE w.id = v_worker.id;
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'pgjobs: dead worker % could not be reaped: % (SQLSTATE %)',
                v_worker.id, sqlerrm, sqlstate;
            worker_id := v_worker.id;
            job_id := NULL;
            status := 'error';
            RETURN NEXT;
            CONTINUE;
        END;
        RETURN QUERY
        SELECT v_worker.id, r.id, r.status
        FROM unnest(v_job_ids, v_statuses) WITH ORDINALITY AS r (id, status, n)
        ORDER BY r.n;
    END LOOP;
END;
$$;

COMMENT ON FUNCTION app_jobs.reap_dead_workers IS
'Rescue the jobs of workers silent for dead_for (>= 3 heartbeat intervals)';
