-- Instance-wide settings; a missing row means the default (see app_jobs.setting).
CREATE TABLE app_jobs.settings (
    name text PRIMARY KEY,
    value text NOT NULL,
    CONSTRAINT settings_name_check CHECK (
        name IN (
            'history', 'history_retention', 'max_payload_bytes', 'notify_max_queue_usage',
            'job_expiry', 'tenant_fairness'
        )
    ),
    CONSTRAINT settings_max_payload_bytes_check CHECK (
        CASE
            WHEN name <> 'max_payload_bytes' THEN TRUE
            WHEN value !~ '^[0-9]{4,10}$' THEN FALSE
            ELSE value::bigint BETWEEN 1024 AND 1073741824
        END
    )
);

COMMENT ON TABLE app_jobs.settings IS
'history (on/off, default on), history_retention (interval, default 7 days), '
'max_payload_bytes (1024 to 1073741824, default 262144), notify_max_queue_usage (0 to 1, '
'default 0.5), job_expiry (how long the claim of a worker that never registered holds, '
'default 4 hours), tenant_fairness (on/off, default off: claims take turns between '
'tenants)';
