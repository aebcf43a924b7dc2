//! Audit events and their canonical encoding, the bytes a Merkle leaf
//! covers. Pure: no I/O.
//!
//! The canonical encoding of an event is its JSON object with exactly these
//! members, in this order, without whitespace, strings escaped as
//! `serde_json` escapes them (UTF-8, `\"`, `\\`, control characters as
//! `\uXXXX`), integers in decimal:
//!
//! ```text
//! {"v":1,"log":"<tenant id or system>","index":N,"time_ms":N,
//!  "actor":{"kind":"token|operator|system","id":"…","role":"…"|null},
//!  "action":"…","outcome":"ok|refused|failed",
//!  "recordings":["<id>",…],"details":{"<key>":<value>,…},
//!  "client":"…"|null,"node":"…"}
//! ```
//!
//! `details` keys are sorted (a `BTreeMap`); its values are strings,
//! integers, booleans or nested objects of the same. The leaf hash is
//! `SHA-256(0x00 ‖ canonical bytes)` (RFC 9162 §2.1.1).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::domain::{RecordingId, Role, TenantId};

/// The log that holds events not bound to a tenant (a token that matched
/// nobody): its id in the catalog and in checkpoints.
pub const SYSTEM_LOG: &str = "system";

/// Who did it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub kind: ActorKind,
    /// Token id, `user@host` for an operator command, or the node and job.
    pub id: String,
    pub role: Option<Role>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    /// A request with a bearer token.
    Token,
    /// An operator command run directly on the catalog.
    Operator,
    /// The node itself (a background job, a health check).
    System,
}

impl Actor {
    pub fn token(token_id: &str, role: Role) -> Self {
        Self {
            kind: ActorKind::Token,
            id: token_id.to_owned(),
            role: Some(role),
        }
    }

    /// The OS user and host running an operator command.
    pub fn operator(user_at_host: &str) -> Self {
        Self {
            kind: ActorKind::Operator,
            id: user_at_host.to_owned(),
            role: None,
        }
    }

    pub fn system(what: &str) -> Self {
        Self {
            kind: ActorKind::System,
            id: what.to_owned(),
            role: None,
        }
    }
}

/// What happened. The dotted names are the log's vocabulary
/// (`audit log --action`), spelled here and nowhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// A recording committed (size, SHA-256, key ARN).
    RecordingIngested,
    /// An ingest retry answered with the recording already committed.
    RecordingDeduplicated,
    /// Audio starts to leave the server (purpose, requested offset).
    PlaybackStarted,
    /// A playback ended (bytes sent, completed or not).
    PlaybackFinished,
    /// A signed playback URL was issued (purpose, expiry, session).
    PlaybackUrlIssued,
    /// Every playback URL of the tenant was revoked (the new epoch).
    PlaybackUrlsRevoked,
    /// A recording's metadata was read.
    RecordingRead,
    /// A list query of recordings (its filters; not the ids).
    RecordingsListed,
    /// The audit trail itself was read.
    AuditRead,
    ExportStarted,
    ExportFinished,
    KeyRegistered,
    KeyRetired,
    KeyIncident,
    RewrapStarted,
    RewrapFinished,
    RotationPolicySet,
    TenantCreated,
    TokenCreated,
    TokenRevoked,
    /// A tenant's retention policy changed (and, when asked, how many
    /// existing recordings it re-evaluated).
    RetentionPolicySet,
    HoldPlaced,
    HoldReleased,
    /// Recordings crypto-shredded (or a refused attempt), with the
    /// certificate id, the reason and the trigger.
    RecordingErased,
    /// A deletion certificate was completed and signed.
    CertificateIssued,
    /// A request refused: bad token, wrong role, another tenant's id.
    AccessRefused,
}

impl Action {
    pub const ALL: &'static [Action] = &[
        Action::RecordingIngested,
        Action::RecordingDeduplicated,
        Action::PlaybackStarted,
        Action::PlaybackFinished,
        Action::PlaybackUrlIssued,
        Action::PlaybackUrlsRevoked,
        Action::RecordingRead,
        Action::RecordingsListed,
        Action::AuditRead,
        Action::ExportStarted,
        Action::ExportFinished,
        Action::KeyRegistered,
        Action::KeyRetired,
        Action::KeyIncident,
        Action::RewrapStarted,
        Action::RewrapFinished,
        Action::RotationPolicySet,
        Action::TenantCreated,
        Action::TokenCreated,
        Action::TokenRevoked,
        Action::RetentionPolicySet,
        Action::HoldPlaced,
        Action::HoldReleased,
        Action::RecordingErased,
        Action::CertificateIssued,
        Action::AccessRefused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::RecordingIngested => "recording.ingest",
            Action::RecordingDeduplicated => "recording.ingest_deduplicated",
            Action::PlaybackStarted => "playback.start",
            Action::PlaybackFinished => "playback.finish",
            Action::PlaybackUrlIssued => "playback.url_issue",
            Action::PlaybackUrlsRevoked => "playback.urls_revoke",
            Action::RecordingRead => "recording.read",
            Action::RecordingsListed => "recording.list",
            Action::AuditRead => "audit.read",
            Action::ExportStarted => "export.start",
            Action::ExportFinished => "export.finish",
            Action::KeyRegistered => "key.register",
            Action::KeyRetired => "key.retire",
            Action::KeyIncident => "key.incident",
            Action::RewrapStarted => "key.rewrap_start",
            Action::RewrapFinished => "key.rewrap_finish",
            Action::RotationPolicySet => "key.rotation_policy",
            Action::TenantCreated => "tenant.create",
            Action::TokenCreated => "token.create",
            Action::TokenRevoked => "token.revoke",
            Action::RetentionPolicySet => "retention.policy",
            Action::HoldPlaced => "hold.place",
            Action::HoldReleased => "hold.release",
            Action::RecordingErased => "recording.erase",
            Action::CertificateIssued => "certificate.issue",
            Action::AccessRefused => "access.refused",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|a| a.as_str() == s)
    }
}

