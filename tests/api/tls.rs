//! TLS on the node's listeners and in the client, with certificates made in
//! the test (rcgen): who is trusted and who is refused at the handshake,
//! that `https://` never falls back to cleartext, certificate reload in the
//! real binary, metrics over TLS, and the loopback rule for cleartext.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use callvault::client::{Client, ConnectOptions, pieces};
use callvault::server::{LocalServer, Roles};
use callvault::tls::{ServerTls, TlsFiles};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{CatalogKind, TestApp, fixture, free_port, header, spawn_app};

const BIN: &str = env!("CARGO_BIN_EXE_callvault");

/// A certificate authority made for one test.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

/// A leaf certificate and its key, as PEM and the DER a peer sees.
struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: Vec<u8>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Self {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    fn leaf(
        &self,
        names: &[&str],
        usage: ExtendedKeyUsagePurpose,
        serial: u64,
        valid: (OffsetDateTime, OffsetDateTime),
    ) -> Leaf {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        params.extended_key_usages = vec![usage];
        params.serial_number = Some(SerialNumber::from(serial));
        (params.not_before, params.not_after) = valid;
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    /// A server certificate for 127.0.0.1 and localhost, valid from
    /// yesterday for `days`.
    fn server(&self, serial: u64, days: i64) -> Leaf {
        let now = OffsetDateTime::now_utc();
        self.leaf(
            &["127.0.0.1", "localhost"],
            ExtendedKeyUsagePurpose::ServerAuth,
            serial,
            (
                now - time::Duration::days(1),
                now + time::Duration::days(days),
            ),
        )
    }

    fn client(&self, name: &str) -> Leaf {
        let now = OffsetDateTime::now_utc();
        self.leaf(
            &[name],
            ExtendedKeyUsagePurpose::ClientAuth,
            7,
            (
                now - time::Duration::days(1),
                now + time::Duration::days(30),
            ),
        )
    }
}

/// Writes `contents` to `path` the way certificate tools should (a new file
/// renamed over the old), so a reader never sees half a file.
fn write_atomic(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The PEM files of one test in a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.path(name);
        write_atomic(&path, contents);
        path
    }

    /// Writes `leaf` as `<name>.pem` and `<name>.key`.
    fn write_leaf(&self, name: &str, leaf: &Leaf) -> (PathBuf, PathBuf) {
        (
            self.write(&format!("{name}.pem"), &leaf.cert_pem),
            self.write(&format!("{name}.key"), &leaf.key_pem),
        )
    }

    fn server_files(&self, leaf: &Leaf, client_ca: Option<&Ca>) -> TlsFiles {
        let (cert, key) = self.write_leaf("server", leaf);
        TlsFiles {
            cert,
            key,
            client_ca: client_ca.map(|ca| self.write("client-ca.pem", &ca.pem)),
        }
    }

    fn trusting(&self, ca: &Ca) -> ConnectOptions {
        ConnectOptions {
            ca_cert: Some(self.write("trusted-ca.pem", &ca.pem)),
            ..Default::default()
        }
    }

    fn with_identity(&self, opts: &ConnectOptions, name: &str, leaf: &Leaf) -> ConnectOptions {
        let (cert, key) = self.write_leaf(name, leaf);
        ConnectOptions {
            client_cert: Some(cert),
            client_key: Some(key),
            ..opts.clone()
        }
    }
}

async fn start_tls(app: &TestApp, files: TlsFiles) -> LocalServer {
    let tls = Arc::new(ServerTls::load(files).unwrap());
    LocalServer::start_tls(app.archive.clone(), Roles::ALL, tls)
        .await
        .unwrap()
}

/// An error and every cause, on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(" / ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// Connects and makes one authenticated call; the error text, if either fails.
async fn list_recordings(addr: &str, token: &str, opts: &ConnectOptions) -> Result<(), String> {
    let mut client = Client::connect_with(addr, token, opts)
        .await
        .map_err(|e| chain(&e))?;
    client
        .playback
        .list_recordings(callvault::api::pb::ListRecordingsRequest::default())
        .await
        .map(|_| ())
        .map_err(|e| chain(&e))
}

