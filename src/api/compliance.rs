//! `ComplianceService`: retention, legal holds, erasure and certificates.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::convert::{ms_of, timestamp};
use super::{authenticate, pb};
use crate::archive::Archive;
use crate::catalog::compliance::{CertificateRow, LegalHold, RetentionRule};
use crate::compliance::{self, HoldSelection, RetentionPolicy, erase, holds, retention};
use crate::domain::RecordingId;
use crate::error::Error;

#[derive(Debug, Clone)]
pub struct ComplianceApi {
    archive: Arc<Archive>,
}

impl ComplianceApi {
    pub fn new(archive: Arc<Archive>) -> Self {
        Self { archive }
    }
}

fn rule_to_pb(r: &RetentionRule) -> pb::RetentionRule {
    let (k, v) = r.label.clone().unwrap_or_default();
    pb::RetentionRule {
        label_key: k,
        label_value: v,
        days: r.days,
        update_time: Some(timestamp(r.updated_at_ms)),
    }
}

fn policy_to_pb(p: &RetentionPolicy) -> pb::RetentionPolicy {
    pb::RetentionPolicy {
        default_days: p.default_days.unwrap_or(0),
        rules: p.rules.iter().map(rule_to_pb).collect(),
    }
}

fn hold_to_pb(h: &LegalHold) -> pb::LegalHold {
    pb::LegalHold {
        hold_id: h.hold_id.clone(),
        name: h.name.clone(),
        reason: h.reason.clone(),
        selection_json: h.selector.clone(),
        recording_count: h.recording_count,
        placed_by: h.placed_by.clone(),
        place_time: Some(timestamp(h.placed_at_ms)),
        released_by: h.released_by.clone().unwrap_or_default(),
        release_reason: h.release_reason.clone().unwrap_or_default(),
        release_time: h.released_at_ms.map(timestamp),
    }
}

fn certificate_to_pb(c: &CertificateRow) -> pb::DeletionCertificate {
    pb::DeletionCertificate {
        certificate_id: c.certificate_id.clone(),
        complete: c.complete,
        actor: c.actor.clone(),
        trigger: if c.by_expiry {
            "retention_expiry"
        } else {
            "request"
        }
        .into(),
        reason: c.reason.clone(),
        override_retention: c.override_retention,
        recording_count: c.recording_count,
        audit_event_index: c.audit_index,
        erase_time: Some(timestamp(c.erased_at_ms)),
        complete_time: c.completed_at_ms.map(timestamp),
        certificate_json: c.document.clone().unwrap_or_default(),
        recording_ids: Vec::new(),
    }
}

fn ids(field: &str, raw: &[String]) -> Result<Vec<RecordingId>, Error> {
    raw.iter()
        .map(|s| RecordingId::parse(field, s).map_err(Error::from))
        .collect()
}

fn selection(req: &pb::PlaceLegalHoldRequest) -> Result<HoldSelection, Error> {
    let window = req.start_time.is_some() || req.end_time.is_some() || !req.labels.is_empty();
    let modes = usize::from(!req.recording_ids.is_empty())
        + usize::from(!req.external_call_ids.is_empty())
        + usize::from(window)
        + usize::from(!req.participant.is_empty());
    if modes != 1 {
        return Err(Error::invalid(
            "selection",
            "give exactly one of recording_ids, external_call_ids, a window (start_time and end_time, optionally labels), or participant",
        ));
    }
    if !req.participant.is_empty() {
        return Ok(HoldSelection::Participant(req.participant.clone()));
    }
    if !req.recording_ids.is_empty() {
        return Ok(HoldSelection::Recordings(ids(
            "recording_ids",
            &req.recording_ids,
        )?));
    }
    if !req.external_call_ids.is_empty() {
        for c in &req.external_call_ids {
            crate::domain::ExternalCallId::parse(c)
                .map_err(|e| Error::invalid("external_call_ids", &e.to_string()))?;
        }
        return Ok(HoldSelection::CallIds(req.external_call_ids.clone()));
    }
    match (&req.start_time, &req.end_time) {
        (Some(a), Some(b)) => Ok(HoldSelection::Window {
            from_ms: ms_of(a),
            to_ms: ms_of(b),
            labels: req
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }),
        _ => Err(Error::invalid(
            "start_time",
            "a window needs both start_time and end_time",
        )),
    }
}

