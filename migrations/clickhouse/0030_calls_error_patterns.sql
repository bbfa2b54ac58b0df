-- The error-pattern and recovery columns of a call attempt
-- (docs/error-patterns.md, "Recovery facts"), filled by the calls fold from
-- the event (processors/src/folds/calls/pattern.rs):
--   error_signature          the error's signature id (0: no error)
--   error_template           its masked message
--   error_variables          the masked parts, in order
--   recovery_sequence        the attempt's position in its call, from 1
--   recovery_wait_ms         wait before the attempt
--   recovery_strategy        first | retry | fallback_model | fallback_provider
--   recovery_from_signature  signature of the call's first failure (0: first attempt)
--   recovery_from_provider   provider and model of that failed attempt
--   recovery_from_model
--   last_attempt             1 when the attempt's outcome is the call's outcome
-- Rows written before this migration read as single-attempt calls without a
-- signature. 18.16 has no ADD COLUMN IF NOT EXISTS; the runner treats
-- "already exists" as applied (see 0020).
ALTER TABLE calls
    ADD COLUMN error_signature UInt64 DEFAULT 0,
    ADD COLUMN error_template String DEFAULT '',
    ADD COLUMN error_variables Array(String) DEFAULT emptyArrayString(),
    ADD COLUMN recovery_sequence UInt16 DEFAULT 1,
    ADD COLUMN recovery_wait_ms UInt32 DEFAULT 0,
    ADD COLUMN recovery_strategy LowCardinality(String) DEFAULT 'first',
    ADD COLUMN recovery_from_signature UInt64 DEFAULT 0,
    ADD COLUMN recovery_from_provider String DEFAULT '',
    ADD COLUMN recovery_from_model String DEFAULT '',
    ADD COLUMN last_attempt UInt8 DEFAULT 1;
