//! Domain values to protobuf messages and back: the protobuf spelling of
//! every state lives here and nowhere else.

use std::collections::BTreeMap;

use super::pb;
use crate::audit::event::{ActorKind, Event};
use crate::catalog::{KeyUsage, RecordingRow, RewrapJob, TenantKey};
use crate::domain::{JobStatus, KeyHealthState, KeyStatus};

pub(crate) fn timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

pub(crate) fn to_pb(
    row: &RecordingRow,
    labels: BTreeMap<String, String>,
    participants: BTreeMap<String, String>,
) -> pb::Recording {
    pb::Recording {
        recording_id: row.id.to_string(),
        external_call_id: row.external_call_id.clone(),
        start_time: row.start_time_ms.map(timestamp),
        labels: labels.into_iter().collect(),
        size_bytes: row.size_bytes,
        chunk_count: row.chunk_count,
        chunk_size_bytes: row.chunk_size,
        sha256: row.sha256.clone(),
        audio: Some(pb::AudioMetadata {
            container: row.audio.container.clone(),
            codec: row.audio.codec.clone(),
            sample_rate_hz: row.audio.sample_rate_hz,
            channels: row.audio.channels,
            duration_ms: row.audio.duration_ms,
            warning: row.audio.warning.clone().unwrap_or_default(),
        }),
        kms_key_arn: row.key_arn.to_string(),
        kms_region: row.kms_region.clone(),
        create_time: Some(timestamp(row.created_at_ms)),
        retain_until: row.retain_until_ms.map(timestamp),
        legal_hold: row.legal_hold,
        participants: participants.into_iter().collect(),
    }
}

/// The protobuf enum of each state: here and nowhere else.
fn key_status_pb(s: KeyStatus) -> pb::KeyStatus {
    match s {
        KeyStatus::Active => pb::KeyStatus::Active,
        KeyStatus::Previous => pb::KeyStatus::Previous,
        KeyStatus::Retired => pb::KeyStatus::Retired,
    }
}

pub(crate) fn key_health_pb(s: KeyHealthState) -> pb::KeyState {
    match s {
        KeyHealthState::Enabled => pb::KeyState::Enabled,
        KeyHealthState::Disabled => pb::KeyState::Disabled,
        KeyHealthState::PendingDeletion => pb::KeyState::PendingDeletion,
        KeyHealthState::AccessDenied => pb::KeyState::AccessDenied,
        KeyHealthState::NotFound => pb::KeyState::NotFound,
        KeyHealthState::Unreachable => pb::KeyState::Unreachable,
        KeyHealthState::InvalidState => pb::KeyState::InvalidState,
        KeyHealthState::PublicKeyMismatch => pb::KeyState::PublicKeyMismatch,
    }
}

fn job_status_pb(s: JobStatus) -> pb::JobState {
    match s {
        JobStatus::Running => pb::JobState::Running,
        JobStatus::Succeeded => pb::JobState::Succeeded,
        JobStatus::Failed => pb::JobState::Failed,
        JobStatus::Cancelled => pb::JobState::Cancelled,
    }
}

pub(crate) fn key_to_pb(key: &TenantKey, usage: &KeyUsage) -> pb::TenantKey {
    pb::TenantKey {
        key_arn: key.key_arn.to_string(),
        region: key.region.clone(),
        status: key_status_pb(key.status).into(),
        key_spec: key.key_spec.clone(),
        wrap_algorithm: key.algorithm.as_str().to_owned(),
        replica_key_arns: key
            .replicas
            .iter()
            .map(|(r, a)| (r.clone(), a.to_string()))
            .collect(),
        register_time: Some(timestamp(key.registered_at_ms)),
        activate_time: Some(timestamp(key.activated_at_ms)),
        deactivate_time: key.deactivated_at_ms.map(timestamp),
        retire_time: key.retired_at_ms.map(timestamp),
        recording_count: usage.recordings,
        size_bytes: usage.bytes,
        legal_hold_count: usage.legal_hold,
        health: key.health.as_ref().map(|h| pb::KeyHealthCheck {
            state: key_health_pb(h.state).into(),
            detail: h.detail.clone().unwrap_or_default(),
            deletion_time: h.deletion_date_ms.map(timestamp),
            check_time: Some(timestamp(h.checked_at_ms)),
        }),
    }
}

pub(crate) fn job_to_pb(job: &RewrapJob) -> pb::RewrapJob {
    pb::RewrapJob {
        job_id: job.id.clone(),
        source_key_arn: job.source_arn.to_string(),
        destination_key_arn: job.destination_arn.to_string(),
        state: job_status_pb(job.status).into(),
        total_count: job.total,
        rewrapped_count: job.rewrapped,
        max_kms_requests_per_second: job.max_kms_per_sec,
        error: job.error.clone().unwrap_or_default(),
        create_time: Some(timestamp(job.created_at_ms)),
        update_time: Some(timestamp(job.updated_at_ms)),
        finish_time: job.finished_at_ms.map(timestamp),
    }
}

fn actor_kind_pb(k: ActorKind) -> &'static str {
    match k {
        ActorKind::Token => "token",
        ActorKind::Operator => "operator",
        ActorKind::System => "system",
    }
}

pub(crate) fn event_to_pb(e: &Event) -> pb::AuditEvent {
    pb::AuditEvent {
        index: e.index,
        time: Some(timestamp(e.time_ms)),
        action: e.action.as_str().to_owned(),
        outcome: e.outcome.as_str().to_owned(),
        actor_kind: actor_kind_pb(e.actor.kind).to_owned(),
        actor_id: e.actor.id.clone(),
        actor_role: e
            .actor
            .role
            .map(|r| r.as_str().to_owned())
            .unwrap_or_default(),
        recording_ids: e.recordings.clone(),
        details_json: serde_json::to_string(&e.details).unwrap_or_default(),
        client_address: e.client.clone().unwrap_or_default(),
        node: e.node.clone(),
        canonical: String::from_utf8(e.canonical()).unwrap_or_default(),
    }
}

/// A protobuf timestamp as catalog milliseconds.
pub(crate) fn ms_of(t: &prost_types::Timestamp) -> i64 {
    t.seconds
        .saturating_mul(1000)
        .saturating_add(i64::from(t.nanos / 1_000_000))
}
