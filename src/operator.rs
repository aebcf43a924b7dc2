//! Operator commands that run directly on the catalog (no server, no
//! token): creating tenants, issuing, listing and revoking tokens. Each is an audit event in
//! the tenant's log, naming the OS user and host that ran it, committed with
//! the change.

use crate::archive::Archive;
use crate::audit::event::{Action, NewEvent, log_of};
use crate::audit::trail;
use crate::catalog::{Backend, Conn, Tenant, TenantBootstrap, audit, tenants, tokens};
use crate::domain::{KeyArn, Role, TenantId, format_ms, now_ms};
use crate::error::{Error, Result};

async fn record(
    archive: &Archive,
    conn: &mut Conn,
    tenant: &TenantId,
    event: NewEvent,
) -> Result<()> {
    audit::append(
        conn,
        log_of(tenant),
        now_ms(),
        &trail::host_name(),
        &archive.audit_key,
        event,
    )
    .await?;
    Ok(())
}

async fn create(
    archive: &Archive,
    conn: &mut Conn,
    name: &str,
    key_arn: &KeyArn,
    region: &str,
) -> Result<Tenant> {
    archive.check_kms_account(key_arn)?;
    let tenant = tenants::create(conn, name, key_arn, region).await?;
    let event = NewEvent::new(trail::operator(), Action::TenantCreated)
        .detail("name", name)
        .detail("key_arn", key_arn.as_str())
        .detail("region", region);
    record(archive, conn, &tenant.id, event).await?;
    Ok(tenant)
}

async fn issue(
    archive: &Archive,
    conn: &mut Conn,
    tenant: &TenantId,
    role: Role,
    expires_at_ms: Option<i64>,
) -> Result<tokens::Issued> {
    let issued = tokens::create(conn, tenant, role, expires_at_ms).await?;
    let mut event = NewEvent::new(trail::operator(), Action::TokenCreated)
        .detail("token_id", issued.id.as_str())
        .detail("role", role.as_str());
    if let Some(e) = expires_at_ms {
        event = event.detail("expires_at", format_ms(e));
    }
    record(archive, conn, tenant, event).await?;
    Ok(issued)
}

async fn bootstrap_token(
    archive: &Archive,
    conn: &mut Conn,
    tenant: &TenantId,
    role: Role,
) -> Result<String> {
    use secrecy::ExposeSecret as _;
    let issued = issue(archive, conn, tenant, role, None).await?;
    Ok(issued.secret.expose_secret().to_owned())
}

/// Creates a tenant whose first (active) key is `key_arn` in `region`.
pub async fn create_tenant(
    archive: &Archive,
    name: &str,
    key_arn: &str,
    region: &str,
) -> Result<Tenant> {
    let key_arn = KeyArn::parse("kms_key", key_arn)?;
    let mut tx = archive.catalog.begin().await?;
    let tenant = create(archive, &mut tx, name, &key_arn, region).await?;
    tx.commit().await?;
    Ok(tenant)
}

/// Every tenant with its active key and recording count, by name.
pub async fn list_tenants(archive: &Archive) -> Result<Vec<tenants::TenantSummary>> {
    tenants::list(&mut *archive.catalog.conn().await?).await
}

/// Whether a tenant of this name exists.
pub async fn tenant_exists(archive: &Archive, name: &str) -> Result<bool> {
    match tenants::by_name(&mut *archive.catalog.conn().await?, name).await {
        Ok(_) => Ok(true),
        Err(Error::TenantNotFound(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Issues a token for the tenant named `tenant`, valid until
/// `expires_at_ms` if given; the plaintext is returned once and stored only
/// as a hash.
pub async fn create_token(
    archive: &Archive,
    tenant: &str,
    role: Role,
    expires_at_ms: Option<i64>,
) -> Result<tokens::Issued> {
    let mut tx = archive.catalog.begin().await?;
    let tenant = tenants::by_name(&mut tx, tenant).await?;
    let issued = issue(archive, &mut tx, &tenant.id, role, expires_at_ms).await?;
    tx.commit().await?;
    Ok(issued)
}

/// The tokens of the tenant named `tenant` (never their secrets).
pub async fn list_tokens(archive: &Archive, tenant: &str) -> Result<Vec<tokens::TokenInfo>> {
    let mut conn = archive.catalog.conn().await?;
    let tenant = tenants::by_name(&mut conn, tenant).await?;
    tokens::list(&mut conn, &tenant.id).await
}

/// Revokes a token of the tenant named `tenant`. New requests with it are
/// refused on every node within the token cache's TTL (at once on
/// PostgreSQL, by NOTIFY), and its open streams end.
pub async fn revoke_token(
    archive: &Archive,
    tenant: &str,
    token_id: &str,
    reason: &str,
) -> Result<tokens::TokenInfo> {
    let mut tx = archive.catalog.begin().await?;
    let tenant = tenants::by_name(&mut tx, tenant).await?;
    let postgres = archive.catalog.backend() == Backend::Postgres;
    let info = tokens::revoke(&mut tx, &tenant.id, token_id, postgres).await?;
    let event = NewEvent::new(trail::operator(), Action::TokenRevoked)
        .detail("token_id", token_id)
        .detail("role", info.role.as_str())
        .detail("reason", reason);
    record(archive, &mut tx, &tenant.id, event).await?;
    tx.commit().await?;
    archive.tokens.purge_all();
    Ok(info)
}

/// A tenant with its first key and one token of each role, all or nothing:
/// what the demo, the tests and the benches start from.
pub async fn bootstrap_tenant(
    archive: &Archive,
    name: &str,
    key_arn: &str,
    region: &str,
) -> Result<TenantBootstrap> {
    let key_arn = KeyArn::parse("kms_key", key_arn)?;
    let mut tx = archive.catalog.begin().await?;
    let tenant = create(archive, &mut tx, name, &key_arn, region).await?;
    let ingest_token = bootstrap_token(archive, &mut tx, &tenant.id, Role::Ingest).await?;
    let supervisor_token = bootstrap_token(archive, &mut tx, &tenant.id, Role::Supervisor).await?;
    let admin_token = bootstrap_token(archive, &mut tx, &tenant.id, Role::Admin).await?;
    let compliance_token = bootstrap_token(archive, &mut tx, &tenant.id, Role::Compliance).await?;
    tx.commit().await?;
    Ok(TenantBootstrap {
        tenant,
        ingest_token,
        supervisor_token,
        admin_token,
        compliance_token,
    })
}
