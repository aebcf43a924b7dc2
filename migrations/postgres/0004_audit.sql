-- The audit trail: per tenant, an append-only log of events hashed into an
-- RFC 6962 Merkle tree, with signed checkpoints. Nothing updates or deletes
-- these rows; `callvault audit verify` detects it if anything does.

-- The next index of each tenant's log. Taking this row in the transaction
-- that records a change numbers the events gaplessly: a rolled-back change
-- rolls its number back with it.
CREATE TABLE audit_heads (
    tenant_id  TEXT PRIMARY KEY,
    size       BIGINT NOT NULL
);

CREATE TABLE audit_events (
    tenant_id   TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    time_ms     BIGINT NOT NULL,
    action      TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    actor_id    TEXT NOT NULL,
    -- The event's canonical encoding (docs/AUDIT.md): what the leaf hash
    -- covers. The columns above are copies for queries.
    event       TEXT NOT NULL,
    leaf_hash   BYTEA NOT NULL,
    -- Ed25519 signature by the deployment's audit key over the leaf hash
    -- (docs/AUDIT.md): an edited or inserted event cannot carry a valid one.
    signature   BYTEA NOT NULL,
    PRIMARY KEY (tenant_id, seq)
);
CREATE INDEX audit_events_time ON audit_events (tenant_id, time_ms);

-- Which recordings an event touched, for `audit log --recording`.
CREATE TABLE audit_event_recordings (
    tenant_id     TEXT NOT NULL,
    recording_id  TEXT NOT NULL,
    seq           BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, recording_id, seq)
);

-- Signed checkpoints (C2SP tlog-checkpoint in a signed note).
CREATE TABLE audit_checkpoints (
    tenant_id      TEXT NOT NULL,
    size           BIGINT NOT NULL,
    root_hash      BYTEA NOT NULL,
    -- The tree's compact range (its perfect-subtree peaks, concatenated),
    -- from which the next checkpoint continues without rereading the log.
    peaks          BYTEA NOT NULL,
    note           TEXT NOT NULL,
    created_at_ms  BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, size)
);
