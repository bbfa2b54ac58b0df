-- Alerting (docs/alerting.md): rules, silences and notification receivers,
-- each scoped to one org. `version` is the optimistic-concurrency token: an
-- update names the version it read and is refused (409) when another
-- change came first. The contract validates every field before it gets
-- here; the checks below only guard against other writers.

CREATE TABLE IF NOT EXISTS alert_receivers (
    id                    BIGSERIAL PRIMARY KEY,
    org_id                TEXT NOT NULL,
    name                  TEXT NOT NULL,
    kind                  TEXT NOT NULL CHECK (kind IN ('webhook', 'slack', 'alertmanager')),
    url                   TEXT NOT NULL,
    -- Write-only: the delivery signs with it; no read path returns it.
    signing_secret        TEXT,
    group_by              TEXT[] NOT NULL DEFAULT '{}',
    group_wait_secs       INTEGER NOT NULL,
    group_interval_secs   INTEGER NOT NULL,
    repeat_interval_secs  INTEGER NOT NULL,
    version               BIGINT NOT NULL DEFAULT 1,
    created_at            TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at            TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (org_id, name)
);

CREATE TABLE IF NOT EXISTS alert_rules (
    id          BIGSERIAL PRIMARY KEY,
    org_id      TEXT NOT NULL,
    name        TEXT NOT NULL,
    enabled     BOOLEAN NOT NULL,
    -- The whole rule as `tollgate_contract::alerts::RuleSpec` serializes it
    -- (signal, labels, annotations, severity, receivers, for_secs).
    spec        JSONB NOT NULL,
    version     BIGINT NOT NULL DEFAULT 1,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (org_id, name)
);
CREATE INDEX IF NOT EXISTS alert_rules_enabled ON alert_rules (enabled, id);

CREATE TABLE IF NOT EXISTS alert_silences (
    id          BIGSERIAL PRIMARY KEY,
    org_id      TEXT NOT NULL,
    matchers    JSONB NOT NULL,
    starts_at   TIMESTAMPTZ NOT NULL,
    ends_at     TIMESTAMPTZ NOT NULL CHECK (ends_at > starts_at),
    created_by  TEXT NOT NULL,
    comment     TEXT NOT NULL,
    -- Set when a user ended the silence early (ends_at moved to then).
    expired_by  TEXT,
    version     BIGINT NOT NULL DEFAULT 1,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS alert_silences_org_ends ON alert_silences (org_id, ends_at);
