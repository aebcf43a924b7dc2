-- Waveform peaks (`docs/FORMAT.md`, "Waveform peaks"): an encrypted sidecar
-- object beside a recording's chunks. 0: not computed yet (the admin nodes'
-- peaks job computes them after ingest and backfills older recordings),
-- 1: stored, 2: none for this format (no decoder, or unreadable audio).
ALTER TABLE recordings ADD COLUMN peaks_state SMALLINT NOT NULL DEFAULT 0;
CREATE INDEX recordings_peaks_pending ON recordings (created_at_ms) WHERE peaks_state = 0 AND status = 'complete';
