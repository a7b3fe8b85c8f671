-- Retouch schema for PostgreSQL, version 2: each member's credits as they stand, kept beside the
-- ledger in the same transaction as every entry (SQLite's 0011_balances.sql; storage/balances.py
-- says what each column holds). The ledger stays the source of truth: `python -m bot
-- verify-ledger` replays it and compares.

CREATE TABLE member_balances (
    guild_id      BIGINT  NOT NULL,
    user_id       BIGINT  NOT NULL,
    permanent     BIGINT  NOT NULL DEFAULT 0,
    reserved      BIGINT  NOT NULL DEFAULT 0,
    day_starts    TEXT    COLLATE "C" NOT NULL DEFAULT '',
    day_used      BIGINT  NOT NULL DEFAULT 0,
    week_starts   TEXT    COLLATE "C" NOT NULL DEFAULT '',
    week_used     BIGINT  NOT NULL DEFAULT 0,
    month_starts  TEXT    COLLATE "C" NOT NULL DEFAULT '',
    month_used    BIGINT  NOT NULL DEFAULT 0,
    all_used      BIGINT  NOT NULL DEFAULT 0,
    stale         INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (guild_id, user_id)
);

CREATE TABLE bonus_lots (
    grant_id    BIGINT  PRIMARY KEY REFERENCES ledger (id),
    guild_id    BIGINT  NOT NULL,
    user_id     BIGINT  NOT NULL,
    expires_at  TEXT    COLLATE "C" NOT NULL,
    remaining   BIGINT  NOT NULL
);
CREATE INDEX bonus_lots_member ON bonus_lots (guild_id, user_id, expires_at);

CREATE TABLE hold_sources (
    job_id    BIGINT  NOT NULL REFERENCES jobs (id),
    seq       INTEGER NOT NULL,
    grant_id  BIGINT  REFERENCES bonus_lots (grant_id),
    amount    BIGINT  NOT NULL CHECK (amount > 0),
    PRIMARY KEY (job_id, seq)
);

-- Members who already have entries (a database copied in before this version) are rebuilt
-- from their ledger by the wallet's own replay the first time their balance is read.
INSERT INTO member_balances (guild_id, user_id, stale) SELECT DISTINCT guild_id, user_id, 1 FROM ledger;
