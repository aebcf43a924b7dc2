-- Core catalog. Times are Unix milliseconds (BIGINT) so one schema shape
-- serves PostgreSQL and SQLite. No column ever holds plaintext audio or a
-- plaintext data key; labels are sealed under the recording's metadata key.

CREATE TABLE tenants (
    tenant_id      TEXT PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,
    created_at_ms  BIGINT NOT NULL
);

-- Every KMS key a tenant has ever used. Exactly one is active.
CREATE TABLE tenant_keys (
    tenant_id        TEXT NOT NULL REFERENCES tenants (tenant_id),
    key_arn          TEXT NOT NULL,
    region           TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('active', 'retired')),
    activated_at_ms  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, key_arn)
);
CREATE UNIQUE INDEX tenant_keys_one_active ON tenant_keys (tenant_id) WHERE status = 'active';

CREATE TABLE recordings (
    tenant_id          TEXT NOT NULL REFERENCES tenants (tenant_id),
    recording_id       TEXT NOT NULL,
    external_call_id   TEXT NOT NULL,
    status             TEXT NOT NULL CHECK (status IN ('uploading', 'complete')),
    format_version     BIGINT NOT NULL,
    key_arn            TEXT NOT NULL,
    kms_region         TEXT NOT NULL,
    wrapped_key        BYTEA NOT NULL,
    encryption_context TEXT NOT NULL,
    salt               BYTEA NOT NULL,
    nonce_prefix       BYTEA NOT NULL,
    commitment         BYTEA NOT NULL,
    chunk_size         BIGINT NOT NULL,
    chunk_count        BIGINT,
    size_bytes         BIGINT,
    sha256             TEXT,
    container          TEXT,
    codec              TEXT,
    sample_rate_hz     BIGINT,
    channels           BIGINT,
    duration_ms        BIGINT,
    audio_warning      TEXT,
    labels_sealed      BYTEA,
    start_time_ms      BIGINT,
    created_at_ms      BIGINT NOT NULL,
    updated_at_ms      BIGINT NOT NULL,
    completed_at_ms    BIGINT,
    PRIMARY KEY (tenant_id, recording_id)
);
-- Idempotency: one complete recording per (tenant, call id). Concurrent
-- attempts may upload side by side; the first commit wins, the others find it.
CREATE UNIQUE INDEX recordings_call_complete ON recordings (tenant_id, external_call_id) WHERE status = 'complete';
CREATE INDEX recordings_uploading ON recordings (updated_at_ms) WHERE status = 'uploading';

CREATE TABLE chunks (
    tenant_id       TEXT NOT NULL,
    recording_id    TEXT NOT NULL,
    chunk_index     BIGINT NOT NULL,
    plaintext_size  BIGINT NOT NULL,
    sealed_size     BIGINT NOT NULL,
    sealed_sha256   TEXT NOT NULL,
    object_key      TEXT NOT NULL,
    PRIMARY KEY (tenant_id, recording_id, chunk_index),
    FOREIGN KEY (tenant_id, recording_id) REFERENCES recordings (tenant_id, recording_id) ON DELETE CASCADE
);

-- Bearer tokens, stored as SHA-256 of the token (tokens carry 256 bits of
-- randomness, so a fast hash is sufficient and lookup stays O(1)).
CREATE TABLE api_tokens (
    token_id       TEXT PRIMARY KEY,
    token_hash     TEXT NOT NULL UNIQUE,
    tenant_id      TEXT NOT NULL REFERENCES tenants (tenant_id),
    role           TEXT NOT NULL CHECK (role IN ('ingest', 'supervisor', 'compliance', 'admin')),
    created_at_ms  BIGINT NOT NULL,
    revoked_at_ms  BIGINT
);
