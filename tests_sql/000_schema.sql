-- Schema: extension, tables (jobs, queues, schedules, workers, job_history, settings, job_dependencies, job_bundles, task_settings, queue_settings), columns, keys, claim index, functions (signatures, parameter names, return types), job_status view, triggers, pg_dump config.
BEGIN;
\ir setup.psql
SELECT plan(324);

SELECT has_extension('pgjobs', 'extension pgjobs is installed');
SELECT has_schema('app_jobs', 'schema app_jobs exists');
SELECT set_eq(
    $$SELECT relname::text FROM pg_class
      WHERE relnamespace = 'app_jobs'::regnamespace AND relkind IN ('r', 'p')
          AND NOT relispartition$$,
    ARRAY[
        'jobs', 'job_queues', 'scheduled_jobs', 'workers', 'job_history', 'settings',
        'job_dependencies', 'job_bundles', 'task_settings', 'queue_settings'
    ],
    'app_jobs holds exactly the ten tables (partitions aside)'
);
SELECT is_empty(
    $$SELECT c.oid::regclass FROM pg_class AS c
      WHERE c.relnamespace = 'app_jobs'::regnamespace AND c.relispartition AND c.relkind = 'r'
          AND NOT (c.relname = 'job_history_default' OR c.relname ~ '^job_history_p[0-9]{8}$'
              AND (SELECT i.inhparent FROM pg_inherits AS i WHERE i.inhrelid = c.oid)
              = 'app_jobs.job_history'::regclass)$$,
    'the only partitions are job_history''s: job_history_default and day partitions'
);
SELECT has_view('app_jobs', 'job_status', 'view app_jobs.job_status exists');
SELECT views_are(
    'app_jobs', ARRAY['job_status', 'queue_stats'], 'app_jobs has exactly the job_status and queue_stats views'
);

