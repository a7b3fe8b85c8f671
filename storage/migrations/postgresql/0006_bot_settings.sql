-- Retouch schema (PostgreSQL), version 6: settings of the whole bot, beside each server's own
-- (see migrations/sqlite/0014_bot_settings.sql). Never edit once landed.
CREATE TABLE bot_settings (
    name        TEXT COLLATE "C" PRIMARY KEY,
    value       TEXT COLLATE "C" NOT NULL,
    updated_by  BIGINT,
    updated_at  TEXT COLLATE "C" NOT NULL
);
