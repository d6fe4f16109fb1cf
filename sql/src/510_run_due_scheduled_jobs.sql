-- Enqueue the job of every due schedule slot exactly once; safe from many workers at once.
CREATE FUNCTION app_jobs.run_due_scheduled_jobs(
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

        FOREACH v_slot IN ARRAY v_slots LOOP
            v_job := app_jobs.add_job(
                db_id := v_schedule.database_id,
                identifier := v_schedule.task_identifier,
                payload := v_schedule.payload,
                queue_name := v_schedule.queue_name,
                run_at := v_slot,
                max_attempts := v_schedule.max_attempts,
                priority := v_schedule.priority
            );
            RETURN NEXT v_job;
        END LOOP;

        UPDATE app_jobs.scheduled_jobs AS s
        SET
            last_scheduled = coalesce(v_slots[cardinality(v_slots)], s.last_scheduled),
            last_scheduled_id = coalesce(v_job.id, s.last_scheduled_id),
            next_run_at = app_jobs.spec_next_run(v_spec, as_of)
        WHERE s.id = v_schedule.id;
        v_job := NULL;
    END LOOP;
END;
$$;

COMMENT ON FUNCTION app_jobs.run_due_scheduled_jobs IS
'Scheduler tick: enqueue every due slot once (latest missed slot, or all within backfill)';