-- Columns and their types, table by table.
SELECT col_type_is('app_jobs', t, c, ty, format('%s.%s is %s', t, c, ty))
FROM (VALUES
    ('jobs', 'id', 'bigint'),
    ('jobs', 'database_id', 'uuid'),
    ('jobs', 'queue_name', 'text'),
    ('jobs', 'task_identifier', 'text'),
    ('jobs', 'payload', 'json'),
    ('jobs', 'priority', 'integer'),
    ('jobs', 'run_at', 'timestamp with time zone'),
    ('jobs', 'attempts', 'integer'),
    ('jobs', 'max_attempts', 'integer'),
    ('jobs', 'key', 'text'),
    ('jobs', 'last_error', 'text'),
    ('jobs', 'locked_at', 'timestamp with time zone'),
    ('jobs', 'locked_by', 'text'),
    ('jobs', 'created_at', 'timestamp with time zone'),
    ('jobs', 'updated_at', 'timestamp with time zone'),
    ('jobs', 'is_available', 'boolean'),
    ('jobs', 'progress', 'integer'),
    ('jobs', 'stage', 'text'),
    ('jobs', 'cancel_requested_at', 'timestamp with time zone'),
    ('jobs', 'timeout', 'interval'),
    ('jobs', 'origin', 'text'),
    ('jobs', 'bundle_id', 'bigint'),
    ('jobs', 'blocked_by', 'integer'),
    ('job_queues', 'queue_name', 'text'),
    ('job_queues', 'job_count', 'integer'),
    ('job_queues', 'locked_at', 'timestamp with time zone'),
    ('job_queues', 'locked_by', 'text'),
    ('job_queues', 'running_count', 'integer'),
    ('scheduled_jobs', 'id', 'bigint'),
    ('scheduled_jobs', 'database_id', 'uuid'),
    ('scheduled_jobs', 'queue_name', 'text'),
    ('scheduled_jobs', 'task_identifier', 'text'),
    ('scheduled_jobs', 'payload', 'json'),
    ('scheduled_jobs', 'priority', 'integer'),
    ('scheduled_jobs', 'max_attempts', 'integer'),
    ('scheduled_jobs', 'key', 'text'),
    ('scheduled_jobs', 'locked_at', 'timestamp with time zone'),
    ('scheduled_jobs', 'locked_by', 'text'),
    ('scheduled_jobs', 'schedule_info', 'json'),
    ('scheduled_jobs', 'last_scheduled', 'timestamp with time zone'),
    ('scheduled_jobs', 'last_scheduled_id', 'bigint'),
    ('scheduled_jobs', 'created_at', 'timestamp with time zone'),
    ('scheduled_jobs', 'updated_at', 'timestamp with time zone'),
    ('scheduled_jobs', 'last_error', 'text'),
    ('scheduled_jobs', 'last_error_at', 'timestamp with time zone'),
    ('scheduled_jobs', 'paused_at', 'timestamp with time zone'),
    ('workers', 'id', 'text'),
    ('workers', 'host', 'text'),
    ('workers', 'pid', 'integer'),
    ('workers', 'tasks', 'text[]'),
    ('workers', 'heartbeat_interval', 'interval'),
    ('workers', 'started_at', 'timestamp with time zone'),
    ('workers', 'last_heartbeat', 'timestamp with time zone'),
    ('workers', 'wakeup', 'text'),
    ('job_history', 'id', 'bigint'),
    ('job_history', 'job_id', 'bigint'),
    ('job_history', 'database_id', 'uuid'),
    ('job_history', 'task_identifier', 'text'),
    ('job_history', 'queue_name', 'text'),
    ('job_history', 'key', 'text'),
    ('job_history', 'payload', 'json'),
    ('job_history', 'priority', 'integer'),
    ('job_history', 'status', 'text'),
    ('job_history', 'attempts', 'integer'),
    ('job_history', 'max_attempts', 'integer'),
    ('job_history', 'result', 'jsonb'),
    ('job_history', 'last_error', 'text'),
    ('job_history', 'error_data', 'jsonb'),
    ('job_history', 'worker_id', 'text'),
    ('job_history', 'created_at', 'timestamp with time zone'),
    ('job_history', 'started_at', 'timestamp with time zone'),
    ('job_history', 'finished_at', 'timestamp with time zone'),
    ('job_history', 'origin', 'text'),
    ('job_history', 'bundle_id', 'bigint'),
    ('job_dependencies', 'job_id', 'bigint'),
    ('job_dependencies', 'depends_on', 'bigint'),
    ('job_bundles', 'id', 'bigint'),
    ('job_bundles', 'database_id', 'uuid'),
    ('job_bundles', 'bundle_type', 'text'),
    ('job_bundles', 'origin', 'text'),
    ('job_bundles', 'job_count', 'integer'),
    ('job_bundles', 'completed_count', 'integer'),
    ('job_bundles', 'failed_count', 'integer'),
    ('job_bundles', 'cancelled_count', 'integer'),
    ('job_bundles', 'followup', 'jsonb'),
    ('job_bundles', 'followup_job_id', 'bigint'),
    ('job_bundles', 'outcome', 'text'),
    ('job_bundles', 'created_at', 'timestamp with time zone'),
    ('job_bundles', 'stopped_at', 'timestamp with time zone'),
    ('task_settings', 'task_identifier', 'text'),
    ('task_settings', 'retry_kind', 'text'),
    ('task_settings', 'retry_base', 'interval'),
    ('task_settings', 'retry_cap', 'interval'),
    ('task_settings', 'retry_jitter', 'double precision'),
    ('task_settings', 'retry_delays', 'interval[]'),
    ('task_settings', 'max_attempts', 'integer'),
    ('task_settings', 'timeout', 'interval'),
    ('task_settings', 'rate_limit', 'integer'),
    ('task_settings', 'rate_interval', 'interval'),
    ('task_settings', 'rate_burst', 'integer'),
    ('task_settings', 'tokens', 'double precision'),
    ('task_settings', 'refilled_at', 'timestamp with time zone'),
    ('queue_settings', 'queue_name', 'text'),
    ('queue_settings', 'max_concurrency', 'integer'),
    ('settings', 'name', 'text'),
    ('settings', 'value', 'text')
) AS v (t, c, ty);

