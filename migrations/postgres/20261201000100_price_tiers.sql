-- Long-context tiers of a price version (LiteLLM's `*_above_200k_tokens`
-- keys): once a call's input tokens pass `above_tokens` (or reach it, when
-- `inclusive`: xAI's rule), the whole call is billed at the tier's prices; a
-- NULL price is the version's own. Part of the version, so like the version
-- never updated: a change of tiers is a new version. Exact NUMERIC.
CREATE TABLE IF NOT EXISTS price_tiers (
    version_id            BIGINT NOT NULL REFERENCES price_versions (id),
    above_tokens          BIGINT NOT NULL CHECK (above_tokens >= 0),
    inclusive             BOOLEAN NOT NULL DEFAULT false,
    input_per_token       NUMERIC NOT NULL CHECK (input_per_token >= 0),
    output_per_token      NUMERIC CHECK (output_per_token >= 0),
    cache_read_per_token  NUMERIC CHECK (cache_read_per_token >= 0),
    cache_write_per_token NUMERIC CHECK (cache_write_per_token >= 0),
    PRIMARY KEY (version_id, above_tokens)
);
