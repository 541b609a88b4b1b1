-- Model names resolve ignoring ASCII case when no exact spelling matches (ledger.catalog.naming).
-- lower(... COLLATE "C") lowercases ASCII letters only, whatever the database's locale, so
-- the database and Python's naming.fold() agree on every name.
CREATE INDEX models_name_folded ON models (lower(name COLLATE "C"));
CREATE INDEX model_aliases_alias_folded ON model_aliases (lower(alias COLLATE "C"));

-- Usage re-priced after the catalog caught up (projections/repricing.py): one row per change
-- of an event's cost, with the old and the new value, written in the catalog batch's
-- transaction together with the record and its monthly summary. `ledger status` reads it.
CREATE TABLE usage_repricings (
    id               bigserial PRIMARY KEY,
    event_id         uuid NOT NULL,
    occurred_at      timestamptz NOT NULL,
    api_key_id       uuid NOT NULL,
    model            text NOT NULL,
    old_cost_usd     numeric,
    old_cost_source  text NOT NULL,
    new_cost_usd     numeric,
    new_cost_source  text NOT NULL,
    repriced_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX usage_repricings_event ON usage_repricings (event_id);
