-- How each request was served (usage.recorded v3): its service tier and the region fields its
-- catalog price depends on (docs/pricing.md, rules 11 and 12), so a report can split spend by
-- tier and a row says why its cost is what it is. NULL: the standard tier, no uplift, which is
-- also what every event projected before this migration was.
ALTER TABLE usage_records
    ADD COLUMN service_tier text,
    ADD COLUMN data_residency text,
    ADD COLUMN vertex_location text,
    ADD COLUMN inference_geo text;
