-- Retouch schema, version 13: the intake journal of processes sharing PostgreSQL (see
-- migrations/postgresql/0005_intake_journal.sql). A SQLite store keeps its journal in a file
-- beside the database (one process per file set) and leaves this table empty; it exists so both
-- engines have the same tables, and a store copied between them the same schema. Never edit once
-- landed.
BEGIN IMMEDIATE;

CREATE TABLE intake_journal (
    interaction_token  TEXT PRIMARY KEY,
    owner              TEXT NOT NULL,
    lease_until        TEXT NOT NULL,
    created_at         TEXT NOT NULL,
    edit_order         TEXT NOT NULL
);

PRAGMA user_version = 13;
COMMIT;