-- The tables hold exactly these columns (a column added without a test fails here).
SELECT columns_are('app_jobs', 'jobs', ARRAY[
    'id', 'database_id', 'queue_name', 'task_identifier', 'payload', 'priority', 'run_at',
    'attempts', 'max_attempts', 'key', 'last_error', 'locked_at', 'locked_by', 'created_at',
    'updated_at', 'progress', 'stage', 'cancel_requested_at', 'timeout', 'origin',
    'bundle_id', 'blocked_by', 'is_available'
], 'jobs has exactly its columns');
SELECT is(
    (SELECT attname::text FROM pg_attribute
     WHERE attrelid = 'app_jobs.jobs'::regclass AND attnum > 0 AND NOT attisdropped
     ORDER BY attnum DESC LIMIT 1),
    'is_available',
    'is_available is the last column of jobs (SELECT * / RETURNING * order)'
);
SELECT columns_are('app_jobs', 'job_queues', ARRAY[
    'queue_name', 'job_count', 'locked_at', 'locked_by', 'running_count'
], 'job_queues has exactly its columns');
SELECT columns_are('app_jobs', 'scheduled_jobs', ARRAY[
    'id', 'database_id', 'queue_name', 'task_identifier', 'payload', 'priority',
    'max_attempts', 'key', 'locked_at', 'locked_by', 'schedule_info', 'last_scheduled',
    'last_scheduled_id', 'created_at', 'updated_at', 'next_run_at', 'last_error',
    'last_error_at', 'paused_at'
], 'scheduled_jobs has exactly its columns');
SELECT columns_are('app_jobs', 'job_dependencies', ARRAY['job_id', 'depends_on'],
    'job_dependencies has exactly its columns');
SELECT columns_are('app_jobs', 'job_bundles', ARRAY[
    'id', 'database_id', 'bundle_type', 'origin', 'job_count', 'completed_count',
    'failed_count', 'cancelled_count', 'followup', 'followup_job_id', 'outcome',
    'created_at', 'stopped_at'
], 'job_bundles has exactly its columns');
SELECT columns_are('app_jobs', 'task_settings', ARRAY[
    'task_identifier', 'retry_kind', 'retry_base', 'retry_cap', 'retry_jitter',
    'retry_delays', 'max_attempts', 'timeout', 'rate_limit', 'rate_interval', 'rate_burst',
    'tokens', 'refilled_at'
], 'task_settings has exactly its columns');
SELECT columns_are('app_jobs', 'queue_settings', ARRAY['queue_name', 'max_concurrency'],
    'queue_settings has exactly its columns');
SELECT columns_are('app_jobs', 'workers', ARRAY[
    'id', 'host', 'pid', 'tasks', 'heartbeat_interval', 'started_at', 'last_heartbeat',
    'wakeup'
], 'workers has exactly its columns');
SELECT columns_are('app_jobs', 'job_history', ARRAY[
    'id', 'job_id', 'database_id', 'task_identifier', 'queue_name', 'key', 'payload',
    'priority', 'status', 'attempts', 'max_attempts', 'result', 'last_error', 'error_data',
    'worker_id', 'created_at', 'started_at', 'finished_at', 'origin', 'bundle_id'
], 'job_history has exactly its columns');
SELECT columns_are('app_jobs', 'settings', ARRAY['name', 'value'], 'settings has exactly its columns');

-- NOT NULL columns of jobs.
SELECT col_not_null('app_jobs', 'jobs', c, format('jobs.%s is NOT NULL', c))
FROM unnest(ARRAY[
    'task_identifier', 'payload', 'priority', 'run_at', 'attempts',
    'max_attempts', 'created_at', 'updated_at', 'blocked_by', 'is_available'
]) AS c;

