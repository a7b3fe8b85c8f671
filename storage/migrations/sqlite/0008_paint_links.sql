-- Retouch schema, version 8: links to the mask painter. Never edit once landed.
-- One row per Paint press: who may use the link, on which picture, where the result goes, and
-- what became of it. used_at is set once, by the submit that claims the link, so a link is used
-- at most once even across restarts; job_id or refusal say what the submit led to.
BEGIN IMMEDIATE;

CREATE TABLE paint_links (
    id              TEXT PRIMARY KEY,
    user_id         INTEGER NOT NULL,
    guild_id        INTEGER,
    channel_id      INTEGER NOT NULL,
    grant_data      TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    expires_at      TEXT NOT NULL,
    used_at         TEXT,
    job_id          INTEGER REFERENCES jobs(id),
    refusal         TEXT
);
CREATE INDEX paint_links_expiry ON paint_links(expires_at);

PRAGMA user_version = 8;
COMMIT;
