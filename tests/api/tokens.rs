//! Token lifecycle (hardening issue, item 8): expiry, `token list` without
//! secrets, revocation refused on every node within seconds, and a revoked
//! or expired token ending its open Play streams.

use std::time::{Duration, Instant};

use callvault::api::pb;
use callvault::audit::event::Action;
use callvault::domain::{Role, now_ms};
use secrecy::ExposeSecret;
use tonic::Code;

use crate::helpers::*;

/// Runs an operator command of the real binary on `app`'s catalog.
pub async fn operator_cli(app: &TestApp, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_callvault"))
        .args(args)
        .arg("--data-dir")
        .arg(app.dir.path())
        .arg("--database-url")
        .arg(&app.db_url)
        .env("CALLVAULT_LOG", "warn")
        .output()
        .await
        .unwrap()
}

async fn create_ingest_token(app: &TestApp, expires_in: &str) -> std::process::Output {
    let args = [
        "token",
        "create",
        "--tenant",
        "acme",
        "--role",
        "ingest",
        "--expires-in",
        expires_in,
    ];
    operator_cli(app, &args).await
}

/// The id (not the secret) of the app's bootstrap token of `role`.
async fn token_id_of(app: &TestApp, role: Role) -> String {
    callvault::operator::list_tokens(&app.archive, "acme")
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.role == role)
        .unwrap()
        .id
}

async fn list_as(addr: &str, token: &str) -> Result<(), tonic::Status> {
    let mut c = callvault::client::Client::connect(addr, token)
        .await
        .unwrap();
    c.playback
        .list_recordings(pb::ListRecordingsRequest::default())
        .await
        .map(|_| ())
}

