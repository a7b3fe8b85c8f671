-- Retouch schema, version 11: each member's credits as they stand, kept beside the ledger in
-- the same transaction as every entry, so a reservation reads one row instead of replaying the
-- member's whole history (storage/balances.py says what each column holds). The ledger stays
-- the source of truth: `python -m bot verify-ledger` replays it and compares.
BEGIN IMMEDIATE;

CREATE TABLE member_balances (
    guild_id      INTEGER NOT NULL,
    user_id       INTEGER NOT NULL,
    permanent     INTEGER NOT NULL DEFAULT 0,
    reserved      INTEGER NOT NULL DEFAULT 0,
    day_starts    TEXT    NOT NULL DEFAULT '',
    day_used      INTEGER NOT NULL DEFAULT 0,
    week_starts   TEXT    NOT NULL DEFAULT '',
    week_used     INTEGER NOT NULL DEFAULT 0,
    month_starts  TEXT    NOT NULL DEFAULT '',
    month_used    INTEGER NOT NULL DEFAULT 0,
    all_used      INTEGER NOT NULL DEFAULT 0,
    stale         INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (guild_id, user_id)
);

CREATE TABLE bonus_lots (
    grant_id    INTEGER PRIMARY KEY REFERENCES ledger (id),
    guild_id    INTEGER NOT NULL,
    user_id     INTEGER NOT NULL,
    expires_at  TEXT    NOT NULL,
    remaining   INTEGER NOT NULL
);
CREATE INDEX bonus_lots_member ON bonus_lots (guild_id, user_id, expires_at);

CREATE TABLE hold_sources (
    job_id    INTEGER NOT NULL REFERENCES jobs (id),
    seq       INTEGER NOT NULL,
    grant_id  INTEGER REFERENCES bonus_lots (grant_id),
    amount    INTEGER NOT NULL CHECK (amount > 0),
    PRIMARY KEY (job_id, seq)
);

-- Members who already have entries are rebuilt from their ledger by the wallet's own replay
-- the first time their balance is read (bot/credits/books.py), under their lock: the rules
-- (soonest-expiring lots first, credits returning to where they came from) are Python's, and
-- a copy of them in SQL could drift from the one verify-ledger checks against.
INSERT INTO member_balances (guild_id, user_id, stale) SELECT DISTINCT guild_id, user_id, 1 FROM ledger;

PRAGMA user_version = 11;
COMMIT;