SELECT col_is_pk('app_jobs', 'jobs', 'id', 'jobs.id is the primary key');
SELECT col_is_pk('app_jobs', 'job_queues', 'queue_name', 'job_queues.queue_name is the primary key');
SELECT col_is_pk('app_jobs', 'scheduled_jobs', 'id', 'scheduled_jobs.id is the primary key');
SELECT col_is_pk('app_jobs', 'workers', 'id', 'workers.id is the primary key');
SELECT col_is_pk(
    'app_jobs', 'job_history', ARRAY['id', 'finished_at'],
    'job_history''s primary key is (id, finished_at): it must hold the partition key'
);
SELECT col_is_pk('app_jobs', 'settings', 'name', 'settings.name is the primary key');
SELECT col_is_pk(
    'app_jobs', 'job_dependencies', ARRAY['job_id', 'depends_on'],
    'job_dependencies primary key is (job_id, depends_on)'
);
SELECT col_is_pk('app_jobs', 'job_bundles', 'id', 'job_bundles.id is the primary key');
SELECT col_is_pk(
    'app_jobs', 'task_settings', 'task_identifier', 'task_settings.task_identifier is the primary key'
);
SELECT col_is_pk(
    'app_jobs', 'queue_settings', 'queue_name', 'queue_settings.queue_name is the primary key'
);
SELECT has_index(
    'app_jobs', 'job_dependencies', 'job_dependencies_depends_on_idx', 'depends_on',
    'index on job_dependencies.depends_on'
);
SELECT col_default_is('app_jobs', 'jobs', 'blocked_by', 0, 'jobs.blocked_by defaults to 0');
SELECT col_default_is(
    'app_jobs', 'job_queues', 'running_count', 0, 'job_queues.running_count defaults to 0'
);
SELECT col_default_is(
    'app_jobs', 'queue_settings', 'max_concurrency', 1, 'queue_settings.max_concurrency defaults to 1'
);
SELECT col_not_null('app_jobs', 'job_queues', 'running_count', 'job_queues.running_count is NOT NULL');
SELECT col_not_null('app_jobs', 'job_bundles', c, format('job_bundles.%s is NOT NULL', c))
FROM unnest(ARRAY[
    'bundle_type', 'job_count', 'completed_count', 'failed_count', 'cancelled_count', 'created_at'
]) AS c;
SELECT col_not_null('app_jobs', 'workers', c, format('workers.%s is NOT NULL', c))
FROM unnest(ARRAY['heartbeat_interval', 'started_at', 'last_heartbeat']) AS c;
SELECT col_not_null('app_jobs', 'job_history', c, format('job_history.%s is NOT NULL', c))
FROM unnest(ARRAY[
    'job_id', 'task_identifier', 'payload', 'priority', 'status', 'attempts',
    'max_attempts', 'created_at', 'finished_at'
]) AS c;
SELECT col_is_null('app_jobs', 'jobs', c, format('jobs.%s is nullable', c))
FROM unnest(ARRAY['progress', 'stage', 'cancel_requested_at', 'timeout', 'origin', 'bundle_id']) AS c;
SELECT has_index(
    'app_jobs', 'workers', 'workers_last_heartbeat_idx', 'last_heartbeat',
    'index on workers.last_heartbeat'
);
SELECT has_index(
    'app_jobs', 'job_history', 'job_history_finished_at_idx', 'finished_at',
    'index on job_history.finished_at'
);
SELECT has_index(
    'app_jobs', 'job_history', 'job_history_job_id_idx', 'job_id', 'index on job_history.job_id'
);
SELECT index_is_unique('app_jobs', 'jobs', 'jobs_key_key', 'jobs.key is unique');
SELECT index_is_unique(
    'app_jobs', 'scheduled_jobs', 'scheduled_jobs_key_key', 'scheduled_jobs.key is unique'
);

-- is_available is a stored generated column behind the partial claim index.
SELECT is(
    (SELECT attgenerated::text FROM pg_attribute
     WHERE attrelid = 'app_jobs.jobs'::regclass AND attname = 'is_available'),
    's',
    'jobs.is_available is a stored generated column'
);
SELECT has_index(
    'app_jobs', 'jobs', 'jobs_claim_idx', ARRAY['priority', 'run_at', 'id'],
    'claim index on (priority, run_at, id)'
);
SELECT matches(
    pg_get_indexdef('app_jobs.jobs_claim_idx'::regclass),
    'WHERE is_available$',
    'claim index is partial: WHERE is_available'
);
SELECT is(
    pg_get_indexdef('app_jobs.jobs_tenant_claim_idx'::regclass),
    'CREATE INDEX jobs_tenant_claim_idx ON app_jobs.jobs USING btree (database_id, priority, run_at, id) WHERE is_available',
    'per-tenant claim index (tenant_fairness) on (database_id, priority, run_at, id) WHERE is_available'
);
SELECT matches(
    pg_get_expr(d.adbin, d.adrelid),
    'blocked_by = 0',
    'is_available also requires blocked_by = 0'
)
FROM pg_attrdef AS d
JOIN pg_attribute AS a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
WHERE d.adrelid = 'app_jobs.jobs'::regclass AND a.attname = 'is_available';
SELECT has_index('app_jobs', 'jobs', 'jobs_locked_by_idx', 'index on jobs.locked_by');
SELECT has_index('app_jobs', 'jobs', 'jobs_locked_at_idx', 'index on jobs.locked_at');

