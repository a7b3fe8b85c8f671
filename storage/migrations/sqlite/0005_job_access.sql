-- Retouch schema, version 5: what binds an action on a job to the messages that carry it, and a
-- deleted result that stays deleted. Never edit once landed.
BEGIN IMMEDIATE;

-- A member's Delete hides the job for good: /show and every button refuse it afterwards.
ALTER TABLE jobs ADD COLUMN deleted_at TEXT;

-- Messages that carry a job's buttons besides its own progress and result messages (which the
-- jobs row names): the copies /show posts. A button press is honoured only on one of them.
CREATE TABLE job_messages (
    message_id  INTEGER PRIMARY KEY,
    job_id      INTEGER NOT NULL REFERENCES jobs (id),
    channel_id  INTEGER,
    created_at  TEXT    NOT NULL
);
CREATE INDEX job_messages_job ON job_messages (job_id);

PRAGMA user_version = 5;
COMMIT;
