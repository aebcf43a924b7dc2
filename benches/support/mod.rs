//! What the end-to-end benches share: a tenant on a real server on loopback
//! over the archive a bench composed, and clients for its tokens.

// Each bench includes this module and uses part of it.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use callvault::crypto::DataKey;
use callvault::kms::local::LocalKeyring;
use callvault::kms::{
    EncryptionContext, GeneratedDataKey, KeyDescription, KmsError, PublicKeyInfo, WrapAlgorithm,
};

use callvault::archive::{Archive, Limits};
use callvault::catalog::{Catalog, TenantBootstrap};
use callvault::client::Client;
use callvault::kms::Kms;
use callvault::kms::cache::KeyCacheConfig;
use callvault::server::{LocalServer, Roles};
use callvault::store::ChunkStore;

/// A node over `catalog` and `kms`, its objects under `dir`, default limits
/// and cache, a fresh audit key.
pub fn archive(catalog: Catalog, kms: Arc<dyn Kms>, dir: &std::path::Path) -> Arc<Archive> {
    Arc::new(Archive::new(
        catalog,
        ChunkStore::local(&dir.join("objects")).unwrap(),
        kms,
        &KeyCacheConfig::default(),
        Limits::default(),
        Arc::new(callvault::audit::note::SignerKey::generate("callvault-bench").unwrap()),
    ))
}

/// Bootstraps tenant `bench` with `key` and serves every role.
pub async fn serve(archive: &Arc<Archive>, key: &str) -> (LocalServer, TenantBootstrap) {
    let boot = callvault::operator::bootstrap_tenant(archive, "bench", key, "bench")
        .await
        .unwrap();
    let server = LocalServer::start(archive.clone(), Roles::ALL)
        .await
        .unwrap();
    (server, boot)
}

pub async fn client(server: &LocalServer, token: &str) -> Client {
    Client::connect(&server.addr, token).await.unwrap()
}

/// A fresh PostgreSQL database on 127.0.0.1:5432 (or
/// `CALLVAULT_BENCH_DATABASE_URL`), or None when none is reachable.
pub async fn fresh_pg_url() -> Option<String> {
    use sqlx::Connection;
    if let Ok(u) = std::env::var("CALLVAULT_BENCH_DATABASE_URL") {
        return Some(u);
    }
    let base = "postgres://postgres@127.0.0.1:5432";
    let mut c = sqlx::PgConnection::connect(&format!("{base}/postgres"))
        .await
        .ok()?;
    let name = format!("cv_bench_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut c)
        .await
        .ok()?;
    Some(format!("{base}/{name}"))
}

/// A KMS that answers after a fixed round trip, like a cross-region KMS.
#[derive(Debug)]
pub struct DelayedKms {
    pub inner: Arc<LocalKeyring>,
    pub delay: Duration,
}

#[async_trait]
impl Kms for DelayedKms {
    fn region(&self) -> &str {
        self.inner.region()
    }
    async fn generate_data_key(
        &self,
        k: &str,
        c: &EncryptionContext,
    ) -> Result<GeneratedDataKey, KmsError> {
        tokio::time::sleep(self.delay).await;
        self.inner.generate_data_key(k, c).await
    }
    async fn decrypt(
        &self,
        k: &str,
        a: WrapAlgorithm,
        w: &[u8],
        c: &EncryptionContext,
    ) -> Result<DataKey, KmsError> {
        tokio::time::sleep(self.delay).await;
        self.inner.decrypt(k, a, w, c).await
    }
    async fn re_encrypt(
        &self,
        s: (&str, WrapAlgorithm),
        w: &[u8],
        c: &EncryptionContext,
        d: (&str, WrapAlgorithm),
    ) -> Result<(String, Vec<u8>), KmsError> {
        tokio::time::sleep(self.delay).await;
        self.inner.re_encrypt(s, w, c, d).await
    }
    async fn describe_key(&self, k: &str, t: &str) -> Result<KeyDescription, KmsError> {
        self.inner.describe_key(k, t).await
    }
    async fn get_public_key(&self, k: &str, t: &str) -> Result<PublicKeyInfo, KmsError> {
        self.inner.get_public_key(k, t).await
    }
}

/// PostgreSQL when reachable (a fresh database), else SQLite in `dir`.
pub async fn catalog_url(dir: &std::path::Path) -> (String, &'static str) {
    match fresh_pg_url().await {
        Some(url) => (url, "PostgreSQL"),
        None => (
            format!("sqlite://{}", dir.join("catalog.db").display()),
            "SQLite",
        ),
    }
}