-- Every public function: exists with these argument types, returns this,
-- and has the seed's parameter names (named-parameter calls depend on them).
-- argnames is pg_proc.proargnames: for RETURNS TABLE functions it lists the output
-- columns after the parameters.
CREATE TEMP TABLE fn (name text, args text[], ret text, argnames text[]) ON COMMIT DROP;
INSERT INTO fn VALUES
    ('add_job',
     ARRAY['uuid', 'text', 'json', 'text', 'text', 'timestamp with time zone', 'integer', 'integer',
           'interval', 'text', 'text', 'bigint[]'],
     'app_jobs.jobs',
     ARRAY['db_id', 'identifier', 'payload', 'job_key', 'queue_name', 'run_at',
           'max_attempts', 'priority', 'timeout', 'job_key_mode', 'origin', 'depends_on']),
    ('add_jobs',
     ARRAY['text[]', 'json[]', 'uuid[]', 'text[]', 'timestamp with time zone[]', 'integer[]',
           'integer[]', 'text[]', 'interval[]', 'text[]', 'text'],
     'SETOF app_jobs.jobs',
     ARRAY['identifiers', 'payloads', 'db_ids', 'queue_names', 'run_ats', 'max_attempts',
           'priorities', 'job_keys', 'timeouts', 'origins', 'job_key_mode']),
    ('add_bundle', ARRAY['text', 'jsonb', 'text', 'jsonb', 'uuid'], 'app_jobs.job_bundles',
     ARRAY['bundle_type', 'jobs', 'origin', 'followup', 'db_id']),
    ('set_task_settings',
     ARRAY['text', 'text', 'interval', 'interval', 'double precision', 'interval[]', 'integer',
           'interval', 'integer', 'interval', 'integer'],
     'app_jobs.task_settings',
     ARRAY['task_identifier', 'retry_kind', 'retry_base', 'retry_cap', 'retry_jitter',
           'retry_delays', 'max_attempts', 'timeout', 'rate_limit', 'rate_interval',
           'rate_burst']),
    ('set_queue_concurrency', ARRAY['text', 'integer'], 'integer',
     ARRAY['queue_name', 'max_concurrency']),
    ('get_job', ARRAY['text', 'text[]', 'interval'], 'app_jobs.jobs',
     ARRAY['worker_id', 'task_identifiers', 'job_expiry']),
    ('get_jobs', ARRAY['text', 'text[]', 'interval', 'integer'], 'SETOF app_jobs.jobs',
     ARRAY['worker_id', 'task_identifiers', 'job_expiry', 'batch_size']),
    ('complete_job', ARRAY['text', 'bigint'], 'app_jobs.jobs', ARRAY['worker_id', 'job_id']),
    ('fail_job', ARRAY['text', 'bigint', 'text'], 'app_jobs.jobs',
     ARRAY['worker_id', 'job_id', 'error_message']),
    ('finish_jobs', ARRAY['text', 'jsonb'], 'TABLE(job_id bigint, attempt integer, status text)',
     ARRAY['worker_id', 'outcomes', 'job_id', 'attempt', 'status']),
    ('set_progress', ARRAY['text', 'bigint', 'integer', 'text', 'integer'], 'boolean',
     ARRAY['worker_id', 'job_id', 'progress', 'stage', 'attempt']),
    ('cancel_job', ARRAY['bigint'], 'text', ARRAY['job_id']),
    ('register_worker', ARRAY['text', 'text', 'integer', 'text[]', 'interval'], 'app_jobs.workers',
     ARRAY['worker_id', 'host', 'pid', 'tasks', 'heartbeat_interval']),
    ('worker_heartbeat', ARRAY['text'],
     'TABLE(job_id bigint, attempt integer, cancel_requested boolean)',
     ARRAY['worker_id', 'job_id', 'attempt', 'cancel_requested']),
    ('set_worker_wakeup', ARRAY['text', 'text'], 'void', ARRAY['worker_id', 'wakeup']),
    ('unregister_worker', ARRAY['text'], 'void', ARRAY['worker_id']),
    ('reap_dead_workers', ARRAY['interval'], 'TABLE(worker_id text, job_id bigint, status text)',
     ARRAY['dead_for', 'worker_id', 'job_id', 'status']),
    ('purge_job_history', ARRAY[]::text[], 'integer', NULL),
    ('waiting_jobs', ARRAY['text[]', 'integer'], 'SETOF app_jobs.jobs',
     ARRAY['task_identifiers', 'max_rows']),
    ('failed_jobs', ARRAY['text[]', 'integer'], 'SETOF app_jobs.jobs',
     ARRAY['task_identifiers', 'max_rows']),
    ('retry_job', ARRAY['bigint'], 'app_jobs.jobs', ARRAY['job_id']),
    ('delete_job', ARRAY['bigint'], 'app_jobs.jobs', ARRAY['job_id']),
    ('delete_finished_jobs', ARRAY['interval'], 'integer', ARRAY['older_than']),
    ('set_setting', ARRAY['text', 'text'], 'text', ARRAY['name', 'value']),
    ('complete_jobs', ARRAY['bigint[]'], 'SETOF app_jobs.jobs', ARRAY['job_ids']),
    ('permanently_fail_jobs', ARRAY['bigint[]', 'text'], 'SETOF app_jobs.jobs',
     ARRAY['job_ids', 'error_message']),
    ('reschedule_jobs',
     ARRAY['bigint[]', 'timestamp with time zone', 'integer', 'integer', 'integer'],
     'SETOF app_jobs.jobs',
     ARRAY['job_ids', 'run_at', 'priority', 'attempts', 'max_attempts']),
    ('remove_job', ARRAY['text'], 'app_jobs.jobs', ARRAY['job_key']),
    ('release_jobs', ARRAY['text', 'bigint[]'], 'void', ARRAY['worker_id', 'job_ids']),
    ('force_unlock_workers', ARRAY['text[]'], 'void', ARRAY['worker_ids']),
    ('add_scheduled_job',
     ARRAY['uuid', 'text', 'json', 'json', 'text', 'text', 'integer', 'integer'],
     'app_jobs.scheduled_jobs',
     ARRAY['db_id', 'identifier', 'payload', 'schedule_info', 'job_key', 'queue_name',
           'max_attempts', 'priority']),
    ('run_scheduled_job', ARRAY['bigint', 'interval'], 'app_jobs.jobs',
     ARRAY['scheduled_job_id', 'job_expiry']),
    ('pause_scheduled_job', ARRAY['bigint'], 'app_jobs.scheduled_jobs',
     ARRAY['scheduled_job_id']),
    ('resume_scheduled_job', ARRAY['bigint'], 'app_jobs.scheduled_jobs',
     ARRAY['scheduled_job_id']),
    ('get_scheduled_job', ARRAY['text', 'text[]'], 'app_jobs.scheduled_jobs',
     ARRAY['worker_id', 'task_identifiers']),
    ('release_scheduled_jobs', ARRAY['text', 'bigint[]'], 'void', ARRAY['worker_id', 'ids']),
    ('tg_add_job_with_row_id', ARRAY[]::text[], 'trigger', NULL),
    ('tg_add_job_with_row', ARRAY[]::text[], 'trigger', NULL),
    ('trigger_job_with_fields', ARRAY[]::text[], 'trigger', NULL),
    ('pgjobs_version', ARRAY[]::text[], 'text', NULL);

