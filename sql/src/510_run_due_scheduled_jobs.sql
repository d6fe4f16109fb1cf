-- Enqueue the job of every due schedule slot exactly once; safe from many workers at once.
-- One schedule that fails never stops the others: each runs in a subtransaction of its
-- own, and its error is kept on its row (last_error, last_error_at). A schedule whose
-- schedule_info no longer parses stops (next_run_at NULL) until it is rewritten; a slot
-- whose job add_job refuses is skipped. A paused schedule is skipped (paused_at).
CREATE FUNCTION app_jobs.run_due_scheduled_jobs(
    as_of timestamptz DEFAULT now()
) RETURNS SETOF app_jobs.jobs
LANGUAGE plpgsql VOLATILE
-- JIT only slows these short queries down (and the planner's row guesses invite it).
SET jit = off
SECURITY DEFINER SET search_path = pg_catalog, app_jobs, pg_temp
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
    v_failed bigint[] := '{}';
BEGIN
    -- An infinite as_of would never run out of slots.
    PERFORM app_jobs._check_run_at(as_of, 'as_of');
    -- A schedule another session is ticking is skipped: that session runs its slots,
    -- and moves next_run_at past them in the same transaction as the jobs.
    FOR v_schedule IN
        SELECT * FROM app_jobs.scheduled_jobs AS s
        WHERE s.next_run_at <= as_of AND s.paused_at IS NULL
        ORDER BY s.next_run_at, s.id
        FOR UPDATE SKIP LOCKED
    LOOP
        BEGIN
            -- Parse the schedule once; every slot below is computed from the parsed form.
            v_spec := app_jobs._schedule_spec(v_schedule.schedule_info);
            v_backfill := (v_spec ->> 'backfill')::interval;
            v_slot := v_schedule.next_run_at;
            IF v_backfill IS NULL THEN
                -- Only the latest missed slot; start looking an hour back when far behind.
                v_next := app_jobs._spec_next_run(v_spec, as_of - interval '1 hour');
                IF v_next > v_slot AND v_next <= as_of THEN
                    v_slot := v_next;
                END IF;
                LOOP
                    v_next := app_jobs._spec_next_run(v_spec, v_slot);
                    EXIT WHEN v_next IS NULL OR v_next > as_of;
                    v_slot := v_next;
                END LOOP;
                v_slots := ARRAY[v_slot];
            ELSE
                -- Every missed slot within the backfill window.
                IF v_slot < as_of - v_backfill THEN
                    v_slot := app_jobs._spec_next_run(
                        v_spec, as_of - v_backfill - interval '1 microsecond'
                    );
                END IF;
                v_slots := '{}';
                WHILE v_slot IS NOT NULL AND v_slot <= as_of LOOP
                    v_slots := v_slots || v_slot;
                    v_slot := app_jobs._spec_next_run(v_spec, v_slot);
                END LOOP;
            END IF;

            UPDATE app_jobs.scheduled_jobs AS s
            SET
                last_scheduled = coalesce(v_slots[cardinality(v_slots)], s.last_scheduled),
                next_run_at = app_jobs._spec_next_run(v_spec, as_of)
            WHERE s.id = v_schedule.id;
        EXCEPTION WHEN OTHERS THEN
            -- (Variables are not rolled back with the subtransaction: nothing of this
            -- schedule reached the arrays below.)
            UPDATE app_jobs.scheduled_jobs AS s
            SET
                next_run_at = NULL,
                last_error = format('%s: %s (the schedule stopped)', sqlstate, sqlerrm),
                last_error_at = now()
            WHERE s.id = v_schedule.id;
            v_failed := v_failed || v_schedule.id;
            CONTINUE;
        END;
        v_due_schedules := v_due_schedules
            || array_fill(v_schedule.id, ARRAY[cardinality(v_slots)]);
        v_due_slots := v_due_slots || v_slots;
    END LOOP;

    -- Enqueue in queue-name order: each job counts into its queue's row, and taking
    -- queue rows in name order is what keeps this tick from deadlocking with add_job.
    FOR v_due IN
        SELECT s.*, d.slot
        FROM unnest(v_due_schedules, v_due_slots) WITH ORDINALITY AS d (schedule_id, slot, n)
        INNER JOIN app_jobs.scheduled_jobs AS s ON d.schedule_id = s.id
        ORDER BY s.queue_name NULLS FIRST, d.n
    LOOP
        BEGIN
            v_job := app_jobs.add_job(
                db_id := v_due.database_id,
                identifier := v_due.task_identifier,
                payload := v_due.payload,
                queue_name := v_due.queue_name,
                run_at := v_due.slot,
                max_attempts := v_due.max_attempts,
                priority := v_due.priority
            );
        EXCEPTION WHEN OTHERS THEN
            UPDATE app_jobs.scheduled_jobs AS s
            SET
                last_error = format(
                    '%s: %s (the slot of %s was skipped)', sqlstate, sqlerrm, v_due.slot
                ),
                last_error_at = now()
            WHERE s.id = v_due.id;
            v_failed := v_failed || v_due.id;
            CONTINUE;
        END;
        v_job_schedules := v_job_schedules || v_due.id;
        v_job_ids := v_job_ids || v_job.id;
        RETURN NEXT v_job;
    END LOOP;

    -- Each schedule remembers the job of its latest slot; one that enqueued without a
    -- failure this time has no error any more.
    UPDATE app_jobs.scheduled_jobs AS s
    SET
        last_scheduled_id = latest.job_id,
        last_error = CASE WHEN s.id = ANY(v_failed) THEN s.last_error END,
        last_error_at = CASE WHEN s.id = ANY(v_failed) THEN s.last_error_at END
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
