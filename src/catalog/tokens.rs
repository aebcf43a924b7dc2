//! API tokens: stored only as a hash, each bound to one tenant and one role,
//! optionally expiring, revocable.

use std::str::FromStr;

use sqlx::Row;

use super::rows::corrupt;
use super::{Conn, TOKEN_REVOCATION_CHANNEL};
use crate::domain::{Principal, Role, TenantId, now_ms};
use crate::error::{Error, Result};

/// The PostgreSQL NOTIFY channel on which a revoked token's id is announced
/// to every node (sent in the revoking transaction, so delivered at commit).
/// `last_used_at_ms` is rewritten at most this often per token.
const LAST_USED_GRANULARITY_MS: i64 = 60_000;

/// SHA-256 hex of a bearer token, the only form in which tokens are stored
/// (tokens carry 256 bits of randomness, so a fast hash suffices).
pub fn hash_token(token: &str) -> String {
    crate::crypto::sha256_hex(token.as_bytes())
}

/// A token as `token list` shows it: never its secret, never its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub id: String,
    pub role: Role,
    pub created_at_ms: i64,
    pub last_used_at_ms: Option<i64>,
    pub expires_at_ms: Option<i64>,
    pub revoked_at_ms: Option<i64>,
}

/// A newly issued token: its id and its plaintext, which is returned once
/// and never stored.
#[derive(Clone)]
pub struct Issued {
    pub id: String,
    pub secret: secrecy::SecretString,
    pub expires_at_ms: Option<i64>,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("id", &self.id)
            .field("secret", &"[redacted]")
            .field("expires_at_ms", &self.expires_at_ms)
            .finish()
    }
}

/// Issues a token for (tenant, role), valid until `expires_at_ms` if given.
pub async fn create(
    conn: &mut Conn,
    tenant: &TenantId,
    role: Role,
    expires_at_ms: Option<i64>,
) -> Result<Issued> {
    use base64::Engine as _;
    let now = now_ms();
    if let Some(e) = expires_at_ms
        && e <= now
    {
        return Err(Error::invalid("expires_in", "must be in the future"));
    }
    let mut secret = zeroize::Zeroizing::new([0u8; 32]);
    crate::crypto::fill_random(&mut secret[..])?;
    let id = uuid::Uuid::new_v4().to_string();
    let token = format!(
        "cv_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&secret[..])
    );
    sqlx::query(
        "INSERT INTO api_tokens (token_id, token_hash, tenant_id, role, created_at_ms, expires_at_ms) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&id)
    .bind(hash_token(&token))
    .bind(tenant.as_str())
    .bind(role.as_str())
    .bind(now)
    .bind(expires_at_ms)
    .execute(&mut *conn)
    .await?;
    Ok(Issued {
        id,
        secret: token.into(),
        expires_at_ms,
    })
}

/// The principal of a live token: not revoked, not expired. Records when
/// it was last used (at most once a minute).
pub async fn authenticate(conn: &mut Conn, token: &str) -> Result<Principal> {
    let row = sqlx::query(
        "SELECT token_id, tenant_id, role, expires_at_ms, last_used_at_ms FROM api_tokens WHERE token_hash = $1 AND revoked_at_ms IS NULL",
    )
    .bind(hash_token(token))
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(Error::Unauthenticated("invalid or revoked token"))?;
    let role: String = row.try_get("role")?;
    let principal = Principal {
        tenant: TenantId::from_catalog(row.try_get("tenant_id")?),
        role: Role::from_str(&role).map_err(|_| corrupt("role"))?,
        token_id: row.try_get("token_id")?,
        client: None,
        expires_at_ms: row.try_get("expires_at_ms")?,
    };
    let now = now_ms();
    if principal.expired_at(now) {
        return Err(Error::Unauthenticated("token expired"));
    }
    let last_used: Option<i64> = row.try_get("last_used_at_ms")?;
    if last_used.is_none_or(|t| now - t >= LAST_USED_GRANULARITY_MS) {
        sqlx::query("UPDATE api_tokens SET last_used_at_ms = $1 WHERE token_id = $2")
            .bind(now)
            .bind(&principal.token_id)
            .execute(&mut *conn)
            .await?;
    }
    Ok(principal)
}

/// Whether the token `token_id` still works at `now` (an open stream's
/// periodic re-check): `Err(Unauthenticated)` once revoked or expired.
pub async fn check_live(conn: &mut Conn, tenant: &TenantId, token_id: &str) -> Result<()> {
    url_issuer(conn, tenant, token_id).await.map(|_| ())
}

/// The tenant's tokens, oldest first.
pub async fn list(conn: &mut Conn, tenant: &TenantId) -> Result<Vec<TokenInfo>> {
    let rows = sqlx::query(
        "SELECT token_id, role, created_at_ms, last_used_at_ms, expires_at_ms, revoked_at_ms FROM api_tokens WHERE tenant_id = $1 ORDER BY created_at_ms, token_id",
    )
    .bind(tenant.as_str())
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            let role: String = r.try_get("role")?;
            Ok(TokenInfo {
                id: r.try_get("token_id")?,
                role: Role::from_str(&role).map_err(|_| corrupt("role"))?,
                created_at_ms: r.try_get("created_at_ms")?,
                last_used_at_ms: r.try_get("last_used_at_ms")?,
                expires_at_ms: r.try_get("expires_at_ms")?,
                revoked_at_ms: r.try_get("revoked_at_ms")?,
            })
        })
        .collect()
}

