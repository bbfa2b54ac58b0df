-- Alert notifications that could not be delivered (docs/alerting-delivery.md).
-- A delivery worker writes a row when a receiver still fails after its last
-- retry, refuses the request for good (a 4xx other than 408/429), or its
-- queue is full; the Alerts page lists them. Delivery is at least once: a
-- notification is delivered only after a 2xx, so a row here means the
-- receiver never acknowledged it.
--
-- `delivery_id` is the request's stable id (the X-Tollgate-Notification-Id
-- header: a notification's own id, or the batch id over several). Writing
-- the same failed delivery twice (a re-send after a crash that fails again)
-- updates the row instead of adding one.
CREATE TABLE IF NOT EXISTS alert_dead_letters (
    receiver_id       UUID NOT NULL,
    receiver_kind     TEXT NOT NULL,
    delivery_id       UUID NOT NULL,
    -- The notification ids the request carried, and their org (for the page's
    -- org scope).
    notification_ids  UUID[] NOT NULL,
    org_id            TEXT NOT NULL,
    -- The notifications as they were to be sent, so an operator can re-send.
    payload           JSONB NOT NULL,
    attempts          INTEGER NOT NULL,
    last_error        TEXT NOT NULL,
    failed_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (receiver_id, delivery_id)
);

-- The page lists the newest first, per org.
CREATE INDEX IF NOT EXISTS alert_dead_letters_recent
    ON alert_dead_letters (org_id, failed_at DESC);
