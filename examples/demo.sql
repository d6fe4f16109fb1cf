-- The job mix `make demo` enqueues.
SELECT app_jobs.add_job(identifier := 'send_email',
                        payload := json_build_object('to', 'vip' || g || '@example.com'),
                        priority := -10)
FROM generate_series(1, 3) AS g;
SELECT app_jobs.add_job(identifier := 'send_email',
                        payload := json_build_object('to', 'user' || g || '@example.com'),
                        priority := 10)
FROM generate_series(1, 5) AS g;
SELECT app_jobs.add_job(identifier := 'generate_report', payload := '{"report_id": 123}'::json,
                        run_at := now() + interval '3 seconds');
SELECT app_jobs.add_job(identifier := 'flaky_api_call', payload := '{}'::json, max_attempts := 5);
SELECT app_jobs.add_job(identifier := 'ledger_entry', payload := json_build_object('step', g),
                        queue_name := 'ledger')
FROM generate_series(1, 5) AS g;

CREATE TABLE IF NOT EXISTS demo_users (id serial PRIMARY KEY, name text NOT NULL);
DROP TRIGGER IF EXISTS welcome ON demo_users;
CREATE TRIGGER welcome AFTER INSERT ON demo_users
FOR EACH ROW EXECUTE FUNCTION app_jobs.trigger_job_with_fields('welcome_user', 'id', 'name');
INSERT INTO demo_users (name) VALUES ('ada'), ('grace');