impl Serialize for Action {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Action {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Action::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("unknown action `{s}`")))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    Refused,
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Refused => "refused",
            Outcome::Failed => "failed",
        }
    }
}

/// A detail value: what an event may carry besides its fixed fields.
pub type Details = BTreeMap<String, serde_json::Value>;

/// An event about to be appended (its log index is assigned then).
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub actor: Actor,
    pub action: Action,
    pub outcome: Outcome,
    pub recordings: Vec<RecordingId>,
    pub details: Details,
    pub client: Option<String>,
}

impl NewEvent {
    pub fn new(actor: Actor, action: Action) -> Self {
        Self {
            actor,
            action,
            outcome: Outcome::Ok,
            recordings: Vec::new(),
            details: Details::new(),
            client: None,
        }
    }

    pub fn outcome(mut self, outcome: Outcome) -> Self {
        self.outcome = outcome;
        self
    }

    pub fn recording(mut self, id: RecordingId) -> Self {
        self.recordings.push(id);
        self
    }

    pub fn recordings(mut self, ids: impl IntoIterator<Item = RecordingId>) -> Self {
        self.recordings.extend(ids);
        self
    }

    pub fn detail(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }

    pub fn client(mut self, addr: Option<&str>) -> Self {
        self.client = addr.map(str::to_owned);
        self
    }
}

/// An event as logged: the leaf data of the Merkle tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub v: u32,
    pub log: String,
    pub index: u64,
    pub time_ms: i64,
    pub actor: Actor,
    pub action: Action,
    pub outcome: Outcome,
    pub recordings: Vec<String>,
    pub details: Details,
    pub client: Option<String>,
    pub node: String,
}

impl Event {
    pub const VERSION: u32 = 1;

    pub fn new(log: &str, index: u64, time_ms: i64, node: &str, e: NewEvent) -> Self {
        Self {
            v: Self::VERSION,
            log: log.to_owned(),
            index,
            time_ms,
            actor: e.actor,
            action: e.action,
            outcome: e.outcome,
            recordings: e.recordings.iter().map(ToString::to_string).collect(),
            details: e.details,
            client: e.client,
            node: node.to_owned(),
        }
    }

    /// The canonical bytes (see the module doc).
    pub fn canonical(&self) -> Vec<u8> {
        // Field order is declaration order; `details` is a BTreeMap; nothing
        // here is a float: serde_json's output is deterministic.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses canonical bytes back, refusing anything that does not
    /// re-encode to exactly the same bytes.
    pub fn from_canonical(bytes: &[u8]) -> Option<Self> {
        let e: Event = serde_json::from_slice(bytes).ok()?;
        (e.canonical() == bytes).then_some(e)
    }
}

/// The log of a tenant.
pub fn log_of(tenant: &TenantId) -> &str {
    tenant.as_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_canonical_encoding_is_fixed() {
        let id = RecordingId::parse("r", "01890a5d-ac96-774b-bcce-b302099a8057").unwrap();
        let e = Event::new(
            "tenant-1",
            7,
            1_700_000_000_123,
            "node-a",
            NewEvent::new(
                Actor::token("tok-1", Role::Supervisor),
                Action::PlaybackStarted,
            )
            .recording(id)
            .detail("purpose", "stream")
            .detail("offset_bytes", 0)
            .client(Some("127.0.0.1:5000")),
        );
        let bytes = e.canonical();
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            r#"{"v":1,"log":"tenant-1","index":7,"time_ms":1700000000123,"actor":{"kind":"token","id":"tok-1","role":"supervisor"},"action":"playback.start","outcome":"ok","recordings":["01890a5d-ac96-774b-bcce-b302099a8057"],"details":{"offset_bytes":0,"purpose":"stream"},"client":"127.0.0.1:5000","node":"node-a"}"#
        );
        assert_eq!(Event::from_canonical(&bytes), Some(e));
        // Any other spelling of the same content is refused.
        let spaced = String::from_utf8(bytes)
            .unwrap()
            .replace(",\"node\"", ", \"node\"");
        assert_eq!(Event::from_canonical(spaced.as_bytes()), None);
    }

    #[test]
    fn actions_round_trip() {
        for a in Action::ALL {
            assert_eq!(Action::parse(a.as_str()), Some(*a));
        }
        assert_eq!(Action::parse("nope"), None);
    }
}
