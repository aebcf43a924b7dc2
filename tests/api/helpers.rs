//! Shared test scaffolding: a real server on port 0 over a real catalog
//! (a fresh SQLite file or a fresh PostgreSQL database per test), the local
//! store or S3 on moto, and the local keyring or AWS KMS on moto.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use callvault::api::pb;
use callvault::archive::{Archive, Limits};
use callvault::catalog::{Catalog, Tenant};
use callvault::client::Client;
use callvault::crypto::DataKey;
use callvault::domain::Role;
use callvault::kms::aws::AwsKms;
use callvault::kms::cache::KeyCacheConfig;
use callvault::kms::local::LocalKeyring;
use callvault::kms::{
    EncryptionContext, GeneratedDataKey, KeyDescription, Kms, KmsError, PublicKeyInfo,
    WrapAlgorithm,
};
use callvault::server::{LocalServer, Roles};
use callvault::store::{ChunkStore, S3Options};
use secrecy::ExposeSecret;
use sqlx::Connection;

pub const FIXTURES: &[(&str, &str, &str)] = &[
    // (file, container, codec)
    ("speech_pcm.wav", "wav", "pcm_s16le"),
    ("speech_mulaw.wav", "wav", "pcm_mulaw"),
    ("speech_alaw.wav", "wav", "pcm_alaw"),
    ("speech.mp3", "mp3", "mp3"),
    ("speech.flac", "flac", "flac"),
    ("speech_vorbis.ogg", "ogg", "vorbis"),
    ("speech_opus.ogg", "ogg", "opus"),
    ("speech_opus.webm", "webm", "opus"),
    ("speech_aac.m4a", "mp4", "aac"),
    ("speech_aac_moov_end.m4a", "mp4", "aac"),
];

pub fn fixture(name: &str) -> Bytes {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display())))
}

/// Everything the server logs in this test process, for the plaintext scan.
pub fn captured_logs() -> Vec<u8> {
    log_buffer().lock().unwrap().clone()
}

fn log_buffer() -> &'static Arc<Mutex<Vec<u8>>> {
    static BUF: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUF.get_or_init(|| Arc::new(Mutex::new(Vec::new())))
}

#[derive(Clone)]
struct BufWriter;

