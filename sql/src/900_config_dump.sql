-- Have pg_dump keep queue contents when the schema is an extension's.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'pgjobs') THEN
        PERFORM pg_catalog.pg_extension_config_dump('app_jobs.jobs', '');
        PERFORM pg_catalog.pg_extension_config_dump('app_jobs.jobs_id_seq', '');
        PERFORM pg_catalog.pg_extension_config_dump('app_jobs.job_queues', '');
        PERFORM pg_catalog.pg_extension_config_dump('app_jobs.scheduled_jobs', '');
        PERFORM pg_catalog.pg_extension_config_dump(
            'app_jobs.scheduled_jobs_id_seq', ''
        );
        PERFORM pg_catalog.pg_extension_config_dump('app_jobs.workers', '');
        PERFORM pg_catalog.pg_extension_config_dump('app_jobs.job_history', '');
        PERFORM pg_catalog.pg_extension_config_dump('app_jobs.job_history_default', '');
        PERFORM pg_catalog.pg_extension_config_dump('app_jobs.job_history_id_seq', '');
        PERFORM pg_catalog.pg_extension_config_dump('app_jobs.settings', '');
        PERFORM pg_catalog.pg_extension_config_dump('app_jobs.job_dependencies', '');
        PERFORM pg_catalog.pg_extension_config_dump('app_jobs.job_bundles', '');
        PERFORM pg_catalog.pg_extension_config_dump('app_jobs.job_bundles_id_seq', '');
        PERFORM pg_catalog.pg_extension_config_dump('app_jobs.task_settings', '');
        PERFORM pg_catalog.pg_extension_config_dump('app_jobs.queue_settings', '');
    END IF;
END;
$$;