/// Revokes the tenant's token `token_id` and, on PostgreSQL, announces it
/// to every node (on [`TOKEN_REVOCATION_CHANNEL`]) when the caller's
/// transaction commits. Revoking a revoked
/// token is an error that says when it was revoked.
pub async fn revoke(
    conn: &mut Conn,
    tenant: &TenantId,
    token_id: &str,
    postgres: bool,
) -> Result<TokenInfo> {
    let now = now_ms();
    let updated = sqlx::query(
        "UPDATE api_tokens SET revoked_at_ms = $1 WHERE tenant_id = $2 AND token_id = $3 AND revoked_at_ms IS NULL",
    )
    .bind(now)
    .bind(tenant.as_str())
    .bind(token_id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    let info = list(conn, tenant)
        .await?
        .into_iter()
        .find(|t| t.id == token_id)
        .ok_or_else(|| Error::TokenNotFound(token_id.to_owned()))?;
    if updated == 0 {
        return Err(Error::TokenAlreadyRevoked {
            id: token_id.to_owned(),
            at_ms: info.revoked_at_ms.unwrap_or_default(),
        });
    }
    if postgres {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(TOKEN_REVOCATION_CHANNEL)
            .bind(token_id)
            .execute(&mut *conn)
            .await?;
    }
    Ok(info)
}

/// Tokens revoked at or after `since_ms` (the revocation poller, which
/// carries the news to open streams on catalogs without NOTIFY).
pub async fn revoked_since(conn: &mut Conn, since_ms: i64) -> Result<Vec<(String, i64)>> {
    let rows = sqlx::query(
        "SELECT token_id, revoked_at_ms FROM api_tokens WHERE revoked_at_ms IS NOT NULL AND revoked_at_ms >= $1",
    )
    .bind(since_ms)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("token_id")?, r.try_get("revoked_at_ms")?)))
        .collect()
}

/// What a signed playback URL is checked against on every request, in one
/// read: the issuing token's principal while it is live (not revoked, not
/// expired) and the tenant's current URL epoch.
pub async fn url_issuer(
    conn: &mut Conn,
    tenant: &TenantId,
    token_id: &str,
) -> Result<(Principal, u64)> {
    let row = sqlx::query(
        "SELECT k.role, k.expires_at_ms, k.revoked_at_ms, t.url_epoch FROM api_tokens k JOIN tenants t ON t.tenant_id = k.tenant_id WHERE k.tenant_id = $1 AND k.token_id = $2",
    )
    .bind(tenant.as_str())
    .bind(token_id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(Error::Unauthenticated("invalid or revoked token"))?;
    if row.try_get::<Option<i64>, _>("revoked_at_ms")?.is_some() {
        return Err(Error::Unauthenticated("token revoked"));
    }
    let role: String = row.try_get("role")?;
    let principal = Principal {
        tenant: tenant.clone(),
        role: Role::from_str(&role).map_err(|_| corrupt("role"))?,
        token_id: token_id.to_owned(),
        client: None,
        expires_at_ms: row.try_get("expires_at_ms")?,
    };
    if principal.expired_at(now_ms()) {
        return Err(Error::Unauthenticated("token expired"));
    }
    let epoch =
        u64::try_from(row.try_get::<i64, _>("url_epoch")?).map_err(|_| corrupt("url epoch"))?;
    Ok((principal, epoch))
}
