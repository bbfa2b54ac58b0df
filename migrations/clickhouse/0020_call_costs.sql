-- Cost fold: every call row carries its cost (exact USD), whether it was
-- priced, and the id of the PostgreSQL price version used (0 = none).
-- Unpriced rows have cost 0 and priced 0; reports show them as "unpriced",
-- never as zero cost. One statement, so the three columns appear together
-- (18.16 has no ADD COLUMN IF NOT EXISTS; the runner treats "already exists"
-- as applied).
ALTER TABLE calls
    ADD COLUMN cost Decimal(38, 12) DEFAULT toDecimal128(0, 12),
    ADD COLUMN priced UInt8 DEFAULT 0,
    ADD COLUMN price_version UInt64 DEFAULT 0;