impl Write for BufWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        log_buffer().lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn init_logging() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("debug,h2=info,hyper=info,tower=info,aws=info,sqlx=warn")
            .with_writer(|| BufWriter)
            .try_init();
    });
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatalogKind {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remote {
    /// Local directory store + local keyring.
    Local,
    /// S3 store + AWS KMS, both on moto over HTTP.
    Moto,
    /// Local directory store + AWS KMS on LocalStack over HTTP (key states
    /// and RSA, which moto does not enforce).
    LocalStack,
}

/// A service some tests need beside the code under test.
#[derive(Debug, Clone, Copy)]
pub enum Service {
    /// PostgreSQL at `CALLVAULT_TEST_PG` (default 127.0.0.1:5432).
    Postgres,
    /// The moto S3 + KMS emulator at `CALLVAULT_TEST_MOTO` (scripts/test.sh starts it).
    Moto,
    /// LocalStack's KMS at `CALLVAULT_TEST_LOCALSTACK` (scripts/test.sh starts it).
    LocalStack,
    /// Chromium and its WebDriver, chromedriver (Debian's `chromium` and
    /// `chromium-driver`; scripts/test.sh installs them).
    Chromium,
}

/// Debian's Chromium and its WebDriver.
pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Why a test cannot run here, if it cannot. Under CI (`CI` set) the
/// services are provisioned, so a missing one fails the test instead.
pub fn missing(needs: &[Service]) -> Option<String> {
    let why = needs.iter().find_map(|s| match s {
        Service::Postgres => {
            let base = pg_base();
            let addr = url::Url::parse(&base)
                .ok()
                .and_then(|u| Some(format!("{}:{}", u.host_str()?, u.port().unwrap_or(5432))))
                .unwrap_or_else(|| "127.0.0.1:5432".into());
            let up = addr
                .parse::<std::net::SocketAddr>()
                .ok()
                .is_some_and(|a| {
                    std::net::TcpStream::connect_timeout(&a, std::time::Duration::from_secs(1))
                        .is_ok()
                });
            (!up).then(|| format!("PostgreSQL is not reachable at {addr} (set CALLVAULT_TEST_PG or run scripts/test.sh)"))
        }
        Service::Moto => std::env::var("CALLVAULT_TEST_MOTO").is_err().then(|| {
            "the S3 + KMS emulator is not running (CALLVAULT_TEST_MOTO unset; run scripts/test.sh)"
                .to_owned()
        }),
        Service::LocalStack => std::env::var("CALLVAULT_TEST_LOCALSTACK").is_err().then(|| {
            "LocalStack is not running (CALLVAULT_TEST_LOCALSTACK unset; run scripts/test.sh)"
                .to_owned()
        }),
        Service::Chromium => (!std::path::Path::new(CHROMEDRIVER).exists()
            || !std::path::Path::new(CHROMIUM).exists())
        .then(|| {
            format!("{CHROMIUM} or {CHROMEDRIVER} is missing (apt-get install chromium chromium-driver)")
        }),
    })?;
    assert!(std::env::var_os("CI").is_none(), "{why}");
    Some(why)
}

/// Returns early from a test, saying why, when a service it needs is not
/// running (a plain `cargo test` without PostgreSQL or the emulator).
/// Two tests, one per catalog, each running `body(kind)`.
macro_rules! on_both_catalogs {
    ($sqlite:ident, $postgres:ident, $body:path) => {
        #[tokio::test]
        async fn $sqlite() {
            $body(crate::helpers::CatalogKind::Sqlite).await;
        }

        #[tokio::test]
        async fn $postgres() {
            $body(crate::helpers::CatalogKind::Postgres).await;
        }
    };
}

macro_rules! require {
    ($($svc:ident),+) => {
        if let Some(why) = crate::helpers::missing(&[$(crate::helpers::Service::$svc),+]) {
            eprintln!("skipped: {why}");
            return;
        }
    };
}

pub fn pg_base() -> String {
    std::env::var("CALLVAULT_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// A fresh, empty PostgreSQL database for one test.
pub async fn fresh_pg_database() -> (String, String) {
    let name = format!("cv_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&format!("{}/postgres", pg_base()))
        .await
        .expect("PostgreSQL must be running (see README)");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .unwrap();
    (format!("{}/{name}", pg_base()), name)
}

pub async fn drop_pg_database(name: &str) {
    if let Ok(mut conn) = sqlx::PgConnection::connect(&format!("{}/postgres", pg_base())).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut conn)
        .await;
    }
}

/// The moto endpoint the test script started (CALLVAULT_TEST_MOTO).
pub fn moto_endpoint() -> String {
    std::env::var("CALLVAULT_TEST_MOTO")
        .expect("CALLVAULT_TEST_MOTO must point at a running moto server; run the suite with scripts/test.sh")
}

/// moto accepts any credentials; scripts/test.sh exports its fixed test ones
/// (the default credential chain and object_store both read them).
pub fn set_moto_credentials() {
    assert!(
        std::env::var("AWS_ACCESS_KEY_ID").is_ok(),
        "AWS_ACCESS_KEY_ID must be set for moto; run the suite with scripts/test.sh"
    );
}

pub async fn moto_kms() -> AwsKms {
    set_moto_credentials();
    AwsKms::connect("us-east-1", Some(&moto_endpoint())).await
}

pub async fn moto_create_key(kms: &AwsKms) -> String {
    let _ = kms;
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(moto_endpoint())
        .load()
        .await;
    let client = aws_sdk_kms::Client::new(&conf);
    let out = client.create_key().send().await.expect("moto CreateKey");
    out.key_metadata().unwrap().arn().unwrap().to_owned()
}

pub fn localstack_endpoint() -> String {
    std::env::var("CALLVAULT_TEST_LOCALSTACK").expect(
        "CALLVAULT_TEST_LOCALSTACK must point at a running LocalStack; run the suite with scripts/test.sh",
    )
}

/// A plain AWS SDK KMS client on LocalStack: the test's stand-in for the
/// tenant's own KMS console (create, disable, schedule deletion…).
pub async fn localstack_client() -> aws_sdk_kms::Client {
    set_moto_credentials();
    let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(localstack_endpoint())
        .load()
        .await;
    aws_sdk_kms::Client::new(&conf)
}

/// A new LocalStack key of `spec` (ENCRYPT_DECRYPT); its ARN.
pub async fn localstack_create_key(spec: aws_sdk_kms::types::KeySpec) -> String {
    let out = localstack_client()
        .await
        .create_key()
        .key_spec(spec)
        .key_usage(aws_sdk_kms::types::KeyUsageType::EncryptDecrypt)
        .send()
        .await
        .expect("LocalStack CreateKey");
    out.key_metadata().unwrap().arn().unwrap().to_owned()
}

pub async fn moto_bucket() -> String {
    set_moto_credentials();
    let bucket = format!("cv-test-{}", uuid::Uuid::new_v4().simple());
    // object_store cannot create buckets; moto accepts a bare PUT on the bucket.
    let resp = reqwest_put(&format!("{}/{bucket}", moto_endpoint()), "").await;
    assert!(resp, "creating bucket {bucket} on moto");
    bucket
}

/// Turns on versioning of a moto bucket (S3 PutBucketVersioning).
pub async fn moto_enable_versioning(bucket: &str) {
    let body = "<VersioningConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
                <Status>Enabled</Status></VersioningConfiguration>";
    let url = format!("{}/{bucket}?versioning", moto_endpoint());
    assert!(
        reqwest_put(&url, body).await,
        "enabling versioning on {bucket}"
    );
}

async fn reqwest_put(url: &str, body: &str) -> bool {
    // A minimal HTTP PUT over a raw TCP stream keeps the test dependencies small.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let u = url::Url::parse(url).unwrap();
    let host = format!("{}:{}", u.host_str().unwrap(), u.port().unwrap());
    let mut s = tokio::net::TcpStream::connect(&host).await.unwrap();
    let target = match u.query() {
        Some(q) => format!("{}?{q}", u.path()),
        None => u.path().to_owned(),
    };
    let req = format!(
        "PUT {target} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).await.unwrap();
    resp.starts_with("HTTP/1.1 200")
}

pub struct TestApp {
    pub addr: String,
    /// The HTTP side door (`AppOptions::http`).
    pub http_addr: Option<String>,
    pub archive: Arc<Archive>,
    pub ring: Option<Arc<LocalKeyring>>,
    pub dir: tempfile::TempDir,
    pub tenant: Tenant,
    pub ingest_token: String,
    pub supervisor_token: String,
    pub admin_token: String,
    pub compliance_token: String,
    /// The catalog URL, for further nodes over the same catalog.
    pub db_url: String,
    pg_db: Option<String>,
    server: Option<LocalServer>,
}

/// Another callvault node over the same catalog and object store as a
/// `TestApp`, with its own KMS client, key cache and roles.
pub struct Node {
    pub addr: String,
    pub archive: Arc<Archive>,
    server: Option<LocalServer>,
}

impl Node {
    pub async fn client(&self, token: &str) -> Client {
        Client::connect(&self.addr, token).await.unwrap()
    }

    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await.unwrap();
        }
        self.archive.catalog.close().await;
    }
}

/// Wraps a KMS backend to inject what a test needs: a fixed round trip, a
/// stall after N ReEncrypt calls (to crash a rewrap mid-batch), or no
/// permissions at all (a write-only ingest node). Counts what reached it.
#[derive(Debug)]
pub struct FaultKms {
    pub inner: Option<Arc<dyn Kms>>,
    pub delay: std::time::Duration,
    pub stall_after_re_encrypts: Option<usize>,
    pub re_encrypts: std::sync::atomic::AtomicUsize,
    pub calls: std::sync::atomic::AtomicUsize,
    /// When set, GetPublicKey answers this SPKI (a key replaced in KMS).
    pub served_public_key: Mutex<Option<Vec<u8>>>,
}

impl FaultKms {
    /// A KMS client with no permission for anything.
    pub fn denying() -> Self {
        Self {
            inner: None,
            delay: std::time::Duration::ZERO,
            stall_after_re_encrypts: None,
            re_encrypts: Default::default(),
            calls: Default::default(),
            served_public_key: Mutex::new(None),
        }
    }

    pub fn over(inner: Arc<dyn Kms>) -> Self {
        Self {
            inner: Some(inner),
            ..Self::denying()
        }
    }

    async fn enter(&self, arn: &str) -> Result<&Arc<dyn Kms>, KmsError> {
        use std::sync::atomic::Ordering;
        self.calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        self.inner.as_ref().ok_or_else(|| KmsError::AccessDenied {
            arn: arn.to_owned(),
        })
    }
}

#[async_trait::async_trait]
impl Kms for FaultKms {
    fn region(&self) -> &str {
        self.inner.as_ref().map(|k| k.region()).unwrap_or("local")
    }
    async fn generate_data_key(
        &self,
        key_id: &str,
        ctx: &EncryptionContext,
    ) -> Result<GeneratedDataKey, KmsError> {
        self.enter(key_id)
            .await?
            .generate_data_key(key_id, ctx)
            .await
    }
    async fn decrypt(
        &self,
        key_arn: &str,
        alg: WrapAlgorithm,
        wrapped: &[u8],
        ctx: &EncryptionContext,
    ) -> Result<DataKey, KmsError> {
        self.enter(key_arn)
            .await?
            .decrypt(key_arn, alg, wrapped, ctx)
            .await
    }
    async fn re_encrypt(
        &self,
        source: (&str, WrapAlgorithm),
        wrapped: &[u8],
        ctx: &EncryptionContext,
        destination: (&str, WrapAlgorithm),
    ) -> Result<(String, Vec<u8>), KmsError> {
        use std::sync::atomic::Ordering;
        let inner = self.enter(source.0).await?;
        let n = self.re_encrypts.fetch_add(1, Ordering::SeqCst);
        if self.stall_after_re_encrypts.is_some_and(|limit| n >= limit) {
            // The node "crashes" here: the caller aborts the task.
            std::future::pending::<()>().await;
        }
        inner.re_encrypt(source, wrapped, ctx, destination).await
    }
    async fn describe_key(&self, key_id: &str, tenant: &str) -> Result<KeyDescription, KmsError> {
        self.enter(key_id).await?.describe_key(key_id, tenant).await
    }
    async fn get_public_key(&self, key_id: &str, tenant: &str) -> Result<PublicKeyInfo, KmsError> {
        let mut info = self
            .enter(key_id)
            .await?
            .get_public_key(key_id, tenant)
            .await?;
        if let Some(spki) = self.served_public_key.lock().unwrap().clone() {
            info.spki_der = spki;
        }
        Ok(info)
    }
}

/// The tests' deployment audit key: one fixed key, so every node of a
/// test signs with the same key, as the nodes of one deployment do.
pub fn test_audit_key() -> Arc<callvault::audit::note::SignerKey> {
    let seed = zeroize::Zeroizing::new([7u8; 32]);
    Arc::new(callvault::audit::note::SignerKey::from_seed("callvault-test", seed).unwrap())
}

pub async fn spawn_app(kind: CatalogKind) -> TestApp {
    spawn_app_with(kind, Remote::Local, KeyCacheConfig::default()).await
}

pub async fn spawn_app_with(kind: CatalogKind, remote: Remote, cache: KeyCacheConfig) -> TestApp {
    spawn_app_opts(AppOptions {
        kind,
        remote,
        cache,
        ..AppOptions::default()
    })
    .await
}

/// Rewrites a catalog URL (e.g. to route it through a fault proxy).
pub type RouteCatalog = Box<dyn FnOnce(&str) -> String + Send>;

/// Adjusts an archive before its server starts.
pub type Tune = Box<dyn FnOnce(&mut Archive) + Send>;

/// Everything a test may vary about its app.
pub struct AppOptions {
    pub kind: CatalogKind,
    pub remote: Remote,
    pub cache: KeyCacheConfig,
    pub limits: Limits,
    /// Rewrites the catalog URL the server uses (e.g. through a fault proxy);
    /// the test's own view (`db_url`) stays direct.
    pub route_catalog: Option<RouteCatalog>,
    /// `--allowed-kms-accounts`, applied after the test tenant exists.
    pub allowed_kms_accounts: Vec<String>,
    /// Serve the HTTP side door too (`TestApp::http_addr`).
    pub http: bool,
    /// Adjusts the archive before the server starts.
    pub tune: Option<Tune>,
}

impl Default for AppOptions {
    fn default() -> Self {
        Self {
            kind: CatalogKind::Sqlite,
            remote: Remote::Local,
            cache: KeyCacheConfig::default(),
            limits: Limits::default(),
            route_catalog: None,
            allowed_kms_accounts: Vec::new(),
            http: false,
            tune: None,
        }
    }
}

pub async fn spawn_app_opts(opts: AppOptions) -> TestApp {
    let AppOptions {
        kind,
        remote,
        cache,
        limits,
        route_catalog,
        allowed_kms_accounts,
        http,
        tune,
    } = opts;
    init_logging();
    let dir = tempfile::tempdir().unwrap();
    let (db_url, pg_db) = match kind {
        CatalogKind::Sqlite => (
            format!("sqlite://{}", dir.path().join("catalog.db").display()),
            None,
        ),
        CatalogKind::Postgres => {
            let (url, name) = fresh_pg_database().await;
            (url, Some(name))
        }
    };
    let server_db_url = match route_catalog {
        Some(route) => route(&db_url),
        None => db_url.clone(),
    };
    let catalog = Catalog::connect(&server_db_url).await.unwrap();
    #[allow(clippy::type_complexity)]
    let (store, kms, ring, key_arn): (ChunkStore, Arc<dyn Kms>, _, String) = match remote {
        Remote::Local => {
            let ring = Arc::new(LocalKeyring::open(dir.path(), "local").unwrap());
            let arn = ring.create_key().unwrap();
            (
                ChunkStore::local(&dir.path().join("objects")).unwrap(),
                ring.clone(),
                Some(ring),
                arn,
            )
        }
        Remote::Moto => {
            let kms = moto_kms().await;
            let arn = moto_create_key(&kms).await;
            let bucket = moto_bucket().await;
            let store = ChunkStore::from_url(
                &format!("s3://{bucket}/archive"),
                &S3Options {
                    endpoint: Some(moto_endpoint()),
                    region: Some("us-east-1".into()),
                },
            )
            .unwrap();
            (store, Arc::new(kms), None, arn)
        }
        Remote::LocalStack => {
            set_moto_credentials();
            let kms = AwsKms::connect("us-east-1", Some(&localstack_endpoint())).await;
            let arn = localstack_create_key(aws_sdk_kms::types::KeySpec::SymmetricDefault).await;
            (
                ChunkStore::local(&dir.path().join("objects")).unwrap(),
                Arc::new(kms),
                None,
                arn,
            )
        }
    };
    let region = match remote {
        Remote::Moto | Remote::LocalStack => "us-east-1",
        Remote::Local => "local",
    };
    let mut archive = Archive::new(catalog, store, kms, &cache, limits, test_audit_key());
    let boot = callvault::operator::bootstrap_tenant(&archive, "acme", &key_arn, region)
        .await
        .unwrap();
    archive.allowed_kms_accounts =
        callvault::domain::AllowedAccounts::new(&allowed_kms_accounts).unwrap();
    // Tests count KMS calls and objects right after an ingest: the peaks
    // job keeps to its poll here unless a test asks for the wake-up.
    archive.schedule.peaks_on_commit = false;
    if let Some(tune) = tune {
        tune(&mut archive);
    }
    let server = if http {
        LocalServer::start_with_http(archive, Roles::ALL)
            .await
            .unwrap()
    } else {
        LocalServer::start(Arc::new(archive), Roles::ALL)
            .await
            .unwrap()
    };
    let archive = server.archive.clone();
    TestApp {
        addr: server.addr.clone(),
        http_addr: server.http_addr.clone(),
        archive,
        ring,
        dir,
        tenant: boot.tenant,
        ingest_token: boot.ingest_token,
        supervisor_token: boot.supervisor_token,
        admin_token: boot.admin_token,
        compliance_token: boot.compliance_token,
        db_url,
        pg_db,
        server: Some(server),
    }
}

pub fn header(call_id: &str) -> pb::IngestHeader {
    pb::IngestHeader {
        external_call_id: call_id.into(),
        start_time: None,
        labels: Default::default(),
        chunk_size_bytes: 0,
        participants: Default::default(),
    }
}

impl TestApp {
    /// A pooled catalog connection, for reads in assertions.
    pub async fn db(&self) -> callvault::catalog::PooledConn {
        self.archive.catalog.conn().await.unwrap()
    }

    pub async fn client(&self, token: &str) -> Client {
        Client::connect(&self.addr, token).await.unwrap()
    }

    /// The components of another node over this app's catalog and local
    /// object store, with `kms` as its KMS client.
    pub async fn node_archive(&self, kms: Arc<dyn Kms>, cache: &KeyCacheConfig) -> Arc<Archive> {
        let catalog = Catalog::connect(&self.db_url).await.unwrap();
        let store = ChunkStore::local(&self.dir.path().join("objects")).unwrap();
        Arc::new(Archive::new(
            catalog,
            store,
            kms,
            cache,
            Limits::default(),
            test_audit_key(),
        ))
    }

    /// Starts another node serving `roles`.
    pub async fn node(&self, kms: Arc<dyn Kms>, roles: Roles, cache: &KeyCacheConfig) -> Node {
        let archive = self.node_archive(kms, cache).await;
        let server = LocalServer::start(archive.clone(), roles).await.unwrap();
        Node {
            addr: server.addr.clone(),
            archive,
            server: Some(server),
        }
    }

    /// Stops this app's server (and with it its background workers); the
    /// archive stays usable directly.
    pub async fn stop_server(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await.unwrap();
        }
    }

    /// The local keyring (Remote::Local apps).
    pub fn ring(&self) -> &Arc<LocalKeyring> {
        self.ring.as_ref().expect("this app runs the local keyring")
    }

    /// Ingests `audio` in 64 KiB messages with the minimum chunk size, so
    /// even small fixtures span several chunks.
    pub async fn ingest(
        &self,
        call_id: &str,
        audio: Bytes,
    ) -> Result<pb::IngestResponse, tonic::Status> {
        let mut h = header(call_id);
        h.chunk_size_bytes = 64 * 1024;
        self.client(&self.ingest_token)
            .await
            .ingest_stream(h, callvault::client::pieces(audio, 64 * 1024))
            .await
    }

    pub async fn play(&self, id: &str) -> Result<Vec<u8>, tonic::Status> {
        self.client(&self.supervisor_token)
            .await
            .play_all(id, 0)
            .await
            .map(|(b, _)| b)
    }

    /// Creates a second tenant on the same server.
    pub async fn other_tenant(&self, name: &str) -> (Tenant, String, String) {
        let arn = match &self.ring {
            Some(r) => r.create_key().unwrap(),
            None => callvault::catalog::keys::active(&mut *self.db().await, &self.tenant.id)
                .await
                .unwrap()
                .key_arn
                .to_string(),
        };
        let t = callvault::operator::create_tenant(&self.archive, name, &arn, "local")
            .await
            .unwrap();
        let i = callvault::operator::create_token(&self.archive, name, Role::Ingest, None)
            .await
            .unwrap()
            .secret
            .expose_secret()
            .to_owned();
        let s = callvault::operator::create_token(&self.archive, name, Role::Supervisor, None)
            .await
            .unwrap()
            .secret
            .expose_secret()
            .to_owned();
        (t, i, s)
    }

    pub async fn shutdown(mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await.unwrap();
        }
        self.archive.catalog.close().await;
        if let Some(db) = &self.pg_db {
            drop_pg_database(db).await;
        }
    }

    /// Every byte the archive persisted: object files (local store), the
    /// catalog's rows, and the logs. For the plaintext and key scans.
    pub async fn persisted_bytes(&self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for entry in walk(self.dir.path()) {
            if entry.extension().is_some_and(|e| e == "json")
                && entry.file_name().is_some_and(|n| n == "keyring.json")
            {
                continue; // the keyring holds KEKs by design; data keys are checked separately
            }
            out.push(std::fs::read(&entry).unwrap_or_default());
        }
        use sqlx::Row;
        for table in [
            "tenants",
            "tenant_keys",
            "recordings",
            "chunks",
            "api_tokens",
            "rewrap_jobs",
        ] {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT * FROM {table}")))
                .fetch_all(self.archive.catalog.pool())
                .await
                .unwrap();
            for row in rows {
                for i in 0..row.len() {
                    if let Ok(Some(b)) = row.try_get::<Option<Vec<u8>>, _>(i) {
                        out.push(b);
                    } else if let Ok(Some(s)) = row.try_get::<Option<String>, _>(i) {
                        out.push(s.into_bytes());
                    }
                }
            }
        }
        out.push(captured_logs());
        out
    }
}

