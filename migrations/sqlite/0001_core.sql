-- Core catalog. Times are Unix milliseconds (INTEGER) so one schema shape
-- serves PostgreSQL and SQLite. No column ever holds plaintext audio or a
-- plaintext data key; labels are sealed under the recording's metadata key.

CREATE TABLE tenants (
    tenant_id      TEXT PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,
    created_at_ms  INTEGER NOT NULL
);

-- Every KMS key a tenant has ever used. Exactly one is active.
CREATE TABLE tenant_keys (
    tenant_id        TEXT NOT NULL REFERENCES tenants (tenant_id),
    key_arn          TEXT NOT NULL,
    region           TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('active', 'retired')),
    activated_at_ms  INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, key_arn)
);
CREATE UNIQUE INDEX tenant_keys_one_active ON tenant_keys (tenant_id) WHERE status = 'active';

CREATE TABLE recordings (
    tenant_id          TEXT NOT NULL REFERENCES tenants (tenant_id),
    recording_id       TEXT NOT NULL,
    external_call_id   TEXT NOT NULL,
    status             TEXT NOT NULL CHECK (status IN ('uploading', 'complete')),
    format_version     INTEGER NOT NULL,
    key_arn            TEXT NOT NULL,
    kms_region         TEXT NOT NULL,
    wrapped_key        BLOB NOT NULL,
    encryption_context TEXT NOT NULL,
    salt               BLOB NOT NULL,
    nonce_prefix       BLOB NOT NULL,
    commitment         BLOB NOT NULL,
    chunk_size         INTEGER NOT NULL,
    chunk_count        INTEGER,
    size_bytes         INTEGER,
    sha256             TEXT,
    container          TEXT,
    codec              TEXT,
    sample_rate_hz     INTEGER,
    channels           INTEGER,
    duration_ms        INTEGER,
    audio_warning      TEXT,
    labels_sealed      BLOB,
    start_time_ms      INTEGER,
    created_at_ms      INTEGER NOT NULL,
    updated_at_ms      INTEGER NOT NULL,
    completed_at_ms    INTEGER,
    PRIMARY KEY (tenant_id, recording_id)
);
-- Idempotency: one complete recording per (tenant, call id). Concurrent
-- attempts may upload side by side; the first commit wins, the others find it.
CREATE UNIQUE INDEX recordings_call_complete ON recordings (tenant_id, external_call_id) WHERE status = 'complete';
CREATE INDEX recordings_uploading ON recordings (updated_at_ms) WHERE status = 'uploading';

CREATE TABLE chunks (
    tenant_id       TEXT NOT NULL,
    recording_id    TEXT NOT NULL,
    chunk_index     INTEGER NOT NULL,
    plaintext_size  INTEGER NOT NULL,
    sealed_size     INTEGER NOT NULL,
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
    created_at_ms  INTEGER NOT NULL,
    revoked_at_ms  INTEGER
);
