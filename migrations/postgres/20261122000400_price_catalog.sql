-- The price catalog: one row per price version of a provider's model. A
-- version is in force from `effective_from` until the next version of the
-- same model; a correction of a version is a new row with the same
-- `effective_from` and a higher id (the highest id wins), so every price the
-- processor ever used stays on record. Prices are USD, exact NUMERIC.
-- NULL cache/reasoning prices mean "billed like plain input/output".
CREATE TABLE IF NOT EXISTS price_versions (
    id                    BIGSERIAL PRIMARY KEY,
    provider              TEXT NOT NULL,
    model                 TEXT NOT NULL,
    effective_from        TIMESTAMPTZ NOT NULL,
    input_per_token       NUMERIC NOT NULL DEFAULT 0 CHECK (input_per_token >= 0),
    output_per_token      NUMERIC NOT NULL DEFAULT 0 CHECK (output_per_token >= 0),
    cache_read_per_token  NUMERIC CHECK (cache_read_per_token >= 0),
    cache_write_per_token NUMERIC CHECK (cache_write_per_token >= 0),
    reasoning_per_token   NUMERIC CHECK (reasoning_per_token >= 0),
    per_image             NUMERIC NOT NULL DEFAULT 0 CHECK (per_image >= 0),
    per_audio_second      NUMERIC NOT NULL DEFAULT 0 CHECK (per_audio_second >= 0),
    per_request           NUMERIC NOT NULL DEFAULT 0 CHECK (per_request >= 0),
    source                TEXT NOT NULL,
    note                  TEXT NOT NULL DEFAULT '',
    created_at            TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS price_versions_model
    ON price_versions (provider, model, effective_from, id);
