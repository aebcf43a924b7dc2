-- The decoded layout of a recording (`docs/FORMAT.md`, "Decoded
-- rendition"): frames, rate and channels as a full decode found them, which
-- is what its WAV rendition holds. The peaks job records them with the
-- peaks; NULL until then, and for formats nothing here decodes.
ALTER TABLE recordings ADD COLUMN pcm_frames BIGINT;
ALTER TABLE recordings ADD COLUMN pcm_rate_hz INTEGER;
ALTER TABLE recordings ADD COLUMN pcm_channels SMALLINT;
-- Peaks computed before this migration have no layout, and the peaks job
-- now reads recordings through a seekable reader (an MP4 whose index
-- follows the audio decodes too): every recording is decoded again.
UPDATE recordings SET peaks_state = 0 WHERE peaks_state <> 0;
