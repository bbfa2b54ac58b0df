-- The audit search's ordered index (issue 17; docs/audit.md, "Search").
--
-- `audit_chain` is ordered for the chain (chain_id, seq), so a search by org
-- and time read every entry, event included (199 MB for 1M entries). This
-- table holds only what a search filters and orders on, one row per entry,
-- ordered by org and time: a search reads its page's positions here (a
-- narrow read of the org's time range), then those entries' columns from
-- `audit_chain` by its primary key (chain_id, seq).
--
-- Filled by a materialized view, not by the audit fold: the view's rows are
-- written by the same INSERT as the entries, before ClickHouse acknowledges
-- it, so no processor crash or retry can separate them, a retry that finds
-- the entries stored (docs/processor.md, "Effectively-once", step 6) has
-- nothing to add to the index either, and on a cluster a block dropped by
-- replicated deduplication takes its view's rows with it. A second insert by
-- the fold would be a second effect the positions in `audit_chain` do not
-- cover: a crash between the two would leave the index short or, written
-- first, doubled. No PARTITION BY, like `audit_chain`: each insert is one
-- part.
--
-- Personal data: `user_id` is here; erasure (docs/audit.md, "Erasure")
-- empties it in this table with the entry's, so it is not in the sorting
-- key (a mutation cannot update a key column).
CREATE TABLE IF NOT EXISTS audit_search
(
    org_id String,
    occurred_at_ms UInt64,
    chain_id String,
    seq UInt64,
    team_id String,
    user_id String,
    api_key_id String,
    provider String,
    model String,
    outcome String,
    decision String,
    kind String
)
ENGINE = MergeTree()
ORDER BY (org_id, occurred_at_ms, chain_id, seq);

-- The view first: from here on every new entry reaches the index through
-- it, and the backfill below adds only the entries it does not hold yet.
CREATE MATERIALIZED VIEW IF NOT EXISTS audit_search_mv TO audit_search AS
SELECT
    org_id,
    occurred_at_ms,
    chain_id,
    seq,
    team_id,
    user_id,
    api_key_id,
    provider,
    model,
    outcome,
    decision,
    kind
FROM audit_chain;

-- Backfill: every entry stored before the view, once. Only positions the
-- index does not hold are copied, so applying the file again (it is not
-- transactional) never indexes an entry twice, and entries an older
-- processor appended between the two statements (their view rows are in
-- the index already) are not copied again. Like every migration, apply it
-- before starting processors of this version: an insert running during
-- this very statement could be read here before its view rows land.
INSERT INTO audit_search (org_id, occurred_at_ms, chain_id, seq, team_id, user_id, api_key_id, provider, model, outcome, decision, kind)
SELECT org_id, occurred_at_ms, chain_id, seq, team_id, user_id, api_key_id, provider, model, outcome, decision, kind
FROM audit_chain
WHERE (chain_id, seq) NOT IN (SELECT chain_id, seq FROM audit_search);
