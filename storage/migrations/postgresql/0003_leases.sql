-- Retouch schema (PostgreSQL), version 3: the jobs table is the queue every process takes work
-- from; the same columns as SQLite's 0010_leases.sql (see there). Never edit once landed.
ALTER TABLE jobs
    ADD COLUMN lease_owner TEXT,
    ADD COLUMN lease_until TEXT,
    ADD COLUMN claimed_at TEXT;
CREATE INDEX jobs_member_turns ON jobs (user_id, claimed_at);
CREATE INDEX jobs_leases ON jobs (lease_owner) WHERE lease_owner IS NOT NULL;
