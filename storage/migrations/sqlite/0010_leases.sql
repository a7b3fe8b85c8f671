-- Retouch schema, version 10: the jobs table is the queue every process takes work from.
-- lease_owner: the process working on the job (its lease name), NULL when none is;
-- lease_until: when that claim lapses unless renewed, after which any process may take the job
-- over; claimed_at: when the job was last claimed, so members take turns (the member served
-- longest ago goes first). Never edit once landed.
BEGIN IMMEDIATE;

ALTER TABLE jobs ADD COLUMN lease_owner TEXT;
ALTER TABLE jobs ADD COLUMN lease_until TEXT;
ALTER TABLE jobs ADD COLUMN claimed_at TEXT;
CREATE INDEX jobs_member_turns ON jobs (user_id, claimed_at);
CREATE INDEX jobs_leases ON jobs (lease_owner) WHERE lease_owner IS NOT NULL;

PRAGMA user_version = 10;
COMMIT;
