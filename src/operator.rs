//! Operator commands that run directly on the catalog (no server, no
//! token): creating tenants and issuing tokens.

use crate::catalog::{Catalog, Tenant, TenantBootstrap, tenants, tokens};
use crate::domain::{KeyArn, Role};
use crate::error::Result;

/// Creates a tenant whose first (active) key is `key_arn` in `region`.
pub async fn create_tenant(
    catalog: &Catalog,
    name: &str,
    key_arn: &str,
    region: &str,
) -> Result<Tenant> {
    let key_arn = KeyArn::parse("kms_key", key_arn)?;
    let mut tx = catalog.begin().await?;
    let tenant = tenants::create(&mut tx, name, &key_arn, region).await?;
    tx.commit().await?;
    Ok(tenant)
}

/// Issues a token for the tenant named `tenant`; the plaintext is returned
/// once and stored only as a hash.
pub async fn create_token(catalog: &Catalog, tenant: &str, role: Role) -> Result<String> {
    let mut tx = catalog.begin().await?;
    let tenant = tenants::by_name(&mut tx, tenant).await?;
    let token = tokens::create(&mut tx, &tenant.id, role).await?;
    tx.commit().await?;
    Ok(token)
}

/// A tenant with its first key and one ingest, one supervisor and one admin
/// token, all or nothing: what the demo, the tests and the benches start
/// from.
pub async fn bootstrap_tenant(
    catalog: &Catalog,
    name: &str,
    key_arn: &str,
    region: &str,
) -> Result<TenantBootstrap> {
    let key_arn = KeyArn::parse("kms_key", key_arn)?;
    let mut tx = catalog.begin().await?;
    let tenant = tenants::create(&mut tx, name, &key_arn, region).await?;
    let ingest_token = tokens::create(&mut tx, &tenant.id, Role::Ingest).await?;
    let supervisor_token = tokens::create(&mut tx, &tenant.id, Role::Supervisor).await?;
    let admin_token = tokens::create(&mut tx, &tenant.id, Role::Admin).await?;
    tx.commit().await?;
    Ok(TenantBootstrap {
        tenant,
        ingest_token,
        supervisor_token,
        admin_token,
    })
}
