-- Key lifecycle (BYOK): the key history gains a state machine, asymmetric
-- (write-only) keys with their pinned public key, multi-Region replicas and
-- the last health check; recordings name their wrap algorithm; rewrap jobs
-- move wrapped data keys between keys without touching audio.

-- A table rebuild, not ALTER ... CHECK, so that one statement list serves
-- PostgreSQL and SQLite (which cannot alter a constraint).
CREATE TABLE tenant_keys_v2 (
    tenant_id             TEXT NOT NULL REFERENCES tenants (tenant_id),
    key_arn               TEXT NOT NULL,
    region                TEXT NOT NULL,
    -- active: wraps new recordings (exactly one per tenant);
    -- previous: still protects older recordings;
    -- retired: protects nothing (checked when retiring).
    status                TEXT NOT NULL CHECK (status IN ('active', 'previous', 'retired')),
    key_spec              TEXT NOT NULL DEFAULT 'SYMMETRIC_DEFAULT',
    -- DER SubjectPublicKeyInfo of an asymmetric key, pinned at registration.
    public_key            BLOB,
    -- JSON object: region -> replica key ARN (multi-Region keys).
    replicas              TEXT NOT NULL DEFAULT '{}',
    registered_at_ms      INTEGER NOT NULL,
    activated_at_ms       INTEGER NOT NULL,
    deactivated_at_ms     INTEGER,
    retired_at_ms         INTEGER,
    health_state          TEXT,
    health_detail         TEXT,
    deletion_date_ms      INTEGER,
    health_checked_at_ms  INTEGER,
    PRIMARY KEY (tenant_id, key_arn)
);
INSERT INTO tenant_keys_v2 (tenant_id, key_arn, region, status, registered_at_ms, activated_at_ms)
    SELECT tenant_id, key_arn, region,
           CASE WHEN status = 'active' THEN 'active' ELSE 'previous' END,
           activated_at_ms, activated_at_ms
    FROM tenant_keys;
DROP TABLE tenant_keys;
ALTER TABLE tenant_keys_v2 RENAME TO tenant_keys;
CREATE UNIQUE INDEX tenant_keys_one_active ON tenant_keys (tenant_id) WHERE status = 'active';

-- Key-rotation policy: the active key should be younger than this.
ALTER TABLE tenants ADD COLUMN key_rotation_days INTEGER NOT NULL DEFAULT 365;

ALTER TABLE recordings ADD COLUMN wrap_algorithm TEXT NOT NULL DEFAULT 'SYMMETRIC_DEFAULT';
-- 1 while a legal hold applies (set by the compliance service).
ALTER TABLE recordings ADD COLUMN legal_hold INTEGER NOT NULL DEFAULT 0;
CREATE INDEX recordings_by_key ON recordings (tenant_id, key_arn, recording_id);

CREATE TABLE rewrap_jobs (
    job_id           TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL REFERENCES tenants (tenant_id),
    source_arn       TEXT NOT NULL,
    destination_arn  TEXT NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'cancelled')),
    max_kms_per_sec  INTEGER NOT NULL,
    total            INTEGER NOT NULL,
    rewrapped        INTEGER NOT NULL DEFAULT 0,
    error            TEXT,
    -- Fixed one-second window of the KMS request budget, shared by every
    -- node working on the job.
    budget_window_ms INTEGER NOT NULL DEFAULT 0,
    budget_used      INTEGER NOT NULL DEFAULT 0,
    created_at_ms    INTEGER NOT NULL,
    updated_at_ms    INTEGER NOT NULL,
    finished_at_ms   INTEGER
);
-- One running job per tenant: two jobs could otherwise chase each other's keys.
CREATE UNIQUE INDEX rewrap_jobs_one_running ON rewrap_jobs (tenant_id) WHERE status = 'running';
