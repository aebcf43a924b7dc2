//! Who is asking and what they may do: bearer-token authentication (with a
//! short-lived cache of recently seen tokens) and the role matrix, in one
//! place. Every use case asks [`require`] before it touches anything.

use std::time::Duration;

use crate::archive::Archive;
use crate::catalog::{Catalog, tokens};
use crate::domain::{Principal, Role};
use crate::error::{Error, Result};

/// How long a token's principal is reused without asking the catalog: the
/// longest a revoked token keeps working on a node that was not told.
pub const TOKEN_CACHE_TTL: Duration = Duration::from_secs(5);

/// Principals of recently seen tokens, keyed by the token's hash (the
/// secret itself is never kept). A burst of requests with one token costs
/// one catalog read, not one per request.
#[derive(Debug, Clone)]
pub struct TokenCache {
    cache: moka::future::Cache<String, Principal>,
}

impl Default for TokenCache {
    fn default() -> Self {
        Self::new(TOKEN_CACHE_TTL)
    }
}

impl TokenCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            cache: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(ttl)
                .build(),
        }
    }

    /// The principal of a bearer token, or `Unauthenticated`.
    pub async fn authenticate(&self, catalog: &Catalog, token: &str) -> Result<Principal> {
        let hash = tokens::hash_token(token);
        if let Some(p) = self.cache.get(&hash).await {
            if p.expired_at(crate::domain::now_ms()) {
                self.cache.invalidate(&hash).await;
                return Err(Error::Unauthenticated("token expired"));
            }
            return Ok(p);
        }
        let principal = tokens::authenticate(&mut *catalog.conn().await?, token).await?;
        self.cache.insert(hash, principal.clone()).await;
        Ok(principal)
    }

    /// Forgets every token (a token was revoked somewhere).
    pub fn purge_all(&self) {
        self.cache.invalidate_all();
    }
}

/// The principal of an `Authorization: Bearer …` header value (`None`:
/// no header), with the client's address for the audit trail. A missing,
/// malformed, unknown, revoked or expired token is `Unauthenticated`, and
/// recorded in the system log (whose tenant it was is unknown).
pub async fn authenticate(
    archive: &Archive,
    header: Option<&str>,
    client: Option<String>,
) -> Result<Principal> {
    let found = match header {
        None => Err(Error::Unauthenticated("missing bearer token")),
        // RFC 6750: the scheme name is case-insensitive.
        Some(value) => match value
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
            .filter(|t| !t.is_empty() && t.len() <= 256)
        {
            Some(token) => archive.tokens.authenticate(&archive.catalog, token).await,
            None => Err(Error::Unauthenticated("malformed authorization header")),
        },
    };
    match found {
        Ok(mut principal) => {
            principal.client = client;
            Ok(principal)
        }
        Err(e @ Error::Unauthenticated(why)) => {
            crate::audit::trail::unknown_token(archive, client.as_deref(), why).await;
            Err(e)
        }
        Err(e) => Err(e),
    }
}

/// What a request wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Upload recordings.
    Ingest,
    /// Play recordings and read their metadata.
    ReadRecordings,
    /// Register, retire, check and rewrap the tenant's KMS keys.
    ManageKeys,
    /// Read the audit trail, its checkpoints and proofs.
    ReadAudit,
    /// Export recordings as verifiable bundles.
    Export,
    /// Retention policy, legal holds, erasure and deletion certificates.
    Govern,
    /// Stop every signed playback URL of the tenant at once.
    RevokeUrls,
}

impl Action {
    /// The roles allowed to do it.
    pub fn roles(self) -> &'static [Role] {
        match self {
            Action::Ingest => &[Role::Ingest],
            // Separation of duties: the admin manages keys and tokens but
            // reads neither audio nor the audit trail of recordings.
            Action::ReadRecordings => &[Role::Supervisor, Role::Compliance],
            Action::ManageKeys => &[Role::Admin],
            Action::ReadAudit | Action::Export | Action::Govern => &[Role::Compliance],
            // Whoever answers for the tenant's security or its evidence.
            Action::RevokeUrls => &[Role::Admin, Role::Compliance],
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Action::Ingest => "ingest",
            Action::ReadRecordings => "read recordings",
            Action::ManageKeys => "manage keys",
            Action::ReadAudit => "read the audit trail",
            Action::Export => "export recordings",
            Action::Govern => "manage retention, legal holds and erasure",
            Action::RevokeUrls => "revoke playback URLs",
        }
    }

    /// The audit trail's name for what was attempted.
    fn audited_as(self) -> crate::audit::event::Action {
        use crate::audit::event::Action as A;
        match self {
            Action::Ingest => A::RecordingIngested,
            Action::ReadRecordings => A::RecordingRead,
            Action::ManageKeys => A::KeyRegistered,
            Action::ReadAudit => A::AuditRead,
            Action::Export => A::ExportStarted,
            Action::Govern => A::RecordingErased,
            Action::RevokeUrls => A::PlaybackUrlsRevoked,
        }
    }
}

/// Refuses `principal` unless its role may do `action`; a refusal is an
/// audit event in the caller's tenant log.
pub async fn require(archive: &Archive, principal: &Principal, action: Action) -> Result<()> {
    if action.roles().contains(&principal.role) {
        return Ok(());
    }
    let err = Error::RoleNotAllowed {
        role: principal.role,
        action: action.describe(),
    };
    crate::audit::trail::refused(archive, principal, action.audited_as(), &err.to_string()).await;
    Err(err)
}