pub(crate) fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Runs the real binary as a client of `server` with `token`.
pub fn client_cli(server: &str, token: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_callvault"))
        .args(args)
        .env("CALLVAULT_SERVER", server)
        .env("CALLVAULT_TOKEN", token)
        .env("CALLVAULT_LOG", "warn")
        .output()
        .unwrap()
}

/// [`client_cli`] for a server in this test's own runtime: the command runs
/// without blocking the thread the server needs to answer it.
pub async fn cli_against(server: &str, token: &str, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_callvault"))
        .args(args)
        .env("CALLVAULT_SERVER", server)
        .env("CALLVAULT_TOKEN", token)
        .env("CALLVAULT_LOG", "warn")
        .output()
        .await
        .unwrap()
}

/// True if any 32-byte window of `needle` (sampled) occurs in `hay`.
pub fn contains_window(hay: &[u8], needle: &[u8]) -> bool {
    if needle.len() < 32 || hay.len() < 32 {
        return false;
    }
    let step = (needle.len() / 64).max(1);
    (0..needle.len() - 32)
        .step_by(step)
        .map(|i| &needle[i..i + 32])
        .filter(|w| w.iter().any(|&b| b != w[0])) // skip silence runs
        .any(|w| hay.windows(32).any(|h| h == w))
}

