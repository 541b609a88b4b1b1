-- Model names resolve ignoring ASCII case when no exact spelling matches (ledger.catalog.naming).
-- lower(... COLLATE "C") lowercases ASCII letters only, whatever the database's locale, so
-- the database and Python's naming.fold() agree on every name.
CREATE INDEX models_name_folded ON models (lower(name COLLATE "C"));
CREATE INDEX model_aliases_alias_folded ON model_aliases (lower(alias COLLATE "C"));
