-- Retouch schema, version 14: settings of the whole bot, beside each server's own. `paused`: the
-- owner's switch for every server at once (`/pause everywhere`), kept so that every process
-- sharing the database honours it and a restart does not undo it. value: JSON; updated_by: the
-- Discord user who set it. Never edit once landed.
BEGIN IMMEDIATE;

CREATE TABLE bot_settings (
    name        TEXT    PRIMARY KEY,
    value       TEXT    NOT NULL,
    updated_by  INTEGER,
    updated_at  TEXT    NOT NULL
);

PRAGMA user_version = 14;
COMMIT;
