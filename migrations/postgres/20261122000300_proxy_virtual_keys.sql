-- Virtual keys for the proxy: the tenant a key's calls are recorded under
-- (org_id already exists) and the models it may use (NULL = any).
ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS team_id TEXT;
ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS user_id TEXT;
ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS allowed_models TEXT[];
