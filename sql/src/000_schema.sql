-- Schema that holds every pgjobs object.
CREATE SCHEMA app_jobs;

COMMENT ON SCHEMA app_jobs IS 'pgjobs: a job queue that lives inside PostgreSQL';
