-- Core schema of the usage ledger. Money is NUMERIC (exact), never float.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

-- Catalog -------------------------------------------------------------------
CREATE TABLE providers (
    name         text PRIMARY KEY,
    base_url     text,
    api_version  text,
    auth_scheme  text,
    features     text[] NOT NULL DEFAULT '{}',
    config       jsonb NOT NULL DEFAULT '{}'::jsonb,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE models (
    name                                      text PRIMARY KEY,
    provider                                  text,
    mode                                      text,
    input_cost_per_token                      numeric,
    output_cost_per_token                     numeric,
    cache_read_input_token_cost               numeric,
    cache_creation_input_token_cost           numeric,
    cache_creation_input_token_cost_above_1hr numeric,
    input_cost_per_token_above_128k_tokens    numeric,
    output_cost_per_token_above_128k_tokens   numeric,
    input_cost_per_token_above_200k_tokens    numeric,
    output_cost_per_token_above_200k_tokens   numeric,
    input_cost_per_token_above_272k_tokens    numeric,
    output_cost_per_token_above_272k_tokens   numeric,
    output_cost_per_reasoning_token           numeric,
    input_cost_per_audio_token                numeric,
    output_cost_per_audio_token               numeric,
    input_cost_per_image                      numeric,
    output_cost_per_image                     numeric,
    input_cost_per_second                     numeric,
    output_cost_per_second                    numeric,
    input_cost_per_character                  numeric,
    output_cost_per_character                 numeric,
    input_cost_per_token_batches              numeric,
    output_cost_per_token_batches             numeric,
    input_cost_per_token_priority             numeric,
    output_cost_per_token_priority            numeric,
    input_cost_per_token_flex                 numeric,
    output_cost_per_token_flex                numeric,
    max_input_tokens                          bigint,
    max_output_tokens                         bigint,
    max_tokens                                bigint,
    supports_function_calling                 boolean,
    supports_vision                           boolean,
    supports_reasoning                        boolean,
    supports_prompt_caching                   boolean,
    supports_response_schema                  boolean,
    supports_audio_input                      boolean,
    supports_audio_output                     boolean,
    features                                  text[] NOT NULL DEFAULT '{}',
    deprecation_date                          date,
    raw                                       jsonb NOT NULL,
    valid_from                                timestamptz NOT NULL,
    retired_at                                timestamptz,
    updated_at                                timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX models_name_trgm ON models USING gin (name gin_trgm_ops);
CREATE INDEX models_provider ON models (provider, name);

-- Price history: usage without an emitter cost is priced as the catalog was at occurred_at.
CREATE TABLE model_price_history (
    model       text NOT NULL,
    valid_from  timestamptz NOT NULL,
    raw         jsonb NOT NULL,
    PRIMARY KEY (model, valid_from)
);

CREATE TABLE model_aliases (
    alias       text PRIMARY KEY,
    model       text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX model_aliases_model ON model_aliases (model);

-- Keys ----------------------------------------------------------------------
CREATE TABLE api_keys (
    id              uuid PRIMARY KEY,
    key_hash        text NOT NULL UNIQUE CHECK (key_hash ~ '^[0-9a-f]{64}$'),
    name            text NOT NULL,
    owner           text,
    enabled         boolean NOT NULL DEFAULT true,
    expires_at      timestamptz,
    allowed_models  text[] NOT NULL DEFAULT '{}',
    max_budget_usd  numeric CHECK (max_budget_usd IS NULL OR max_budget_usd >= 0),
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    revoked_at      timestamptz
);
CREATE INDEX api_keys_owner ON api_keys (owner, id);

CREATE TABLE key_metadata (
    api_key_id  uuid NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    key         text NOT NULL,
    value       text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (api_key_id, key)
);

-- Usage ---------------------------------------------------------------------
-- Partitioned by month of occurred_at; the projector creates partitions as events need them.
-- A unique constraint on a partitioned table must include the partition key, so dedup is on
-- (event_id, occurred_at): a re-sent event carries the same envelope, hence the same month.
CREATE TABLE usage_records (
    event_id                     uuid NOT NULL,
    occurred_at                  timestamptz NOT NULL,
    request_id                   text NOT NULL,
    api_key_id                   uuid NOT NULL,
    model                        text NOT NULL,
    requested_model              text,
    provider                     text,
    prompt_tokens                bigint NOT NULL DEFAULT 0,
    completion_tokens            bigint NOT NULL DEFAULT 0,
    cache_read_input_tokens      bigint NOT NULL DEFAULT 0,
    cache_creation_input_tokens  bigint NOT NULL DEFAULT 0,
    reasoning_tokens             bigint NOT NULL DEFAULT 0,
    audio_input_tokens           bigint NOT NULL DEFAULT 0,
    audio_output_tokens          bigint NOT NULL DEFAULT 0,
    images                       bigint NOT NULL DEFAULT 0,
    input_seconds                numeric NOT NULL DEFAULT 0,
    output_seconds               numeric NOT NULL DEFAULT 0,
    characters                   bigint NOT NULL DEFAULT 0,
    latency_ms                   bigint,
    status                       text NOT NULL CHECK (status IN ('success', 'error')),
    error_code                   text,
    cost_usd                     numeric,
    cost_source                  text NOT NULL CHECK (cost_source IN ('emitter', 'catalog', 'unpriced')),
    metadata                     jsonb NOT NULL DEFAULT '{}'::jsonb,
    source                       text NOT NULL,
    projected_at                 timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, occurred_at)
) PARTITION BY RANGE (occurred_at);
-- Keyset pagination by key or by model over a time range: (filter, occurred_at, event_id).
CREATE INDEX usage_records_key_time ON usage_records (api_key_id, occurred_at, event_id);
CREATE INDEX usage_records_model_time ON usage_records (model, occurred_at, event_id);

CREATE TABLE monthly_usage_summaries (
    api_key_id                   uuid NOT NULL,
    model                        text NOT NULL,
    month                        date NOT NULL,
    provider                     text,
    requests                     bigint NOT NULL DEFAULT 0,
    errors                       bigint NOT NULL DEFAULT 0,
    prompt_tokens                bigint NOT NULL DEFAULT 0,
    completion_tokens            bigint NOT NULL DEFAULT 0,
    cache_read_input_tokens      bigint NOT NULL DEFAULT 0,
    cache_creation_input_tokens  bigint NOT NULL DEFAULT 0,
    reasoning_tokens             bigint NOT NULL DEFAULT 0,
    audio_input_tokens           bigint NOT NULL DEFAULT 0,
    audio_output_tokens          bigint NOT NULL DEFAULT 0,
    images                       bigint NOT NULL DEFAULT 0,
    input_seconds                numeric NOT NULL DEFAULT 0,
    output_seconds               numeric NOT NULL DEFAULT 0,
    characters                   bigint NOT NULL DEFAULT 0,
    cost_usd                     numeric NOT NULL DEFAULT 0,
    unpriced_requests            bigint NOT NULL DEFAULT 0,
    first_occurred_at            timestamptz NOT NULL,
    last_occurred_at             timestamptz NOT NULL,
    updated_at                   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (api_key_id, month, model)
);
-- Reports over one month by model or provider.
CREATE INDEX monthly_usage_summaries_month ON monthly_usage_summaries (month, model);

-- Projection machinery --------------------------------------------------------
CREATE TABLE projection_checkpoints (
    projection   text NOT NULL,
    topic        text NOT NULL,
    partition    integer NOT NULL,
    next_offset  bigint NOT NULL CHECK (next_offset >= 0),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, topic, partition)
);

CREATE TABLE dead_letters (
    id           bigserial PRIMARY KEY,
    projection   text NOT NULL,
    topic        text NOT NULL,
    partition    integer NOT NULL,
    "offset"     bigint NOT NULL,
    key          bytea,
    value        bytea,
    headers      jsonb NOT NULL DEFAULT '[]'::jsonb,
    error_kind   text NOT NULL,
    error        text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    replayed_at  timestamptz,
    UNIQUE (projection, topic, partition, "offset")
);
CREATE INDEX dead_letters_pending ON dead_letters (projection, id) WHERE replayed_at IS NULL;
