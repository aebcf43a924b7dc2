//! Domain newtypes and states. Values from the network are parsed into these
//! once, at the edge; everything inside the crate can then rely on their
//! invariants. This module knows no protocol, database or error type of the
//! crate: a failed parse is a [`ParseError`] naming the field.

use std::fmt;

mod key_arn;
mod states;
mod subject;

pub use key_arn::{AllowedAccounts, KeyArn};
pub use states::{JobStatus, KEY_HEALTH_STATES, KeyHealthState, KeyStatus, RecordingStatus};
pub use subject::{MAX_PARTICIPANTS, Participants, normalize_identifier, parse_participants};

/// A value from outside that does not parse: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ParseError {
    pub field: String,
    pub reason: String,
}

impl ParseError {
    pub fn new(field: &str, reason: &str) -> Self {
        Self {
            field: field.to_owned(),
            reason: reason.to_owned(),
        }
    }
}

/// A tenant's immutable id (a UUID string). Tenant *names* are for humans and
/// may be renamed; the id is what keys, objects and crypto bind to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(String);

impl TenantId {
    pub fn new_random() -> Self {
        Self(uuid::Uuid::new_v4().to_string())
    }
    /// Trusted constructor for values read back from the catalog.
    pub fn from_catalog(s: String) -> Self {
        Self(s)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A recording id: a UUIDv7, so ids sort by creation time (used for paging).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordingId(uuid::Uuid);

impl RecordingId {
    pub fn new() -> Self {
        Self(uuid::Uuid::now_v7())
    }
    /// Parses a client-supplied id. Only the canonical hyphenated form is
    /// accepted so that one recording has exactly one spelling.
    pub fn parse(field: &str, s: &str) -> Result<Self, ParseError> {
        let id = uuid::Uuid::try_parse(s)
            .map_err(|_| ParseError::new(field, "is not a valid recording id"))?;
        if id.hyphenated().to_string() != s {
            return Err(ParseError::new(
                field,
                "must be a lowercase hyphenated UUID",
            ));
        }
        Ok(Self(id))
    }
    pub fn to_canonical(&self) -> String {
        self.0.hyphenated().to_string()
    }
}

impl Default for RecordingId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for RecordingId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.hyphenated())
    }
}

/// The platform's own id for a call: the idempotency key of ingest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalCallId(String);

impl ExternalCallId {
    pub const MAX_LEN: usize = 256;
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        const FIELD: &str = "header.external_call_id";
        if s.is_empty() {
            return Err(ParseError::new(FIELD, "is required"));
        }
        if s.len() > Self::MAX_LEN {
            return Err(ParseError::new(FIELD, "is longer than 256 bytes"));
        }
        if !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ParseError::new(
                FIELD,
                "must be printable ASCII without spaces",
            ));
        }
        Ok(Self(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a bearer token may do. Each token has exactly one role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Ingest,
    Supervisor,
    Compliance,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Ingest => "ingest",
            Role::Supervisor => "supervisor",
            Role::Compliance => "compliance",
            Role::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        match s {
            "ingest" => Ok(Role::Ingest),
            "supervisor" => Ok(Role::Supervisor),
            "compliance" => Ok(Role::Compliance),
            "admin" => Ok(Role::Admin),
            other => Err(ParseError::new(
                "role",
                &format!("`{other}` is not one of ingest, supervisor, compliance, admin"),
            )),
        }
    }
}

/// What the audio probe found in a recording.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AudioInfo {
    pub container: String,
    pub codec: String,
    pub sample_rate_hz: u32,
    pub channels: u32,
    pub duration_ms: u64,
    /// Set when the audio is damaged but was kept.
    pub warning: Option<String>,
}

/// A recording decoded to 16-bit PCM, as a full decode found it: what its
/// decoded WAV rendition holds (`audio::pcm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PcmLayout {
    pub frames: u64,
    pub rate_hz: u32,
    pub channels: u16,
}

impl PcmLayout {
    /// The bytes of samples (16-bit, interleaved).
    pub fn data_bytes(&self) -> u64 {
        self.frames
            .saturating_mul(u64::from(self.channels))
            .saturating_mul(2)
    }

    /// The size of the rendition: a 44-byte header and the samples.
    pub fn wav_bytes(&self) -> u64 {
        self.data_bytes().saturating_add(44)
    }

    /// Whether the rendition fits a WAV file's 32-bit sizes (about 6 h
    /// of 48 kHz stereo).
    pub fn fits_wav(&self) -> bool {
        self.channels > 0 && self.rate_hz > 0 && self.wav_bytes() - 8 <= u64::from(u32::MAX)
    }

    pub fn duration_ms(&self) -> u64 {
        u64::try_from(u128::from(self.frames) * 1000 / u128::from(self.rate_hz.max(1)))
            .unwrap_or(u64::MAX)
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Principal {
    pub tenant: TenantId,
    pub role: Role,
    /// The token's id (never its secret): the actor the audit trail names.
    pub token_id: String,
    /// The client's address as the server saw it, when known.
    pub client: Option<String>,
    /// When the token stops working (ms since the epoch), if it expires.
    pub expires_at_ms: Option<i64>,
}

impl Principal {
    /// A principal for a token, as tests and tools build one.
    pub fn new(tenant: TenantId, role: Role, token_id: &str) -> Self {
        Self {
            tenant,
            role,
            token_id: token_id.to_owned(),
            client: None,
            expires_at_ms: None,
        }
    }

    /// Whether the token has expired at `now_ms`.
    pub fn expired_at(&self, now_ms: i64) -> bool {
        self.expires_at_ms.is_some_and(|e| now_ms >= e)
    }
}

/// Milliseconds since the Unix epoch, the catalog's one time representation.
pub fn now_ms() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A span as people write it on a command line or in a config file: a whole
/// number and a unit, `s`, `m`, `h`, `d` (24 h) or `w`: `90d`, `15m`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let unit_at = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{s}` has no unit: write e.g. 90d, 12h, 15m or 30s"))?;
    let (n, unit) = s.split_at(unit_at);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("`{s}` does not start with a whole number"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => {
            return Err(format!(
                "`{s}`: unknown unit `{unit}` (use s, m, h, d or w)"
            ));
        }
    };
    n.checked_mul(secs)
        .filter(|&t| t > 0 && t <= 100 * 365 * 86_400)
        .map(std::time::Duration::from_secs)
        .ok_or_else(|| format!("`{s}` must be more than zero and at most 100 years"))
}

/// RFC 3339 UTC rendering of a catalog time, for messages and logs.
pub fn format_ms(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{ms} ms since the epoch"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recording_id_parsing() {
        let id = RecordingId::new();
        assert_eq!(RecordingId::parse("f", &id.to_string()).unwrap(), id);
        assert!(RecordingId::parse("f", "nope").is_err());
        assert!(RecordingId::parse("f", &id.to_string().to_uppercase()).is_err());
    }

    #[test]
    fn durations() {
        use std::time::Duration;
        assert_eq!(parse_duration("90d"), Ok(Duration::from_secs(90 * 86_400)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("2w"), Ok(Duration::from_secs(14 * 86_400)));
        for bad in [
            "",
            "90",
            "d",
            "0s",
            "-5m",
            "5 minutes",
            "1.5h",
            "999999999w",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn external_call_id_rules() {
        assert!(ExternalCallId::parse("call-123").is_ok());
        assert!(ExternalCallId::parse("").is_err());
        assert!(ExternalCallId::parse("has space").is_err());
        assert!(ExternalCallId::parse(&"x".repeat(257)).is_err());
    }
}
