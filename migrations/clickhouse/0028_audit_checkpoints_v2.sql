-- Checkpoint version 2 (docs/audit.md, "Checkpoints"): besides the segment's
-- Merkle root, a checkpoint signs the root of the whole chain prefix
-- 1..=to_seq (`tree_root`) and the org and team of its newest entry, and
-- carries the RFC 9162 consistency proof from the previous checkpoint's tree
-- (`consistency`, hex hashes, not signed: it is checked against the two
-- signed roots). Rows written before have v = 1 and empty new columns, and
-- are verified as before.
-- 18.16 has no ADD COLUMN IF NOT EXISTS: one statement adds every column,
-- and the runner treats "already exists" as applied (see 0020).
ALTER TABLE audit_checkpoints
    ADD COLUMN v UInt8 DEFAULT 1,
    ADD COLUMN tree_root String,
    ADD COLUMN org_id String,
    ADD COLUMN team_id String,
    ADD COLUMN consistency Array(String);