#[tokio::test]
async fn tls_a_trusted_client_ingests_and_plays_back() {
    let app = spawn_app(CatalogKind::Sqlite).await;
    let (pki, ca) = (Pki::new(), Ca::new("callvault test CA"));
    let server = start_tls(&app, pki.server_files(&ca.server(1, 30), None)).await;
    assert!(server.addr.starts_with("https://127.0.0.1:"));
    let opts = pki.trusting(&ca);

    let audio = fixture("speech_mulaw.wav");
    let mut uploader = Client::connect_with(&server.addr, &app.ingest_token, &opts)
        .await
        .unwrap();
    let rec = uploader
        .ingest_stream(header("tls-1"), pieces(audio.clone(), 64 * 1024))
        .await
        .unwrap()
        .recording
        .unwrap();
    let mut player = Client::connect_with(&server.addr, &app.supervisor_token, &opts)
        .await
        .unwrap();
    let (played, _) = player.play_all(&rec.recording_id, 0).await.unwrap();
    assert!(
        played == audio,
        "the recording played back over TLS differs"
    );

    server.stop().await.unwrap();
    app.shutdown().await;
}

#[tokio::test]
async fn tls_a_server_certificate_from_an_untrusted_ca_or_expired_is_refused() {
    let app = spawn_app(CatalogKind::Sqlite).await;
    let (pki, ca, other) = (Pki::new(), Ca::new("server CA"), Ca::new("another CA"));
    let server = start_tls(&app, pki.server_files(&ca.server(1, 30), None)).await;

    // Trusting another CA, or only the system's roots: the certificate is
    // not verified, so nothing is sent.
    for opts in [pki.trusting(&other), ConnectOptions::default()] {
        let err = list_recordings(&server.addr, &app.supervisor_token, &opts)
            .await
            .unwrap_err();
        assert!(
            err.contains("invalid peer certificate") && err.contains("UnknownIssuer"),
            "{err}"
        );
    }
    server.stop().await.unwrap();

    // A certificate from the trusted CA whose validity ended yesterday.
    let now = OffsetDateTime::now_utc();
    let expired = ca.leaf(
        &["127.0.0.1"],
        ExtendedKeyUsagePurpose::ServerAuth,
        2,
        (
            now - time::Duration::days(30),
            now - time::Duration::days(1),
        ),
    );
    let server = start_tls(&app, pki.server_files(&expired, None)).await;
    let err = list_recordings(&server.addr, &app.supervisor_token, &pki.trusting(&ca))
        .await
        .unwrap_err();
    assert!(err.contains("certificate expired"), "{err}");
    // The same CA's valid certificate is accepted: the expiry is the cause.
    server.stop().await.unwrap();
    let server = start_tls(&app, pki.server_files(&ca.server(3, 30), None)).await;
    list_recordings(&server.addr, &app.supervisor_token, &pki.trusting(&ca))
        .await
        .unwrap();

    server.stop().await.unwrap();
    app.shutdown().await;
}

/// A raw TLS client (ALPN `alpn`) trusting `ca`, presenting `identity`.
fn rustls_client(ca: &str, identity: Option<&Leaf>, alpn: &[u8]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(callvault::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match identity {
        None => builder.with_no_client_auth(),
        Some(leaf) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap(),
            )
            .unwrap(),
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// Completes a TLS handshake with `port` on 127.0.0.1 and sends `request`;
/// the server's first bytes, or the error.
async fn tls_exchange(
    connector: &tokio_rustls::TlsConnector,
    port: u16,
    request: &[u8],
) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = connector.connect(name, tcp).await?;
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    tls.write_all(request).await?;
    let mut buf = vec![0; 64 * 1024];
    let n = tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buf))
        .await
        .map_err(|_| std::io::Error::other("no answer"))??;
    buf.truncate(n);
    Ok((leaf, buf))
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

/// A call refused by the server's TLS `alert`, as the client saw it: the
/// alert itself, or the connection ending under a call still on its way.
fn refused_with(err: &str, alert: &str) -> bool {
    err.contains(&format!("received fatal alert: {alert}"))
        || err.contains("connection closed")
        || err.contains("broken pipe")
}

/// The HTTP/2 client preface and an empty SETTINGS frame.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";