/// ffmpeg at its default settings for the codec, from a noise source (noise
/// does not compress, so files are as large as real calls).
pub async fn ffmpeg_noise(
    dir: &std::path::Path,
    name: &str,
    seconds: u32,
    rate: u32,
    channels: u32,
    codec_args: &[&str],
) -> Bytes {
    let out = dir.join(name);
    let status = tokio::process::Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
        ])
        .arg(format!(
            "anoisesrc=color=pink:amplitude=0.2:sample_rate={rate}:duration={}",
            seconds
        ))
        .args(["-ac", &channels.to_string()])
        .args(codec_args)
        .arg(&out)
        .status()
        .await
        .expect("ffmpeg is installed");
    assert!(status.success(), "ffmpeg failed for {name}");
    Bytes::from(std::fs::read(out).unwrap())
}

/// A proto enum value's name as the API's old strings spelled it:
/// `JOB_STATE_SUCCEEDED` is `succeeded`, `KEY_STATE_PENDING_DELETION` is
/// `pending_deletion`.
pub fn enum_word(name: &str) -> String {
    ["KEY_STATE_", "KEY_STATUS_", "JOB_STATE_"]
        .iter()
        .find_map(|p| name.strip_prefix(p))
        .unwrap_or(name)
        .to_ascii_lowercase()
}

/// A loopback port nothing listens on right now (for a child process to
/// bind).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
