//! API tokens: stored only as a hash, each bound to one tenant and one role.

use std::str::FromStr;

use sqlx::Row;

use super::Conn;
use super::rows::corrupt;
use crate::domain::{Principal, Role, TenantId, now_ms};
use crate::error::{Error, Result};

/// SHA-256 hex of a bearer token, the only form in which tokens are stored
/// (tokens carry 256 bits of randomness, so a fast hash suffices).
pub fn hash_token(token: &str) -> String {
    crate::crypto::sha256_hex(token.as_bytes())
}

/// Issues a token for (tenant, role): its id and its plaintext, which is
/// returned once and never stored.
pub async fn create(conn: &mut Conn, tenant: &TenantId, role: Role) -> Result<(String, String)> {
    use base64::Engine as _;
    let mut secret = [0u8; 32];
    crate::crypto::fill_random(&mut secret)?;
    let id = uuid::Uuid::new_v4().to_string();
    let token = format!(
        "cv_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
    );
    sqlx::query(
        "INSERT INTO api_tokens (token_id, token_hash, tenant_id, role, created_at_ms) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&id)
    .bind(hash_token(&token))
    .bind(tenant.as_str())
    .bind(role.as_str())
    .bind(now_ms())
    .execute(&mut *conn)
    .await?;
    Ok((id, token))
}

pub async fn authenticate(conn: &mut Conn, token: &str) -> Result<Principal> {
    let row = sqlx::query(
        "SELECT token_id, tenant_id, role FROM api_tokens WHERE token_hash = $1 AND revoked_at_ms IS NULL",
    )
    .bind(hash_token(token))
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(Error::Unauthenticated("invalid or revoked token"))?;
    let role: String = row.try_get("role")?;
    Ok(Principal {
        tenant: TenantId::from_catalog(row.try_get("tenant_id")?),
        role: Role::from_str(&role).map_err(|_| corrupt("role"))?,
        token_id: row.try_get("token_id")?,
        client: None,
    })
}
