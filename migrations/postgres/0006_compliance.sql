-- Compliance, part 2: retention, legal holds, erasure by crypto-shredding
-- with deletion certificates (SPEC §8).

-- Retention rules per tenant. The rule with an empty label key is the
-- tenant's default period; a rule on a label (`queue=collections`) is more
-- specific and wins over it. No rule at all: recordings are kept until
-- erased on request.
CREATE TABLE retention_rules (
    tenant_id      TEXT NOT NULL REFERENCES tenants (tenant_id),
    label_key      TEXT NOT NULL,
    label_value    TEXT NOT NULL,
    days           BIGINT NOT NULL CHECK (days > 0),
    updated_at_ms  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, label_key, label_value)
);

-- When the recording may be erased (NULL: no retention period applies), and
-- the rule that set it ('' the default, 'k=v' a label rule, NULL none):
-- a policy change re-evaluates recordings by the rule that chose them.
ALTER TABLE recordings ADD COLUMN retain_until_ms BIGINT;
ALTER TABLE recordings ADD COLUMN retention_rule TEXT;
-- The expiry job's scan: due, complete, not held.
CREATE INDEX recordings_due ON recordings (retain_until_ms) WHERE status = 'complete' AND legal_hold = 0;

-- Legal holds. A hold names the recordings it covers (its members, fixed
-- when it is placed); a recording with at least one active hold has
-- recordings.legal_hold = 1, kept in step in the transaction that places or
-- releases a hold.
CREATE TABLE legal_holds (
    tenant_id         TEXT NOT NULL REFERENCES tenants (tenant_id),
    hold_id           TEXT NOT NULL,
    name              TEXT NOT NULL,
    reason            TEXT NOT NULL,
    -- What the hold was placed on, as JSON (ids, call ids, a time window).
    selector          TEXT NOT NULL,
    recording_count   BIGINT NOT NULL,
    placed_by         TEXT NOT NULL,
    placed_at_ms      BIGINT NOT NULL,
    released_by       TEXT,
    release_reason    TEXT,
    released_at_ms    BIGINT,
    PRIMARY KEY (tenant_id, hold_id)
);
-- A name is taken by at most one active hold.
CREATE UNIQUE INDEX legal_holds_active_name ON legal_holds (tenant_id, name) WHERE released_at_ms IS NULL;

CREATE TABLE legal_hold_recordings (
    tenant_id     TEXT NOT NULL,
    hold_id       TEXT NOT NULL,
    recording_id  TEXT NOT NULL,
    PRIMARY KEY (tenant_id, hold_id, recording_id)
);
CREATE INDEX legal_hold_recordings_by_recording ON legal_hold_recordings (tenant_id, recording_id);

-- What remains of an erased recording: enough to answer "erased on DATE,
-- certificate ID" and to name it in its certificate. No key material.
CREATE TABLE erased_recordings (
    tenant_id         TEXT NOT NULL REFERENCES tenants (tenant_id),
    recording_id      TEXT NOT NULL,
    external_call_id  TEXT NOT NULL,
    sha256            TEXT NOT NULL,
    size_bytes        BIGINT NOT NULL,
    ingested_at_ms    BIGINT NOT NULL,
    erased_at_ms      BIGINT NOT NULL,
    key_arn           TEXT NOT NULL,
    chunk_count       BIGINT NOT NULL,
    certificate_id    TEXT NOT NULL,
    PRIMARY KEY (tenant_id, recording_id)
);
CREATE INDEX erased_recordings_by_certificate ON erased_recordings (tenant_id, certificate_id);

-- Deletion certificates. Written in the erasure's transaction as
-- `objects_pending`; completed (verified, signed) once every object of its
-- recordings answers not-found.
CREATE TABLE deletion_certificates (
    tenant_id          TEXT NOT NULL REFERENCES tenants (tenant_id),
    certificate_id     TEXT NOT NULL,
    status             TEXT NOT NULL CHECK (status IN ('objects_pending', 'complete')),
    -- The actor (token id, operator, or the expiry job) and the reason.
    actor              TEXT NOT NULL,
    erase_trigger      TEXT NOT NULL CHECK (erase_trigger IN ('request', 'retention_expiry')),
    reason             TEXT NOT NULL,
    override_retention BIGINT NOT NULL DEFAULT 0,
    recording_count    BIGINT NOT NULL,
    audit_index        BIGINT NOT NULL,
    erased_at_ms       BIGINT NOT NULL,
    completed_at_ms    BIGINT,
    -- The signed certificate (JSON), once complete.
    document           TEXT,
    PRIMARY KEY (tenant_id, certificate_id)
);
CREATE INDEX deletion_certificates_pending ON deletion_certificates (erased_at_ms) WHERE status = 'objects_pending';
