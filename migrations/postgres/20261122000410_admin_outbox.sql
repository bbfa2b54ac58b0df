-- Transactional outbox of control-plane (`admin.*`) events. A change to the
-- price catalog or to budgets inserts its event here in the same transaction
-- as the change, so the change and its audit record cannot diverge; the relay
-- (`processors/src/outbox.rs`, run by `tollgate process`, `tollgate api` and
-- at the end of each changing CLI command) produces unpublished rows to
-- `tollgate.events` in id order and then sets `published_at`.
--
-- `event` is the whole contract event (schema version 1), its UUIDv7
-- `event_id` fixed at insert, so a row published twice (a relay crash between
-- Kafka's acknowledgement and the update) is the same event twice.
-- Published rows are kept: admin changes are rare, and the rows are the
-- record of what was sent (the budget watcher reads recent deletions here).
CREATE TABLE IF NOT EXISTS admin_outbox (
    id            BIGSERIAL PRIMARY KEY,
    event         JSONB NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    published_at  TIMESTAMPTZ,
    -- Failed produce attempts and the last reason, for `tollgate outbox status`.
    attempts      INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT,
    -- Set when the row can never be produced (not a valid event, too large
    -- for the broker): it is set aside instead of blocking every later row.
    abandoned_at  TIMESTAMPTZ
);

-- The relay's queue: unpublished rows in id order.
CREATE INDEX IF NOT EXISTS admin_outbox_pending
    ON admin_outbox (id) WHERE published_at IS NULL AND abandoned_at IS NULL;

-- Recent changes of one kind (the watcher's "budgets deleted this month").
CREATE INDEX IF NOT EXISTS admin_outbox_kind
    ON admin_outbox ((event->>'kind'), created_at);
