//! Operator commands that run directly on the catalog (no server, no
//! token): creating tenants and issuing tokens. Each is an audit event in
//! the tenant's log, naming the OS user and host that ran it, committed with
//! the change.

use crate::archive::Archive;
use crate::audit::event::{Action, NewEvent, log_of};
use crate::audit::trail;
use crate::catalog::{Conn, Tenant, TenantBootstrap, audit, tenants, tokens};
use crate::domain::{KeyArn, Role, TenantId, now_ms};
use crate::error::Result;

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
) -> Result<String> {
    let (id, token) = tokens::create(conn, tenant, role).await?;
    let event = NewEvent::new(trail::operator(), Action::TokenCreated)
        .detail("token_id", id)
        .detail("role", role.as_str());
    record(archive, conn, tenant, event).await?;
    Ok(token)
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

/// Issues a token for the tenant named `tenant`; the plaintext is returned
/// once and stored only as a hash.
pub async fn create_token(archive: &Archive, tenant: &str, role: Role) -> Result<String> {
    let mut tx = archive.catalog.begin().await?;
    let tenant = tenants::by_name(&mut tx, tenant).await?;
    let token = issue(archive, &mut tx, &tenant.id, role).await?;
    tx.commit().await?;
    Ok(token)
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
    let ingest_token = issue(archive, &mut tx, &tenant.id, Role::Ingest).await?;
    let supervisor_token = issue(archive, &mut tx, &tenant.id, Role::Supervisor).await?;
    let admin_token = issue(archive, &mut tx, &tenant.id, Role::Admin).await?;
    let compliance_token = issue(archive, &mut tx, &tenant.id, Role::Compliance).await?;
    tx.commit().await?;
    Ok(TenantBootstrap {
        tenant,
        ingest_token,
        supervisor_token,
        admin_token,
        compliance_token,
    })
}
