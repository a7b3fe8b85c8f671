-- Retouch schema (PostgreSQL), version 4: the indexes the line's statements use, as SQLite's
-- 0012_queue_indexes.sql (see there): the queued jobs by member, oldest first (claims, the line's
-- order), and jobs by state (open counts, the claimed count), in place of the partial jobs_open.
-- Never edit once landed.
CREATE INDEX jobs_waiting ON jobs (user_id, created_at) WHERE state = 'queued';
CREATE INDEX jobs_state ON jobs (state);
DROP INDEX jobs_open;