#[tonic::async_trait]
impl pb::compliance_service_server::ComplianceService for ComplianceApi {
    async fn get_retention_policy(
        &self,
        request: Request<pb::GetRetentionPolicyRequest>,
    ) -> Result<Response<pb::RetentionPolicy>, Status> {
        let principal = authenticate(&self.archive, &request).await?;
        let p = retention::show(&self.archive, &principal).await?;
        Ok(Response::new(policy_to_pb(&p)))
    }

    async fn set_retention_rule(
        &self,
        request: Request<pb::SetRetentionRuleRequest>,
    ) -> Result<Response<pb::SetRetentionRuleResponse>, Status> {
        let principal = authenticate(&self.archive, &request).await?;
        let req = request.into_inner();
        let label = match (req.label_key.is_empty(), req.label_value.is_empty()) {
            (true, true) => None,
            (true, false) => {
                return Err(Error::invalid("label_key", "a label rule needs a key").into());
            }
            _ => Some(retention::parse_label(
                "label_key",
                &format!("{}={}", req.label_key, req.label_value),
            )?),
        };
        // An omitted `days` (proto3's 0) is an error, never a removal.
        let days = match (req.remove, req.days) {
            (true, 0) => None,
            (true, _) => {
                return Err(Error::invalid("days", "must be 0 when `remove` is set").into());
            }
            (false, 0) => {
                return Err(Error::invalid(
                    "days",
                    "required (1..=36525); set `remove` to remove the rule",
                )
                .into());
            }
            (false, d) => Some(d),
        };
        let u = retention::set(
            &self.archive,
            &principal,
            label,
            days,
            req.apply_to_existing,
        )
        .await?;
        Ok(Response::new(pb::SetRetentionRuleResponse {
            policy: Some(policy_to_pb(&u.policy)),
            previous_days: u.previous_days.unwrap_or(0),
            applied_to_existing: u.recordings_changed.is_some(),
            recordings_changed: u.recordings_changed.unwrap_or(0),
        }))
    }

    async fn place_legal_hold(
        &self,
        request: Request<pb::PlaceLegalHoldRequest>,
    ) -> Result<Response<pb::LegalHold>, Status> {
        let principal = authenticate(&self.archive, &request).await?;
        let req = request.into_inner();
        let selection = selection(&req)?;
        let hold =
            compliance::place_hold(&self.archive, &principal, &req.name, &req.reason, selection)
                .await?;
        Ok(Response::new(hold_to_pb(&hold)))
    }

    async fn release_legal_hold(
        &self,
        request: Request<pb::ReleaseLegalHoldRequest>,
    ) -> Result<Response<pb::ReleaseLegalHoldResponse>, Status> {
        let principal = authenticate(&self.archive, &request).await?;
        let req = request.into_inner();
        let (hold, freed) =
            compliance::release_hold(&self.archive, &principal, &req.name, &req.reason).await?;
        Ok(Response::new(pb::ReleaseLegalHoldResponse {
            hold: Some(hold_to_pb(&hold)),
            recordings_freed: freed,
        }))
    }

    async fn list_legal_holds(
        &self,
        request: Request<pb::ListLegalHoldsRequest>,
    ) -> Result<Response<pb::ListLegalHoldsResponse>, Status> {
        let principal = authenticate(&self.archive, &request).await?;
        let all = holds::list(
            &self.archive,
            &principal,
            request.get_ref().include_released,
        )
        .await?;
        Ok(Response::new(pb::ListLegalHoldsResponse {
            holds: all.iter().map(hold_to_pb).collect(),
        }))
    }

