-- Leases with fencing tokens (ingest/control/src/lease.rs): which one of
-- several replicas does a singleton job (the alert evaluator), and a token
-- that grows with every new holder so that a write by a holder that lost
-- the lease (paused, partitioned) is refused (`docs/alerting.md`, "One
-- evaluator"). Time is the database's clock only, so replicas' clocks do
-- not matter.
CREATE TABLE IF NOT EXISTS leases (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    -- Incremented each time the lease changes hands; never reused.
    token       BIGINT NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL,
    acquired_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
