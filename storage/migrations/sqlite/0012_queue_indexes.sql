-- Retouch schema, version 12: indexes the line's statements can use. SQLite uses a partial
-- index only when the query repeats its condition, so `jobs_open` (state NOT IN the final
-- states) served none of them: each claim, each look at the line and each count of a member's
-- open edits read the whole jobs table, slower as its history grew (15 ms a claim at 3,400
-- rows; 2 ms with these). jobs_waiting: the queued jobs by member, oldest first (claims, the
-- line's order); jobs_state: jobs by state (open counts, the claimed count). Never edit once
-- landed.
BEGIN IMMEDIATE;

CREATE INDEX jobs_waiting ON jobs (user_id, created_at) WHERE state = 'queued';
CREATE INDEX jobs_state ON jobs (state);
DROP INDEX jobs_open;

PRAGMA user_version = 12;
COMMIT;