    async fn get_legal_hold(
        &self,
        request: Request<pb::GetLegalHoldRequest>,
    ) -> Result<Response<pb::GetLegalHoldResponse>, Status> {
        let principal = authenticate(&self.archive, &request).await?;
        let req = request.into_inner();
        let after = if req.page_token.is_empty() {
            None
        } else {
            Some(RecordingId::parse("page_token", &req.page_token).map_err(Error::from)?)
        };
        let limit = if req.page_size == 0 {
            100
        } else {
            req.page_size.min(1000)
        };
        let (hold, members) =
            holds::show(&self.archive, &principal, &req.name, after.as_ref(), limit).await?;
        let next = if members.len() == limit as usize {
            members.last().map(ToString::to_string).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::GetLegalHoldResponse {
            hold: Some(hold_to_pb(&hold)),
            recording_ids: members.iter().map(ToString::to_string).collect(),
            next_page_token: next,
        }))
    }

    async fn erase_recordings(
        &self,
        request: Request<pb::EraseRecordingsRequest>,
    ) -> Result<Response<pb::EraseRecordingsResponse>, Status> {
        let principal = authenticate(&self.archive, &request).await?;
        let req = request.into_inner();
        let ids = match (req.recording_ids.is_empty(), req.participant.is_empty()) {
            (true, false) => {
                // A data-subject erasure: every recording of the person. The
                // role is checked before anything is looked up.
                crate::access::require(&self.archive, &principal, crate::access::Action::Govern)
                    .await?;
                let rows = compliance::subjects::all_with_participant(
                    &self.archive,
                    &principal,
                    &req.participant,
                    erase::MAX_PER_REQUEST,
                )
                .await?;
                if rows.is_empty() {
                    return Err(Error::NothingSelected("the participant given".into()).into());
                }
                rows.iter().map(|r| r.id).collect()
            }
            (false, false) => {
                return Err(Error::invalid(
                    "selection",
                    "give recording_ids or participant, not both",
                )
                .into());
            }
            _ => ids("recording_ids", &req.recording_ids)?,
        };
        let report = compliance::erase_requested(
            &self.archive,
            &principal,
            &ids,
            &req.reason,
            req.override_retention,
        )
        .await?;
        Ok(Response::new(pb::EraseRecordingsResponse {
            certificate_id: report.certificate_id,
            recording_ids: report.recordings.iter().map(ToString::to_string).collect(),
            erase_time: Some(timestamp(report.erased_at_ms)),
            certificate_json: report.certificate.unwrap_or_default(),
        }))
    }

    async fn list_certificates(
        &self,
        request: Request<pb::ListCertificatesRequest>,
    ) -> Result<Response<pb::ListCertificatesResponse>, Status> {
        let principal = authenticate(&self.archive, &request).await?;
        let size = request.get_ref().page_size;
        let limit = if size == 0 { 100 } else { size.min(1000) };
        let all = erase::list_certificates(&self.archive, &principal, limit).await?;
        Ok(Response::new(pb::ListCertificatesResponse {
            certificates: all.iter().map(certificate_to_pb).collect(),
        }))
    }

    async fn get_certificate(
        &self,
        request: Request<pb::GetCertificateRequest>,
    ) -> Result<Response<pb::DeletionCertificate>, Status> {
        let principal = authenticate(&self.archive, &request).await?;
        let id = request.into_inner().certificate_id;
        if id.is_empty() || id.len() > 64 {
            return Err(Error::invalid("certificate_id", "1..=64 characters").into());
        }
        let (row, tombstones) = erase::get_certificate(&self.archive, &principal, &id).await?;
        let mut c = certificate_to_pb(&row);
        c.recording_ids = tombstones.iter().map(|t| t.id.to_string()).collect();
        Ok(Response::new(c))
    }
}
