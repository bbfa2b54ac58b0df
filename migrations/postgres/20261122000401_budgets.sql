-- Budgets per org / team / user / key, daily or monthly (UTC), hard (deny
-- further calls through a gating decision) or soft (warn only), with the
-- spend thresholds (percent of the limit) that raise a warning.
CREATE TABLE IF NOT EXISTS budgets (
    id            BIGSERIAL PRIMARY KEY,
    subject_kind  TEXT NOT NULL CHECK (subject_kind IN ('org', 'team', 'user', 'key')),
    subject_id    TEXT NOT NULL,
    period        TEXT NOT NULL CHECK (period IN ('daily', 'monthly')),
    limit_usd     NUMERIC NOT NULL CHECK (limit_usd > 0),
    enforcement   TEXT NOT NULL CHECK (enforcement IN ('hard', 'soft')),
    thresholds    INTEGER[] NOT NULL DEFAULT '{50,80,100}',
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (subject_kind, subject_id, period)
);

-- Each threshold warns once per budget period, however many processors
-- watch: the first to insert the row publishes the warning.
CREATE TABLE IF NOT EXISTS budget_alerts (
    budget_id     BIGINT NOT NULL REFERENCES budgets (id) ON DELETE CASCADE,
    period_start  DATE NOT NULL,
    threshold     INTEGER NOT NULL,
    spend_usd     NUMERIC NOT NULL,
    alerted_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (budget_id, period_start, threshold)
);
