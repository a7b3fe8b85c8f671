-- Retouch schema, version 4: when the member was told how a failed edit ended, so recovery can
-- tell them if a crash came between the refund and the notice. Never edit once landed.
BEGIN IMMEDIATE;

ALTER TABLE jobs ADD COLUMN notified_at TEXT;
-- Edits that ended before this column existed were reported when they ended.
UPDATE jobs SET notified_at = completed_at WHERE state IN ('done', 'failed', 'cancelled', 'refunded');
CREATE INDEX jobs_unnotified ON jobs (state) WHERE notified_at IS NULL AND state = 'failed';

PRAGMA user_version = 4;
COMMIT;
