//! A fault-injecting TCP proxy in front of the real PostgreSQL server. It
//! reads the wire protocol's framing (not the SQL) and can lose or delay the
//! server's reply to the COMMIT of the transaction that completes an upload:
//! the commit happens, and the node does not learn it in time, exactly as
//! with a network fault or a crashed connection after COMMIT.
//!
//! The proxied URL must carry `sslmode=disable` so the protocol is readable.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

/// The statement that completes an upload; a COMMIT on a connection that
/// ran it is the commit the faults aim at.
const COMPLETION_MARKER: &[u8] = b"SET status = 'complete'";

#[derive(Debug, Default)]
pub struct Faults {
    /// Lose the reply to the next completing COMMIT and drop the connection.
    pub lose_commit_reply: AtomicBool,
    /// Hold the reply to the next completing COMMIT this long (ms).
    pub delay_commit_reply_ms: AtomicU64,
    /// How many faults fired.
    pub fired: AtomicUsize,
}

#[derive(Debug)]
pub struct PgProxy {
    pub port: u16,
    pub faults: Arc<Faults>,
}

impl PgProxy {
    pub async fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let faults = Arc::new(Faults::default());
        let f = faults.clone();
        let upstream = upstream.to_owned();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                tokio::spawn(relay(client, server, f.clone()));
            }
        });
        Self { port, faults }
    }

    /// Routes a postgres:// URL on 127.0.0.1:5432 through the proxy.
    pub fn router(&self) -> crate::helpers::RouteCatalog {
        let port = self.port;
        Box::new(move |url| {
            let routed = url.replacen(":5432/", &format!(":{port}/"), 1);
            assert_ne!(routed, url, "the catalog URL must name port 5432");
            format!("{routed}?sslmode=disable")
        })
    }
}

/// What the client side told the server side about the COMMIT in flight.
#[derive(Debug, Default)]
struct Conn {
    completing: AtomicBool,
    /// 0: pass the reply; 1: lose it; 2: delay it.
    commit_fault: AtomicU64,
}

async fn relay(client: TcpStream, server: TcpStream, faults: Arc<Faults>) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let conn = Arc::new(Conn::default());
    let up = tokio::spawn(client_to_server(cr, sw, conn.clone(), faults.clone()));
    server_to_client(sr, cw, conn, faults).await;
    up.abort();
}

async fn read_frame(r: &mut OwnedReadHalf, typed: bool) -> Option<Vec<u8>> {
    let head = if typed { 5 } else { 4 };
    let mut frame = vec![0u8; head];
    r.read_exact(&mut frame).await.ok()?;
    let len = u32::from_be_bytes(frame[head - 4..head].try_into().ok()?) as usize;
    let body = len.checked_sub(4)?;
    frame.resize(head + body, 0);
    r.read_exact(&mut frame[head..]).await.ok()?;
    Some(frame)
}

async fn client_to_server(
    mut r: OwnedReadHalf,
    mut w: OwnedWriteHalf,
    conn: Arc<Conn>,
    faults: Arc<Faults>,
) {
    // The startup message has no type byte.
    let Some(startup) = read_frame(&mut r, false).await else {
        return;
    };
    if w.write_all(&startup).await.is_err() {
        return;
    }
    while let Some(frame) = read_frame(&mut r, true).await {
        let body = &frame[5..];
        if body
            .windows(COMPLETION_MARKER.len())
            .any(|w| w == COMPLETION_MARKER)
        {
            conn.completing.store(true, Ordering::SeqCst);
        }
        let is_commit = matches!(frame[0], b'Q' | b'P')
            && body
                .windows(6)
                .take(64)
                .any(|w| w.eq_ignore_ascii_case(b"COMMIT"));
        if is_commit && conn.completing.swap(false, Ordering::SeqCst) {
            // Decided before the COMMIT leaves, so the reply cannot race it.
            if faults.lose_commit_reply.swap(false, Ordering::SeqCst) {
                conn.commit_fault.store(1, Ordering::SeqCst);
            } else if faults.delay_commit_reply_ms.load(Ordering::SeqCst) > 0 {
                conn.commit_fault.store(2, Ordering::SeqCst);
            }
        }
        if w.write_all(&frame).await.is_err() {
            return;
        }
    }
}

async fn server_to_client(
    mut r: OwnedReadHalf,
    mut w: OwnedWriteHalf,
    conn: Arc<Conn>,
    faults: Arc<Faults>,
) {
    let mut held: Vec<u8> = Vec::new();
    while let Some(frame) = read_frame(&mut r, true).await {
        let fault = conn.commit_fault.load(Ordering::SeqCst);
        if fault == 0 {
            if w.write_all(&frame).await.is_err() {
                return;
            }
            continue;
        }
        // The reply to the COMMIT runs up to ReadyForQuery ('Z').
        held.extend_from_slice(&frame);
        if frame[0] != b'Z' {
            continue;
        }
        conn.commit_fault.store(0, Ordering::SeqCst);
        faults.fired.fetch_add(1, Ordering::SeqCst);
        if fault == 1 {
            // The server committed; the client never hears of it.
            return;
        }
        let ms = faults.delay_commit_reply_ms.swap(0, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        if w.write_all(&std::mem::take(&mut held)).await.is_err() {
            return;
        }
    }
}
