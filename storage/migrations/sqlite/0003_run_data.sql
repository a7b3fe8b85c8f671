-- Retouch schema, version 3: what a host needs to find a run again after a restart
-- (fal's status, result and cancel URLs), kept beside the run id. Never edit once landed.
BEGIN IMMEDIATE;

ALTER TABLE jobs ADD COLUMN run_data TEXT NOT NULL DEFAULT '{}';

PRAGMA user_version = 3;
COMMIT;
