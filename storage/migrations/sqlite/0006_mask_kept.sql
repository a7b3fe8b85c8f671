-- Retouch schema, version 6: what became of a mask on each output. Never edit once landed.
-- changed_outside: the share of pixels outside the mask the host changed before the bot laid its
-- output over the original (NULL: no mask, or the output's shape differed and it stands as made).
-- mask_kept: 1 when the region outside the mask is the original's.
BEGIN IMMEDIATE;

ALTER TABLE job_outputs ADD COLUMN mask_kept INTEGER NOT NULL DEFAULT 0;
ALTER TABLE job_outputs ADD COLUMN changed_outside REAL;

PRAGMA user_version = 6;
COMMIT;
