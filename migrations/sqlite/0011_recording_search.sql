-- ListRecordings sorts a tenant's committed recordings by when the call
-- started (creation time for a recording without a start time) or by when
-- it was created, newest first by default, and pages by (sort value,
-- recording id): one index range per page for each order.
CREATE INDEX recordings_by_start ON recordings (tenant_id, (COALESCE(start_time_ms, created_at_ms)), recording_id) WHERE status = 'complete';
CREATE INDEX recordings_by_created ON recordings (tenant_id, created_at_ms, recording_id) WHERE status = 'complete';
