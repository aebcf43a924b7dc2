-- Token lifecycle: optional expiry, when a token was last used, and the
-- lookups `token list` and the revocation poller make.
--
-- last_used_at_ms is written at most once a minute per token (and only
-- when a node's token cache misses), so authentication does not turn
-- every request into a write.
ALTER TABLE api_tokens ADD COLUMN expires_at_ms INTEGER;
ALTER TABLE api_tokens ADD COLUMN last_used_at_ms INTEGER;
CREATE INDEX api_tokens_tenant ON api_tokens (tenant_id, created_at_ms);
CREATE INDEX api_tokens_revoked ON api_tokens (revoked_at_ms) WHERE revoked_at_ms IS NOT NULL;
