-- Data-subject requests: participants (caller and callee numbers, agent and
-- customer ids) and labels become findable by exact match without being
-- stored readable. A recording's participants are sealed under its own
-- metadata key (like its labels), so erasing it shreds them too; the
-- catalog finds recordings by HMAC-SHA256 digests under a per-tenant index
-- key that the tenant's KMS key wraps.

CREATE TABLE tenant_index_keys (
    tenant_id           TEXT PRIMARY KEY REFERENCES tenants (tenant_id),
    key_arn             TEXT NOT NULL,
    kms_region          TEXT NOT NULL,
    wrap_algorithm      TEXT NOT NULL,
    wrapped_key         BYTEA NOT NULL,
    created_at_ms       BIGINT NOT NULL
);

-- Sealed JSON {"participants": {role: identifier}} (nonce || ciphertext || tag).
ALTER TABLE recordings ADD COLUMN participants_sealed BYTEA;
-- 1 once the recording's labels and participants are in recording_index.
-- Existing recordings start at 0: the indexer backfills them.
ALTER TABLE recordings ADD COLUMN indexed BIGINT NOT NULL DEFAULT 0;
CREATE INDEX recordings_unindexed ON recordings (tenant_id, recording_id) WHERE indexed = 0;

-- One row per (recording, digest): HMAC-SHA256(index key, "participant\0"
-- || normalized identifier) or ("label\0" || key || "\0" || value).
CREATE TABLE recording_index (
    tenant_id     TEXT NOT NULL,
    recording_id  TEXT NOT NULL,
    digest        BYTEA NOT NULL,
    PRIMARY KEY (tenant_id, recording_id, digest),
    FOREIGN KEY (tenant_id, recording_id) REFERENCES recordings (tenant_id, recording_id) ON DELETE CASCADE
);
CREATE INDEX recording_index_by_digest ON recording_index (tenant_id, digest, recording_id);

-- The blind-index digest of a label rule's label, so that applying a
-- policy to existing recordings is set-based over recording_index.
ALTER TABLE retention_rules ADD COLUMN label_digest BYTEA;
