-- Retouch schema (PostgreSQL), version 5: edits acknowledged to Discord whose job is not written
-- yet, one row each, so an edit survives its process's machine (bot/jobs/journal.py).
-- interaction_token: the acknowledged interaction's, one edit each; owner: the lease name of the
-- process that acknowledged it (or took it over); lease_until: when the row is anyone's to
-- recover unless that process renews it, as it renews its job leases; created_at: when it was
-- acknowledged (rows older than an interaction token's lifetime are dropped); edit_order: the
-- order, as JSON. A row lives from the acknowledgement until the transaction that writes its
-- job deletes it, milliseconds, so the table stays a few rows long and needs no other index.
-- Never edit once landed.
CREATE TABLE intake_journal (
    interaction_token  TEXT COLLATE "C" PRIMARY KEY,
    owner              TEXT COLLATE "C" NOT NULL,
    lease_until        TEXT COLLATE "C" NOT NULL,
    created_at         TEXT COLLATE "C" NOT NULL,
    edit_order         TEXT COLLATE "C" NOT NULL
);
