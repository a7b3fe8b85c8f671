-- Retouch schema, version 2: what the credits service needs beyond 0001.
-- Never edit this file once it has landed: add 0003_*.sql.
BEGIN IMMEDIATE;

-- What a job's `reserve` entry was made of, written in the same transaction and never
-- changed. The ledger amount says how many credits were held; this row says how many of them
-- came out of the period allowance (the rest came out of bonus), which cannot be recomputed
-- later because allowances and roles change, and the image count and host USD, so settling
-- after a restart charges per delivered image at the price that was reserved.
CREATE TABLE credit_holds (
    job_id          INTEGER PRIMARY KEY REFERENCES jobs (id),
    images          INTEGER NOT NULL CHECK (images >= 1),
    from_allowance  INTEGER NOT NULL CHECK (from_allowance >= 0),
    usd_micros      INTEGER NOT NULL CHECK (usd_micros >= 0)
);

-- Caps sum the reservations made in a period, per server and across all servers.
CREATE INDEX ledger_reserves ON ledger (created_at) WHERE kind = 'reserve';
CREATE INDEX ledger_guild_reserves ON ledger (guild_id, created_at) WHERE kind = 'reserve';

-- The ledger and the holds are append-only: a correction is a new entry, never an edit.
CREATE TRIGGER ledger_no_update BEFORE UPDATE ON ledger
BEGIN
    SELECT RAISE(ABORT, 'the ledger is append-only');
END;
CREATE TRIGGER ledger_no_delete BEFORE DELETE ON ledger
BEGIN
    SELECT RAISE(ABORT, 'the ledger is append-only');
END;
CREATE TRIGGER credit_holds_no_update BEFORE UPDATE ON credit_holds
BEGIN
    SELECT RAISE(ABORT, 'credit holds are append-only');
END;
CREATE TRIGGER credit_holds_no_delete BEFORE DELETE ON credit_holds
BEGIN
    SELECT RAISE(ABORT, 'credit holds are append-only');
END;

PRAGMA user_version = 2;
COMMIT;
