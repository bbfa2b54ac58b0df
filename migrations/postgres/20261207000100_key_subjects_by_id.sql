-- A key budget or key rate limit names its key by the key's id (the UUID
-- events carry in `api_key_id` and the proxy counts against). Before this
-- change `tollgate budgets set --kind key --id <prefix>` (and the admin
-- API and pages) stored the 8-character prefix that lists show, which no
-- call ever matched: the budget or limit looked set and never applied.
-- Rows naming a key by its prefix now name it by its id, unless the same
-- org already has that budget period or limit by id (then the prefix row
-- stays, as inert as it always was, for an admin to delete).
UPDATE budgets b
   SET subject_id = k.id::text, updated_at = now()
  FROM api_keys k
 WHERE b.subject_kind = 'key'
   AND b.subject_id = k.prefix
   AND NOT EXISTS (
       SELECT 1 FROM budgets o
        WHERE o.subject_kind = 'key' AND o.subject_id = k.id::text
          AND o.period = b.period
          AND COALESCE(o.org_id, '') = COALESCE(b.org_id, ''));

UPDATE rate_limits r
   SET scope_id = k.id::text, updated_at = now()
  FROM api_keys k
 WHERE r.scope_kind = 'key'
   AND r.scope_id = k.prefix
   AND NOT EXISTS (
       SELECT 1 FROM rate_limits o
        WHERE o.scope_kind = 'key' AND o.scope_id = k.id::text
          AND COALESCE(o.org_id, '') = COALESCE(r.org_id, ''));
