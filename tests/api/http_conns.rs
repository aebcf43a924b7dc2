//! The HTTP listener's connection bounds (`http::serve`): a head that does
//! not arrive in time, and connections past the node's limit.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;
use crate::http_playback::get;

/// Reads until the server closes the connection (or 5 s pass); returns how
/// long that took and what was read.
async fn until_closed(conn: &mut TcpStream) -> (Duration, Vec<u8>) {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (started.elapsed(), got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the connection is still open after 5 s"),
        }
    }
}

/// A client that connects and sends nothing, or trickles a request head,
/// is disconnected once the header timeout passes; a fourth connection
/// past a limit of three is closed at once, and the node serves again as
/// soon as one closes.
#[tokio::test]
async fn slow_heads_and_too_many_connections_are_cut_off() {
    let app = spawn_app_opts(AppOptions {
        http: true,
        tune: Some(Box::new(|a| {
            a.limits.http_header_timeout = Duration::from_millis(700);
            a.limits.http_connections = 3;
        })),
        ..AppOptions::default()
    })
    .await;
    let base = app.http_addr.clone().unwrap();
    let addr = base.trim_start_matches("http://").to_owned();

    // Silent: closed after the timeout (the answer, if any, is a 408).
    let mut silent = TcpStream::connect(&addr).await.unwrap();
    let (took, got) = until_closed(&mut silent).await;
    assert!(took >= Duration::from_millis(500), "{took:?}");
    let text = String::from_utf8_lossy(&got);
    assert!(got.is_empty() || text.starts_with("HTTP/1.1 408"), "{text}");

    // Trickling: a byte every 200 ms never completes a head in time.
    let mut slow = TcpStream::connect(&addr).await.unwrap();
    let trickle = async {
        for b in b"GET / HTTP/1.1\r\nHost: x\r\n" {
            if slow.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), trickle)
        .await
        .unwrap();
    let (_, got) = until_closed(&mut slow).await;
    assert!(!String::from_utf8_lossy(&got).contains("200 OK"));

    // Three held open; the fourth is closed without an answer.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(&addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut extra = TcpStream::connect(&addr).await.unwrap();
    let _ = extra.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let (took, got) = until_closed(&mut extra).await;
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    assert!(took < Duration::from_millis(500), "{took:?}");
    // Once they time out (or close), the page is served again.
    drop(held);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let res = get(&format!("{base}/"), None).await;
    assert_eq!(res.status(), reqwest::StatusCode::OK);
    app.shutdown().await;
}