/// Waits until `addr` refuses `token`, up to `limit`; returns how long it took.
async fn refused_within(addr: &str, token: &str, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        match list_as(addr, token).await {
            Err(s) => {
                assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");
                return started.elapsed();
            }
            Ok(()) => {
                assert!(
                    started.elapsed() < limit,
                    "{addr} still accepts the revoked token after {limit:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[tokio::test]
async fn an_expired_token_is_refused_even_when_cached() {
    let app = spawn_app(CatalogKind::Sqlite).await;
    let expires = now_ms() + 1500;
    let issued =
        callvault::operator::create_token(&app.archive, "acme", Role::Supervisor, Some(expires))
            .await
            .unwrap();
    let token = issued.secret.expose_secret().to_owned();
    let before = callvault::operator::list_tokens(&app.archive, "acme")
        .await
        .unwrap();
    let info = before.iter().find(|t| t.id == issued.id).unwrap();
    assert_eq!(
        (info.expires_at_ms, info.last_used_at_ms),
        (Some(expires), None)
    );

    // Works now (and is cached for the next 5 s), and records its use.
    list_as(&app.addr, &token).await.unwrap();
    let after = callvault::operator::list_tokens(&app.archive, "acme")
        .await
        .unwrap();
    let used = after
        .iter()
        .find(|t| t.id == issued.id)
        .unwrap()
        .last_used_at_ms;
    assert!(used.is_some_and(|t| t >= info.created_at_ms), "{used:?}");

    tokio::time::sleep(Duration::from_millis(
        u64::try_from(expires - now_ms()).unwrap_or(0) + 50,
    ))
    .await;
    let err = list_as(&app.addr, &token).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert_eq!(err.message(), "token expired");

    // An expiry in the past is refused at creation.
    let err =
        callvault::operator::create_token(&app.archive, "acme", Role::Ingest, Some(now_ms() - 1))
            .await
            .unwrap_err();
    assert!(err.to_string().contains("must be in the future"), "{err}");
}

#[tokio::test]
async fn token_commands_show_ids_and_times_never_secrets() {
    let app = spawn_app(CatalogKind::Sqlite).await;
    let out = create_ingest_token(&app, "90d").await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secret = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(
        secret.starts_with("cv_"),
        "stdout is the token alone: {secret}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("expires 20"), "{stderr}");
    list_as(&app.addr, &app.supervisor_token).await.unwrap();

    for bad in ["0s", "90", "ninety days", "1.5h"] {
        let out = create_ingest_token(&app, bad).await;
        assert!(!out.status.success(), "--expires-in {bad} accepted");
        assert!(String::from_utf8_lossy(&out.stderr).contains("--expires-in"));
    }

    let out = operator_cli(&app, &["token", "list", "--tenant", "acme", "--json"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let list: serde_json::Value = serde_json::from_str(&text).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(
        list.len(),
        5,
        "four bootstrap tokens and the new one: {text}"
    );
    let roles: Vec<_> = list.iter().map(|t| t["role"].as_str().unwrap()).collect();
    for role in ["ingest", "supervisor", "admin", "compliance"] {
        assert!(roles.contains(&role), "{roles:?}");
    }
    let newest = list.iter().find(|t| !t["expires_at"].is_null()).unwrap();
    assert!(newest["last_used_at"].is_null());
    let supervisor = list.iter().find(|t| t["role"] == "supervisor").unwrap();
    assert!(supervisor["last_used_at"].is_string(), "{supervisor}");
    for t in list {
        assert!(
            t["created_at"].is_string() && t["revoked_at"].is_null(),
            "{t}"
        );
    }
    for secret in [&secret, &app.supervisor_token, &app.admin_token] {
        assert!(
            !text.contains(secret.as_str()),
            "token list printed a secret"
        );
        let hash = callvault::catalog::hash_token(secret);
        assert!(!text.contains(&hash), "token list printed a token hash");
    }
    let table = operator_cli(&app, &["token", "list", "--tenant", "acme"]).await;
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(
        table.starts_with("TOKEN ID") && table.contains("never"),
        "{table}"
    );
}

async fn revoked_everywhere(kind: CatalogKind, limit: Duration) {
    let app = spawn_app(kind).await;
    let other = app
        .node(
            app.ring().clone(),
            callvault::server::Roles::ALL,
            &Default::default(),
        )
        .await;
    // Both nodes have the token cached.
    list_as(&app.addr, &app.supervisor_token).await.unwrap();
    list_as(&other.addr, &app.supervisor_token).await.unwrap();
    let id = token_id_of(&app, Role::Supervisor).await;

    // An operator revokes it from another process, as in production.
    let out = operator_cli(
        &app,
        &[
            "token",
            "revoke",
            &id,
            "--tenant",
            "acme",
            "--reason",
            "laptop stolen",
        ],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let a = refused_within(&app.addr, &app.supervisor_token, limit).await;
    let b = refused_within(&other.addr, &app.supervisor_token, limit).await;
    eprintln!("{kind:?}: refused after {a:?} and {b:?}");
    // The others keep working.
    list_as(&other.addr, &app.compliance_token).await.unwrap();

    let again = operator_cli(&app, &["token", "revoke", &id, "--tenant", "acme"]).await;
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already revoked"));
    let unknown = operator_cli(
        &app,
        &[
            "token",
            "revoke",
            "00000000-0000-0000-0000-000000000000",
            "--tenant",
            "acme",
        ],
    )
    .await;
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("not found"));

    let events = crate::audit::events(&app).await;
    let revoked = crate::audit::of(&events, Action::TokenRevoked);
    assert_eq!(revoked.len(), 1, "one revocation event");
    let details = serde_json::to_string(&revoked[0].details).unwrap();
    assert!(
        details.contains(&id) && details.contains("laptop stolen"),
        "{details}"
    );
}

/// PostgreSQL: NOTIFY reaches the other node at once (the poll is the
/// safety net), so well within the 5 s token cache TTL.
#[tokio::test]
async fn a_revoked_token_is_refused_on_every_node_within_seconds_on_postgres() {
    revoked_everywhere(CatalogKind::Postgres, Duration::from_secs(3)).await;
}

/// SQLite: the poll carries it (one node per catalog, the operator's
/// command in another process).
#[tokio::test]
async fn a_revoked_token_is_refused_within_seconds_on_sqlite() {
    revoked_everywhere(CatalogKind::Sqlite, Duration::from_secs(4)).await;
}

/// Reads a Play stream slowly after its first message, running `then`
/// once the first message arrived; returns (bytes received, how it ended).
pub async fn play_slowly(
    addr: &str,
    token: &str,
    id: &str,
    then: impl std::future::Future<Output = ()>,
    pause: Duration,
) -> (usize, Result<(), tonic::Status>) {
    let mut c = callvault::client::Client::connect(addr, token)
        .await
        .unwrap();
    let mut s = c
        .playback
        .play(pb::PlayRequest {
            recording_id: id.to_owned(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let first = s.message().await.unwrap().unwrap();
    let mut got = first.data.len();
    then.await;
    loop {
        tokio::time::sleep(pause).await;
        match s.message().await {
            Ok(Some(m)) => got += m.data.len(),
            Ok(None) => return (got, Ok(())),
            Err(e) => return (got, Err(e)),
        }
    }
}

/// A recording of about 34 MB in 1 MiB chunks: far more than the HTTP/2
/// windows hold, so a stream cut short is visibly short.
pub async fn big_recording(app: &TestApp) -> (String, usize) {
    let audio = bytes::Bytes::from(callvault::synth::synth_wav(180, 48_000, 2));
    let mut h = header("call-long");
    h.chunk_size_bytes = 1 << 20;
    let rec = app
        .client(&app.ingest_token)
        .await
        .ingest_stream(h, callvault::client::pieces(audio.clone(), 256 * 1024))
        .await
        .unwrap()
        .recording
        .unwrap();
    (rec.recording_id, audio.len())
}

async fn revoking_ends_open_plays(kind: CatalogKind) {
    let app = spawn_app(kind).await;
    let (id, size) = big_recording(&app).await;
    let token_id = token_id_of(&app, Role::Supervisor).await;
    let revoke = async {
        callvault::operator::revoke_token(&app.archive, "acme", &token_id, "test")
            .await
            .unwrap();
    };
    // PostgreSQL tells every node at once (NOTIFY); on SQLite the news
    // comes with the next 2 s poll, so the client reads slower there for
    // the stream to be cut visibly short.
    let pause = match kind {
        CatalogKind::Postgres => Duration::from_millis(100),
        CatalogKind::Sqlite => Duration::from_millis(300),
    };
    let (got, end) = play_slowly(&app.addr, &app.supervisor_token, &id, revoke, pause).await;
    let err = end.expect_err("the play outlived its token");
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert_eq!(err.message(), "token revoked");
    assert!(
        got < size / 2,
        "{got} of {size} bytes sent after revocation"
    );
}

on_both_catalogs!(
    revoking_a_token_ends_its_open_plays_on_sqlite,
    revoking_a_token_ends_its_open_plays_on_postgres,
    revoking_ends_open_plays
);

#[tokio::test]
async fn a_token_expiring_mid_play_ends_the_play() {
    let app = spawn_app(CatalogKind::Sqlite).await;
    let (id, size) = big_recording(&app).await;
    let issued = callvault::operator::create_token(
        &app.archive,
        "acme",
        Role::Supervisor,
        Some(now_ms() + 1500),
    )
    .await
    .unwrap();
    let (got, end) = play_slowly(
        &app.addr,
        issued.secret.expose_secret(),
        &id,
        async {},
        Duration::from_millis(150),
    )
    .await;
    let err = end.expect_err("the play outlived its token");
    assert_eq!(
        (err.code(), err.message()),
        (Code::Unauthenticated, "token expired")
    );
    assert!(got < size, "{got} of {size}");
}

/// An export is as long-lived as a play: revoking the compliance token
/// that runs it ends it.
#[tokio::test]
async fn revoking_a_token_ends_its_open_export() {
    let app = spawn_app(CatalogKind::Postgres).await;
    let (id, size) = big_recording(&app).await;
    let token_id = token_id_of(&app, Role::Compliance).await;
    let mut c = app.client(&app.compliance_token).await;
    let mut s = c
        .export
        .export(pb::ExportRequest {
            recording_ids: vec![id],
            reason: "case 42".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    s.message().await.unwrap().unwrap();
    callvault::operator::revoke_token(&app.archive, "acme", &token_id, "test")
        .await
        .unwrap();
    let mut got = 0usize;
    let end = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        match s.message().await {
            Ok(Some(m)) => {
                if let Some(pb::export_response::Payload::Data(d)) = m.payload {
                    got += d.len();
                }
            }
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    let err = end.expect_err("the export outlived its token");
    assert_eq!(
        (err.code(), err.message()),
        (Code::Unauthenticated, "token revoked")
    );
    assert!(
        got < size / 2,
        "{got} of {size} bytes exported after revocation"
    );
}
