-- The alert evaluator's state (docs/alerting.md, "The evaluator").
--
-- alert_state: where each alert stands (one alert per rule for now; the
-- fingerprint is of the rule's labels). `phase` is
-- tollgate_contract::alert_lifecycle::Phase as JSON, stepped with
-- Phase::step at every evaluation. Written only inside a transaction that
-- also passed the lease's fence check, so a replica that lost the lease
-- cannot overwrite its successor's state.
CREATE TABLE IF NOT EXISTS alert_state (
    rule_id BIGINT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    phase JSONB NOT NULL,
    evaluated_at TIMESTAMPTZ NOT NULL,
    value TEXT,
    fence_token BIGINT NOT NULL,
    -- The rule as last evaluated (its RuleSpec), so an alert whose rule is
    -- deleted or disabled while pending or firing can still be ended with
    -- its labels and receivers.
    rule_spec JSONB NOT NULL
);

-- alert_outbox: every transition, written in the same transaction as the
-- state it leads to, then published from here (the ClickHouse timeline row,
-- the notifications) and marked done. A kill -9 between the state write and
-- the publishing loses nothing: the next evaluator publishes what is not
-- marked; it may publish twice what was published but not marked, with the
-- same ids (event_id, notification id), which is how a duplicate shows.
CREATE TABLE IF NOT EXISTS alert_outbox (
    id BIGSERIAL PRIMARY KEY,
    event_id UUID NOT NULL UNIQUE,
    rule_id BIGINT NOT NULL,
    org_id TEXT NOT NULL,
    at TIMESTAMPTZ NOT NULL,
    from_state TEXT NOT NULL,
    to_state TEXT NOT NULL,
    transition JSONB NOT NULL,
    -- The Notification (firing/resolved of a rule with receivers), or null.
    notification JSONB,
    -- Receiver ids still to deliver to; emptied as outcomes come back.
    pending_receivers BIGINT[] NOT NULL DEFAULT '{}',
    silenced BOOLEAN NOT NULL DEFAULT false,
    row_written_at TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS alert_outbox_open
    ON alert_outbox (id) WHERE row_written_at IS NULL OR cardinality(pending_receivers) > 0;