-- The complete list: a new function must come with its tests (and a row above).
SELECT functions_are(
    'app_jobs',
    ARRAY(SELECT name FROM fn) || ARRAY[
        '_check_job_spec', '_check_worker_id', '_enqueue_from_trigger', '_tg_timestamps',
        '_tg_increase_job_queue_count', '_tg_decrease_job_queue_count', '_tg_notify_worker',
        '_change_job_queue_count', '_tg_move_job_queue_count', '_cron_value', '_cron_field',
        '_schedule_spec', '_local_slot_instant', 'schedule_next_run', 'run_due_scheduled_jobs',
        '_tg_scheduled_jobs_next_run', '_spec_next_run',
        'setting', '_finish_claim', '_claim_status', '_check_not_running',
        '_lock_is_free', '_end_cancelled_claims',
        '_queue_concurrency', '_enqueue_ignored', '_job_stopped', '_notify_job_stopped',
        '_cancel_dependents', '_lock_bundles', '_bundle_job_stopped', '_retry_delay',
        '_stopped_event', '_notify', '_notify_chunks', '_notifications_skipped_count',
        '_check_job_expiry', '_check_job', '_add_jobs_rows', '_stop_jobs', '_tg_bundle_job_revived',
        '_name_problem', '_check_payload', '_check_run_at', '_check_tenant', '_tenant_allowed',
        'metrics', '_metrics_label', '_lock_jobs', '_job_expiry', '_fair_candidates',
        '_ensure_history_partitions'
    ],
    'app_jobs has exactly the known functions'
);

