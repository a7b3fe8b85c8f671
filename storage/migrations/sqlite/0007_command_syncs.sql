-- Retouch schema, version 7: what was last synced to Discord for each command scope, so a
-- restart syncs only when a definition changed (Discord rate-limits command creation per day).
-- Never edit once landed.
BEGIN IMMEDIATE;

CREATE TABLE command_syncs (
    scope      TEXT PRIMARY KEY,  -- "<application id>:global" or "<application id>:<guild id>"
    digest     TEXT NOT NULL,     -- SHA-256 of the definitions as sent
    synced_at  TEXT NOT NULL
);

PRAGMA user_version = 7;
COMMIT;
