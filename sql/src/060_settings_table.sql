-- Instance-wide settings; a missing row means the default (see app_jobs.setting).
CREATE TABLE app_jobs.settings (
    name text PRIMARY KEY,
    value text NOT NULL,
    CONSTRAINT settings_name_check CHECK (name IN ('history', 'history_retention'))
);

COMMENT ON TABLE app_jobs.settings IS
'history (on/off, default on), history_retention (interval, default 7 days)';
