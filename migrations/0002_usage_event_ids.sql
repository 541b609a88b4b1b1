-- usage_records is partitioned by month, so PostgreSQL only allows unique constraints that
-- include occurred_at: an event re-sent with a different occurred_at would slip past its
-- primary key. This table makes event_id unique on its own; the usage projection inserts
-- here first and projects only the event_ids this insert accepted.
CREATE TABLE usage_event_ids (
    event_id     uuid PRIMARY KEY,
    occurred_at  timestamptz NOT NULL
);
INSERT INTO usage_event_ids (event_id, occurred_at)
SELECT event_id, occurred_at FROM usage_records
ON CONFLICT (event_id) DO NOTHING;