#[tokio::test]
async fn tls_mtls_refuses_clients_without_a_valid_certificate_at_the_handshake() {
    let app = spawn_app(CatalogKind::Sqlite).await;
    let pki = Pki::new();
    let (ca, clients, rogue) = (Ca::new("server CA"), Ca::new("client CA"), Ca::new("rogue"));
    let server = start_tls(&app, pki.server_files(&ca.server(1, 30), Some(&clients))).await;
    let trusting = pki.trusting(&ca);
    let token = &app.supervisor_token;

    // No client certificate: the server ends the handshake with a
    // `certificate_required` alert, so no HTTP/2 byte from the client is
    // ever read. (Under TLS 1.3 the client has finished its side of the
    // handshake by then and learns of the refusal on its first read: the
    // call fails, usually naming the alert; a call still queued when the
    // connection closed is reported without it.)
    let err = list_recordings(&server.addr, token, &trusting)
        .await
        .unwrap_err();
    assert!(refused_with(&err, "CertificateRequired"), "{err}");
    let err = tls_exchange(
        &rustls_client(&ca.pem, None, b"h2"),
        port_of(&server.addr),
        H2_PREFACE,
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("CertificateRequired"),
        "raw handshake: {err}"
    );

    // A certificate from a CA the server does not trust for clients.
    let opts = pki.with_identity(&trusting, "rogue", &rogue.client("mallory"));
    let err = list_recordings(&server.addr, token, &opts)
        .await
        .unwrap_err();
    assert!(refused_with(&err, "UnknownCA"), "{err}");
    let err = tls_exchange(
        &rustls_client(&ca.pem, Some(&rogue.client("mallory")), b"h2"),
        port_of(&server.addr),
        H2_PREFACE,
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("UnknownCA"),
        "raw handshake: {err}"
    );

    // A certificate from the client CA: served.
    let opts = pki.with_identity(&trusting, "agent", &clients.client("platform-1"));
    list_recordings(&server.addr, token, &opts).await.unwrap();
    let mut uploader = Client::connect_with(&server.addr, &app.ingest_token, &opts)
        .await
        .unwrap();
    uploader
        .ingest_stream(
            header("mtls-1"),
            pieces(fixture("speech_mulaw.wav"), 64 * 1024),
        )
        .await
        .unwrap();

    // Failed handshakes are logged with the reason.
    let logs = String::from_utf8_lossy(&crate::helpers::captured_logs()).into_owned();
    assert!(
        logs.contains("TLS handshake failed") && logs.contains("peer sent no certificates"),
        "the refused handshake is not in the logs"
    );

    server.stop().await.unwrap();
    app.shutdown().await;
}

/// A TCP server that records what one client sends and answers like a
/// cleartext HTTP/2 server (a SETTINGS frame).
async fn recording_server() -> (String, tokio::task::JoinHandle<Vec<u8>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let recorded = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(5), sock.read(&mut buf)).await {
            seen.extend_from_slice(&buf[..n]);
        }
        let _ = sock.write_all(b"\0\0\0\x04\0\0\0\0\0").await;
        // Whatever else comes before the client gives up.
        while let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_secs(2), sock.read(&mut buf)).await
        {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
        }
        seen
    });
    (format!("{}:{}", addr.ip(), addr.port()), recorded)
}

