-- Retouch schema, version 1. Never edit this file once it has landed: add 0002_*.sql.
-- Times are ISO-8601 UTC text; money and credits are integers (USD in micro-dollars).
BEGIN IMMEDIATE;

CREATE TABLE guild_settings (
    guild_id    INTEGER PRIMARY KEY,
    paused      INTEGER NOT NULL DEFAULT 0,
    settings    TEXT    NOT NULL DEFAULT '{}',
    updated_by  INTEGER,
    updated_at  TEXT    NOT NULL
);

CREATE TABLE jobs (
    id                   INTEGER PRIMARY KEY,
    guild_id             INTEGER,
    channel_id           INTEGER NOT NULL,
    user_id              INTEGER NOT NULL,
    parent_id            INTEGER REFERENCES jobs (id),
    parent_output        INTEGER,
    kind                 TEXT    NOT NULL DEFAULT 'edit',
    state                TEXT    NOT NULL CHECK (state IN
                             ('queued', 'submitting', 'running', 'delivering',
                              'done', 'failed', 'cancelled', 'refunded')),
    prompt               TEXT    NOT NULL,
    options              TEXT    NOT NULL DEFAULT '{}',
    inputs               TEXT    NOT NULL DEFAULT '[]',
    mask                 TEXT,
    provider             TEXT,
    run_id               TEXT,
    application_id       INTEGER,
    interaction_token    TEXT,
    token_expires_at     TEXT,
    status_message_id    INTEGER,
    result_message_id    INTEGER,
    credits_estimated    INTEGER NOT NULL DEFAULT 0,
    credits_charged      INTEGER NOT NULL DEFAULT 0,
    usd_reserved_micros  INTEGER NOT NULL DEFAULT 0,
    usd_micros           INTEGER NOT NULL DEFAULT 0,
    error_kind           TEXT,
    error                TEXT,
    attempts             INTEGER NOT NULL DEFAULT 0,
    created_at           TEXT    NOT NULL,
    updated_at           TEXT    NOT NULL,
    submitted_at         TEXT,
    completed_at         TEXT
);
CREATE INDEX jobs_open ON jobs (state)
    WHERE state NOT IN ('done', 'failed', 'cancelled', 'refunded');
CREATE INDEX jobs_user ON jobs (user_id, created_at);
CREATE INDEX jobs_guild ON jobs (guild_id, created_at);
CREATE INDEX jobs_parent ON jobs (parent_id);
CREATE UNIQUE INDEX jobs_run ON jobs (provider, run_id) WHERE run_id IS NOT NULL;

CREATE TABLE job_outputs (
    job_id        INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    idx           INTEGER NOT NULL,
    source_url    TEXT,
    path          TEXT,
    content_type  TEXT,
    width         INTEGER,
    height        INTEGER,
    size          INTEGER,
    nsfw          INTEGER NOT NULL DEFAULT 0,
    discord_url   TEXT,
    created_at    TEXT    NOT NULL,
    PRIMARY KEY (job_id, idx)
);

CREATE TABLE ledger (
    id               INTEGER PRIMARY KEY,
    guild_id         INTEGER NOT NULL,
    user_id          INTEGER NOT NULL,
    kind             TEXT    NOT NULL CHECK (kind IN
                         ('grant', 'revoke', 'reserve', 'capture', 'release', 'adjust')),
    amount           INTEGER NOT NULL,
    job_id           INTEGER REFERENCES jobs (id),
    actor_id         INTEGER,
    reason           TEXT,
    idempotency_key  TEXT    NOT NULL UNIQUE,
    expires_at       TEXT,
    created_at       TEXT    NOT NULL
);
CREATE INDEX ledger_member ON ledger (guild_id, user_id, created_at);
CREATE INDEX ledger_job ON ledger (job_id);

CREATE TABLE allowances (
    guild_id    INTEGER NOT NULL,
    scope       TEXT    NOT NULL CHECK (scope IN ('default', 'role', 'user')),
    target_id   INTEGER NOT NULL DEFAULT 0,
    amount      INTEGER NOT NULL CHECK (amount >= 0),
    updated_by  INTEGER,
    updated_at  TEXT    NOT NULL,
    PRIMARY KEY (guild_id, scope, target_id)
);

CREATE TABLE member_blocks (
    guild_id    INTEGER NOT NULL,
    user_id     INTEGER NOT NULL,
    actor_id    INTEGER,
    reason      TEXT,
    created_at  TEXT    NOT NULL,
    PRIMARY KEY (guild_id, user_id)
);

CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY,
    guild_id    INTEGER,
    actor_id    INTEGER NOT NULL,
    action      TEXT    NOT NULL,
    target_id   INTEGER,
    detail      TEXT    NOT NULL DEFAULT '{}',
    created_at  TEXT    NOT NULL
);
CREATE INDEX audit_guild ON audit_log (guild_id, created_at);

PRAGMA user_version = 1;
COMMIT;
