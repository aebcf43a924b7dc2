-- Upload leases and the object-deletion queue.
--
-- An upload in flight holds a lease that the node running it renews while
-- the client is connected; the sweeper removes only uploads whose lease ran
-- out (their node is gone). Renewal happens every third of the lease, not on
-- every chunk, so this indexed column is rewritten rarely.
ALTER TABLE recordings ADD COLUMN lease_until_ms BIGINT NOT NULL DEFAULT 0;
UPDATE recordings SET lease_until_ms = updated_at_ms + 900000 WHERE status = 'uploading';
DROP INDEX recordings_uploading;
CREATE INDEX recordings_upload_lease ON recordings (lease_until_ms) WHERE status = 'uploading';

-- Recordings whose objects must go. A row is queued in the same transaction
-- that removes an uncommitted recording's catalog row, so the objects are
-- deleted only once the catalog says the recording is not committed, and a
-- crash between the two leaves work for the sweeper, never an untracked
-- object.
CREATE TABLE object_deletions (
    tenant_id     TEXT NOT NULL,
    recording_id  TEXT NOT NULL,
    reason        TEXT NOT NULL,
    queued_at_ms  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, recording_id)
);