#[tokio::test]
async fn tls_https_never_falls_back_to_cleartext_and_http_does_not_reach_a_tls_server() {
    let app = spawn_app(CatalogKind::Sqlite).await;
    let (pki, ca) = (Pki::new(), Ca::new("server CA"));
    let opts = pki.trusting(&ca);

    // https:// to the cleartext server: an error, not a cleartext session.
    let https_to_plain = app.addr.replacen("http://", "https://", 1);
    let err = list_recordings(&https_to_plain, &app.supervisor_token, &opts)
        .await
        .unwrap_err();
    assert!(err.contains("cannot connect"), "{err}");

    // On the wire: the client's first bytes are a TLS handshake record, and
    // neither the HTTP/2 preface nor the token ever goes out in cleartext.
    let (addr, recorded) = recording_server().await;
    let token = app.supervisor_token.clone();
    let res = list_recordings(&format!("https://{addr}"), &token, &opts).await;
    assert!(res.is_err(), "https:// to a cleartext server must fail");
    let seen = recorded.await.unwrap();
    assert!(
        seen.len() > 5 && seen[0] == 0x16 && seen[1] == 0x03,
        "the first bytes are not a TLS handshake record: {:02x?}",
        &seen[..seen.len().min(16)]
    );
    let contains = |needle: &[u8]| seen.windows(needle.len()).any(|w| w == needle);
    assert!(!contains(b"PRI * HTTP/2.0"), "HTTP/2 in cleartext");
    assert!(!contains(token.as_bytes()), "the token in cleartext");

    // http:// to the TLS server: no call succeeds.
    let server = start_tls(&app, pki.server_files(&ca.server(1, 30), None)).await;
    let http_to_tls = server.addr.replacen("https://", "http://", 1);
    let err = list_recordings(
        &http_to_tls,
        &app.supervisor_token,
        &ConnectOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(!err.is_empty());
    // And the client refuses TLS settings with an http:// URL outright.
    let err = list_recordings(&http_to_tls, &app.supervisor_token, &opts)
        .await
        .unwrap_err();
    assert!(err.contains("use https://"), "{err}");

    server.stop().await.unwrap();
    app.shutdown().await;
}

#[tokio::test]
async fn tls_a_silent_peer_does_not_hold_up_other_handshakes() {
    let app = spawn_app(CatalogKind::Sqlite).await;
    let (pki, ca) = (Pki::new(), Ca::new("server CA"));
    let server = start_tls(&app, pki.server_files(&ca.server(1, 30), None)).await;
    let port = port_of(&server.addr);
    // Peers that connect and never send a ClientHello, and one that sends
    // half of one.
    let mut silent = Vec::new();
    for _ in 0..8 {
        silent.push(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    }
    let mut half = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    half.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();

    // A real client is served at once, well inside the handshake timeout
    // the silent peers are waiting out.
    let started = Instant::now();
    list_recordings(&server.addr, &app.supervisor_token, &pki.trusting(&ca))
        .await
        .unwrap();
    assert!(
        started.elapsed() < callvault::tls::HANDSHAKE_TIMEOUT / 2,
        "a good client waited {:?} behind silent peers",
        started.elapsed()
    );
    drop((silent, half));
    server.stop().await.unwrap();
    app.shutdown().await;
}

/// `callvault serve` as a process, its log in a file; killed when dropped.
struct Serve {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Serve {
    /// Starts `serve` on 127.0.0.1 and waits until it accepts connections.
    async fn start(data_dir: &Path, extra: &[&str]) -> Self {
        let port = free_port();
        let log = data_dir.join(format!("serve-{port}.log"));
        let child = Command::new(BIN)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .env("CALLVAULT_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut serve = Self { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            if let Some(status) = serve.child.try_wait().unwrap() {
                panic!("serve exited with {status}: {}", serve.log());
            }
            assert!(Instant::now() < deadline, "server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        serve
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until a fresh connection is served `want`, or fails saying what
/// was served instead.
async fn await_certificate(serve: &Serve, ca: &Ca, want: &Leaf, within: Duration, what: &str) {
    let connector = rustls_client(&ca.pem, None, b"h2");
    let deadline = Instant::now() + within;
    loop {
        let tcp = TcpStream::connect(("127.0.0.1", serve.port)).await.unwrap();
        let tls = connector
            .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
            .await
            .unwrap();
        if tls.get_ref().1.peer_certificates().unwrap()[0].as_ref() == want.der.as_slice() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the new certificate is not served after {within:?}\n{}",
            serve.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the server's log has a line containing every one of `parts`.
async fn await_log(serve: &Serve, parts: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !serve
        .log()
        .lines()
        .any(|l| parts.iter().all(|p| l.contains(p)))
    {
        assert!(
            Instant::now() < deadline,
            "no log line with {parts:?}:\n{}",
            serve.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn tls_the_binary_reloads_its_certificate_on_sighup_and_on_file_change() {
    let data = tempfile::tempdir().unwrap();
    let (pki, ca) = (Pki::new(), Ca::new("server CA"));
    let first = ca.server(1, 30);
    let files = pki.server_files(&first, None);
    let mut serve = Serve::start(
        data.path(),
        &[
            "--tls-cert",
            files.cert.to_str().unwrap(),
            "--tls-key",
            files.key.to_str().unwrap(),
        ],
    )
    .await;
    await_certificate(&serve, &ca, &first, Duration::ZERO, "at start").await;
    // An HTTP/2 connection made now outlives the reloads below.
    let connector = rustls_client(&ca.pem, None, b"h2");
    let tcp = TcpStream::connect(("127.0.0.1", serve.port)).await.unwrap();
    let mut kept = connector
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap();
    kept.write_all(H2_PREFACE).await.unwrap();
    let mut buf = [0u8; 1024];
    let n = kept.read(&mut buf).await.unwrap();
    assert!(n > 0, "no HTTP/2 SETTINGS from the server");

    // New files (another serial, another expiry), then SIGHUP.
    let second = ca.server(2, 60);
    pki.write_leaf("server", &second);
    serve.signal("-HUP");
    await_certificate(&serve, &ca, &second, Duration::from_secs(4), "SIGHUP").await;
    await_log(&serve, &["TLS certificate reloaded", "SIGHUP"]).await;

    // A key that is not the certificate's: refused, the current one stays.
    let stray = ca.server(3, 60);
    write_atomic(&files.key, &stray.key_pem);
    serve.signal("-HUP");
    await_log(
        &serve,
        &["not reloaded", "SIGHUP", "cannot serve the certificate"],
    )
    .await;
    await_certificate(&serve, &ca, &second, Duration::ZERO, "after a bad key").await;

    // New files and no signal: the file poll finds them.
    let third = ca.server(4, 90);
    pki.write_leaf("server", &third);
    await_certificate(
        &serve,
        &ca,
        &third,
        callvault::tls::RELOAD_POLL * 3,
        "file change",
    )
    .await;
    await_log(&serve, &["TLS certificate reloaded", "file change"]).await;

    // The process never restarted, and the connection from before the
    // reloads still works: an HTTP/2 PING comes back acknowledged.
    assert!(serve.child.try_wait().unwrap().is_none());
    kept.write_all(b"\0\0\x08\x06\0\0\0\0\0reloads!")
        .await
        .unwrap();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !seen.windows(8).any(|w| w == b"reloads!") {
        assert!(
            Instant::now() < deadline,
            "the connection made before the reloads no longer answers"
        );
        let n = tokio::time::timeout(Duration::from_secs(5), kept.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "the connection made before the reloads was closed");
        seen.extend_from_slice(&buf[..n]);
    }
}

/// Bootstraps a tenant with the binary; returns (ingest, supervisor) tokens.
fn bootstrap(dir: &Path) -> (String, String) {
    let cli = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(args)
            .arg("--data-dir")
            .arg(dir)
            .env("CALLVAULT_LOG", "warn")
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    cli(&["tenant", "create", "acme"]);
    let token = |role| cli(&["token", "create", "--tenant", "acme", "--role", role]);
    (token("ingest"), token("supervisor"))
}

#[tokio::test]
async fn tls_the_binary_serves_grpc_and_metrics_over_mtls_to_the_cli() {
    let data = tempfile::tempdir().unwrap();
    let (ingest, supervisor) = bootstrap(data.path());
    let pki = Pki::new();
    let (ca, clients) = (Ca::new("server CA"), Ca::new("client CA"));
    let files = pki.server_files(&ca.server(1, 30), Some(&clients));
    let metrics_port = free_port();
    let serve = Serve::start(
        data.path(),
        &[
            "--tls-cert",
            files.cert.to_str().unwrap(),
            "--tls-key",
            files.key.to_str().unwrap(),
            "--tls-client-ca",
            files.client_ca.as_ref().unwrap().to_str().unwrap(),
            "--metrics-listen",
            &format!("127.0.0.1:{metrics_port}"),
        ],
    )
    .await;
    let server = format!("https://127.0.0.1:{}", serve.port);
    let ca_path = pki.write("ca.pem", &ca.pem);
    let identity = clients.client("platform-1");
    let (client_cert, client_key) = pki.write_leaf("client", &identity);

    // The CLI with the CA and the client certificate, from the environment
    // as an operator would set them.
    let cli = |token: &str, args: &[&str], with_identity: bool| {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env("CALLVAULT_SERVER", &server)
            .env("CALLVAULT_TOKEN", token)
            .env("CALLVAULT_CA_CERT", &ca_path)
            .env("CALLVAULT_LOG", "warn");
        if with_identity {
            cmd.env("CALLVAULT_CLIENT_CERT", &client_cert)
                .env("CALLVAULT_CLIENT_KEY", &client_key);
        }
        cmd.output().unwrap()
    };
    let input = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/speech.flac");
    let out = cli(
        &ingest,
        &["ingest", input, "--call-id", "tls-cli", "--json"],
        true,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rec: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let played = data.path().join("played.flac");
    let out = cli(
        &supervisor,
        &[
            "play",
            rec["recording_id"].as_str().unwrap(),
            "-o",
            played.to_str().unwrap(),
        ],
        true,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(std::fs::read(&played).unwrap() == std::fs::read(input).unwrap());

    // Without the client certificate the CLI is refused.
    let out = cli(&supervisor, &["recordings", "list", "--json"], false);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    await_log(
        &serve,
        &["TLS handshake failed", "peer sent no certificates"],
    )
    .await;

    // Metrics: the same certificate and client verification, HTTP/1.1.
    let get = b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let (leaf, body) = tls_exchange(
        &rustls_client(&ca.pem, Some(&identity), b"http/1.1"),
        metrics_port,
        get,
    )
    .await
    .unwrap();
    let body = String::from_utf8_lossy(&body);
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert_eq!(
        leaf,
        std::fs::read(&files.cert)
            .map(|pem| CertificateDer::from_pem_slice(&pem).unwrap().to_vec())
            .unwrap()
    );
    let err = tls_exchange(
        &rustls_client(&ca.pem, None, b"http/1.1"),
        metrics_port,
        get,
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("CertificateRequired"), "{err}");
    // Cleartext HTTP to the metrics port gets no HTTP answer.
    let mut sock = TcpStream::connect(("127.0.0.1", metrics_port))
        .await
        .unwrap();
    sock.write_all(get).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), sock.read_to_end(&mut answer)).await;
    assert!(
        !answer.starts_with(b"HTTP/"),
        "metrics answered cleartext HTTP"
    );
}

/// Runs `serve` with `args` and returns its exit status and stderr once it
/// exits, or `None` if it is still serving after it logged that it serves.
async fn serve_outcome(args: &[&str]) -> Option<(std::process::ExitStatus, String)> {
    let data = tempfile::tempdir().unwrap();
    let log = data.path().join("serve.log");
    let mut child = Command::new(BIN)
        .arg("serve")
        .arg("--data-dir")
        .arg(data.path())
        .args(args)
        .env("CALLVAULT_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let outcome = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some((status, std::fs::read_to_string(&log).unwrap()));
        }
        if std::fs::read_to_string(&log)
            .unwrap()
            .contains("callvault serving")
        {
            break None;
        }
        assert!(Instant::now() < deadline, "serve neither failed nor served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    outcome
}

#[tokio::test]
async fn tls_cleartext_off_loopback_refuses_to_start_without_allow_insecure() {
    for (args, listener) in [
        (&["--listen", "0.0.0.0:0"][..], "gRPC"),
        (
            &["--listen", "127.0.0.1:0", "--metrics-listen", "0.0.0.0:0"][..],
            "metrics",
        ),
    ] {
        let (status, stderr) = serve_outcome(args)
            .await
            .unwrap_or_else(|| panic!("{args:?} started in cleartext off loopback"));
        assert!(!status.success());
        assert!(
            stderr.contains(&format!(
                "refusing to serve {listener} in cleartext on 0.0.0.0"
            )) && stderr.contains("--allow-insecure")
                && stderr.contains("--tls-cert"),
            "{stderr}"
        );
        assert!(!stderr.contains("callvault serving"), "{stderr}");
    }
    // Said explicitly, or with TLS, the same address serves.
    assert!(
        serve_outcome(&["--listen", "0.0.0.0:0", "--allow-insecure"])
            .await
            .is_none()
    );
    let (pki, ca) = (Pki::new(), Ca::new("server CA"));
    let files = pki.server_files(&ca.server(1, 30), None);
    assert!(
        serve_outcome(&[
            "--listen",
            "0.0.0.0:0",
            "--tls-cert",
            files.cert.to_str().unwrap(),
            "--tls-key",
            files.key.to_str().unwrap(),
        ])
        .await
        .is_none()
    );
}

/// `--metrics-loopback-only` keeps the metrics (tenant ids, key ARNs) off
/// the network even where TLS would allow them.
#[tokio::test]
async fn metrics_loopback_only_refuses_a_remote_metrics_address_even_with_tls() {
    let (pki, ca) = (Pki::new(), Ca::new("server CA"));
    let files = pki.server_files(&ca.server(1, 30), None);
    let tls = [
        "--tls-cert",
        files.cert.to_str().unwrap(),
        "--tls-key",
        files.key.to_str().unwrap(),
    ];
    let with = |metrics: &'static str| {
        let mut a = vec!["--listen", "127.0.0.1:0", "--metrics-listen", metrics];
        a.extend_from_slice(&tls);
        a
    };
    let mut remote = with("0.0.0.0:0");
    remote.push("--metrics-loopback-only");
    let (status, stderr) = serve_outcome(&remote)
        .await
        .expect("served metrics off loopback with --metrics-loopback-only");
    assert!(!status.success());
    assert!(
        stderr.contains("--metrics-loopback-only") && stderr.contains("0.0.0.0"),
        "{stderr}"
    );
    // Without the flag TLS allows it; on loopback the flag allows it.
    assert!(serve_outcome(&with("0.0.0.0:0")).await.is_none());
    let mut local = with("127.0.0.1:0");
    local.push("--metrics-loopback-only");
    assert!(serve_outcome(&local).await.is_none());
}

/// The HTTP side door on the binary with the gRPC certificate: `play-url`
/// answers an `https://` URL under the listener's address, curl trusting
/// the CA reads a range of it, and cleartext HTTP gets no answer.
#[tokio::test]
async fn tls_the_binary_serves_signed_urls_over_https() {
    let data = tempfile::tempdir().unwrap();
    let (ingest, supervisor) = bootstrap(data.path());
    let pki = Pki::new();
    let ca = Ca::new("server CA");
    let files = pki.server_files(&ca.server(1, 30), None);
    let http_port = free_port();
    let serve = Serve::start(
        data.path(),
        &[
            "--tls-cert",
            files.cert.to_str().unwrap(),
            "--tls-key",
            files.key.to_str().unwrap(),
            "--http-listen",
            &format!("127.0.0.1:{http_port}"),
        ],
    )
    .await;
    let server = format!("https://127.0.0.1:{}", serve.port);
    let ca_path = pki.write("ca.pem", &ca.pem);
    let cli = |token: &str, args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .env("CALLVAULT_SERVER", &server)
            .env("CALLVAULT_TOKEN", token)
            .env("CALLVAULT_CA_CERT", &ca_path)
            .env("CALLVAULT_LOG", "warn")
            .output()
            .unwrap()
    };
    let input = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/speech.flac");
    let out = cli(
        &ingest,
        &["ingest", input, "--call-id", "tls-url", "--json"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rec: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = rec["recording_id"].as_str().unwrap();
    let out = cli(&supervisor, &["play-url", id, "--ttl", "2m"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(
        url.starts_with(&format!(
            "https://127.0.0.1:{http_port}/v1/recordings/{id}/audio?sig="
        )),
        "{url}"
    );
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "20", "--cacert"])
        .arg(&ca_path)
        .args(["-r", "100-1099", &url])
        .output()
        .await
        .expect("curl is installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, std::fs::read(input).unwrap()[100..1100]);
    // Cleartext HTTP to the same port gets no HTTP answer.
    let mut sock = TcpStream::connect(("127.0.0.1", http_port)).await.unwrap();
    sock.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), sock.read_to_end(&mut answer)).await;
    assert!(
        !answer.starts_with(b"HTTP/"),
        "the HTTP side door answered cleartext"
    );
}
