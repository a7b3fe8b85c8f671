-- Retouch schema, version 9: what each member chose for themselves, across every server.
-- mention: 1 (the default, also for a member with no row) when a finished edit's result
-- message mentions them, 0 when they turned it off with /notify.
BEGIN IMMEDIATE;

CREATE TABLE member_prefs (
    user_id INTEGER PRIMARY KEY,
    mention INTEGER NOT NULL DEFAULT 1,
    updated_at TEXT NOT NULL
);

PRAGMA user_version = 9;
COMMIT;