SELECT has_function('app_jobs', name, args, format('app_jobs.%s(%s) exists', name, args))
FROM fn ORDER BY name;

SELECT is(
    pg_get_function_result(to_regprocedure(format('app_jobs.%s(%s)', name, array_to_string(args, ',')))),
    ret,
    format('app_jobs.%s returns %s', name, ret)
)
FROM fn ORDER BY name;

SELECT is(
    (SELECT p.proargnames FROM pg_proc AS p
     WHERE p.oid = to_regprocedure(format('app_jobs.%s(%s)', name, array_to_string(args, ',')))),
    argnames,
    format('app_jobs.%s parameter names', name)
)
FROM fn ORDER BY name;

-- Triggers.
SELECT triggers_are(
    'app_jobs', 'jobs',
    ARRAY[
        '_100_timestamps', '_500_increase_job_queue_count',
        '_500_decrease_job_queue_count', '_500_move_job_queue_count',
        '_600_bundle_job_revived', '_900_notify_worker'
    ],
    'jobs has exactly its six triggers'
);
SELECT trigger_is('app_jobs', tbl, tg, 'app_jobs', fn, format('%s.%s calls %s', tbl, tg, fn))
FROM (VALUES
    ('jobs', '_100_timestamps', '_tg_timestamps'),
    ('jobs', '_500_increase_job_queue_count', '_tg_increase_job_queue_count'),
    ('jobs', '_500_decrease_job_queue_count', '_tg_decrease_job_queue_count'),
    ('jobs', '_500_move_job_queue_count', '_tg_move_job_queue_count'),
    ('jobs', '_900_notify_worker', '_tg_notify_worker'),
    ('scheduled_jobs', '_100_timestamps', '_tg_timestamps')
) AS v (tbl, tg, fn);
SELECT triggers_are(
    'app_jobs', 'scheduled_jobs', ARRAY['_100_timestamps', '_200_next_run_at'],
    'scheduled_jobs has the timestamps and next_run_at triggers'
);
SELECT triggers_are('app_jobs', 'job_queues', ARRAY[]::name[], 'job_queues has no triggers');
SELECT triggers_are('app_jobs', t, ARRAY[]::name[], format('%s has no triggers', t))
FROM unnest(ARRAY[
    'workers', 'job_history', 'settings', 'job_dependencies', 'job_bundles', 'task_settings',
    'queue_settings'
]) AS t;

-- Version and pg_dump registration.
SELECT is(
    app_jobs.pgjobs_version(),
    (SELECT extversion FROM pg_extension WHERE extname = 'pgjobs'),
    'pgjobs_version() matches the installed extension version'
);
SELECT is(
    app_jobs.pgjobs_version(),
    (SELECT default_version FROM pg_available_extensions WHERE name = 'pgjobs'),
    'pgjobs_version() is the default version'
);
SELECT set_eq(
    $$SELECT unnest(extconfig)::regclass::text FROM pg_extension WHERE extname = 'pgjobs'$$,
    ARRAY[
        'app_jobs.jobs', 'app_jobs.jobs_id_seq', 'app_jobs.job_queues',
        'app_jobs.scheduled_jobs', 'app_jobs.scheduled_jobs_id_seq',
        'app_jobs.workers', 'app_jobs.job_history', 'app_jobs.job_history_default',
        'app_jobs.job_history_id_seq',
        'app_jobs.settings', 'app_jobs.job_dependencies', 'app_jobs.job_bundles',
        'app_jobs.job_bundles_id_seq', 'app_jobs.task_settings', 'app_jobs.queue_settings'
    ],
    'queue, worker, history, settings, dependency, bundle and flow-settings tables and sequences are dumped by pg_dump'
);

SELECT * FROM finish();
ROLLBACK;
