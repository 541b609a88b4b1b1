-- Which log a checkpoint belongs to. A broker that lost its log (a memory-only broker
-- restarted, a topic deleted and recreated) reuses the same offsets for other records; the
-- projector compares the record at anchor_offset with the digest it remembered, and replays
-- the partition from its start when they differ (event_id dedup keeps totals right).
ALTER TABLE projection_checkpoints
    ADD COLUMN anchor_offset bigint,
    ADD COLUMN anchor_digest bytea;

-- What the first copy of each usage event said, so that a later copy with the same event_id
-- but another payload (another key, cost or month) is seen and dead-lettered as
-- conflicting_duplicate instead of vanishing. NULL for events projected before this column.
ALTER TABLE usage_event_ids ADD COLUMN fingerprint bytea;
