-- Which catalog entry priced the call, as `provider/model` ('' when
-- unpriced): an event's provider and model find their price through
-- provider aliases and dated-snapshot → family resolution (docs/cost.md),
-- so the entry can differ from the call's own names. The version id
-- (`price_version`) identifies it too, but only with the catalog at hand;
-- this reads on the row. 18.16 has no ADD COLUMN IF NOT EXISTS; the runner
-- treats "already exists" as applied.
ALTER TABLE calls ADD COLUMN priced_as String DEFAULT '';
