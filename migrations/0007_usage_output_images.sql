-- Images the model generated (usage.recorded v4 `output_images`), apart from `images`, the
-- input images: the two are priced at different rates (docs/pricing.md, rule 6). 0 for every
-- event projected before this migration, which is what a v3 event means once upcast.
-- A constant default adds the column without rewriting the table (nor its partitions).
ALTER TABLE usage_records
    ADD COLUMN output_images bigint NOT NULL DEFAULT 0;
ALTER TABLE monthly_usage_summaries
    ADD COLUMN output_images bigint NOT NULL DEFAULT 0;
