-- Entry version 2 (docs/audit.md, "Erasure"): a new entry's hash commits to
-- its personal fields (user_id and the event) only through a salted hash,
-- `personal_commitment` = SHA-256(salt ‖ {"event","user_id"}), so erasing a
-- user overwrites `user_id`, `event_json` and `salt` and the entry still
-- verifies. Rows written before have v = 1 and empty new columns, and are
-- verified as before. 18.16 has no ADD COLUMN IF NOT EXISTS: one statement
-- adds every column, and the runner treats "already exists" as applied.
ALTER TABLE audit_chain
    ADD COLUMN v UInt8 DEFAULT 1,
    ADD COLUMN salt String,
    ADD COLUMN personal_commitment String;
