-- Signed playback URLs (the HTTP side door). A URL carries the tenant's
-- revocation epoch at issue; `callvault urls revoke` bumps it, and every
-- URL issued before stops working at once on every node (each request
-- reads the epoch with the issuing token's state, in one query).
ALTER TABLE tenants ADD COLUMN url_epoch BIGINT NOT NULL DEFAULT 0;
