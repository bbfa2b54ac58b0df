-- The W3C span id of the span that made a call (docs/ingest-api.md, "The
-- numbers in an event"): from an OTLP GenAI span, or the client span of a
-- proxied request's traceparent. Empty when unknown; rows written before this
-- migration read as empty. 18.16 has no ADD COLUMN IF NOT EXISTS; the runner
-- treats "already exists" as applied (see 0020).
ALTER TABLE calls ADD COLUMN span_id String DEFAULT '' AFTER trace_id
