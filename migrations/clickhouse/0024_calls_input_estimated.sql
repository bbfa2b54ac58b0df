-- Whether a call's `input_tokens` is an estimate rather than the provider's
-- count (`call.usage.input_tokens_estimated`, docs/proxy.md "What a record
-- says"): an OpenAI stream that is cancelled, cut or fails before its usage
-- chunk was billed for its prompt, but only the proxy's estimate of it is
-- known. Rows written before this column read 0 (their input was never
-- estimated: it was recorded as reported, or as 0 when the report was lost).
-- 18.16 has no ADD COLUMN IF NOT EXISTS; the runner treats "already exists"
-- as applied (see 0020).
ALTER TABLE calls
    ADD COLUMN input_tokens_estimated UInt8 DEFAULT 0;
