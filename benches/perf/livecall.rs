//! One live call of the load generator: a G.711 WAV streamed in real time,
//! one message every `period`, as a recorder sends it while the call is
//! still going on.
//!
//! A producer makes each message at its due time and queues it; the Ingest
//! request body takes messages from that queue when the HTTP/2 stream asks
//! for more (hyper polls the body only while the stream has send window).
//! The time a message waits in between is its send latency: zero while the
//! server keeps up, growing when flow control holds the call back.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use bytes::{Bytes, BytesMut};
use callvault::api::pb;
use callvault::client::Client;

/// What one call sends.
#[derive(Debug, Clone)]
pub struct CallSpec {
    pub call_id: String,
    /// When the call starts (its first message is due).
    pub start: Instant,
    /// Time between two messages; each carries this much audio.
    pub period: Duration,
    pub bytes_per_sec: usize,
    /// The WAV header, sent with the first message.
    pub header: Bytes,
    /// The audio, sent from `rotate` on and wrapping around, so that every
    /// call's bytes (and SHA-256) differ while all share one buffer.
    pub data: Bytes,
    pub rotate: usize,
}

/// What one call measured.
#[derive(Debug, Default)]
pub struct CallResult {
    /// Per message: queued → taken by the request body, µs.
    pub send_us: Vec<u32>,
    /// Per message: due → queued, µs (the generator's own lateness).
    pub late_us: Vec<u32>,
    /// From the end of the request body to the committed answer.
    pub commit: Duration,
}

/// The bytes `at..at + len` of `data` rotated left by `rotate`; a slice of
/// the shared buffer unless the range wraps.
fn rotated(data: &Bytes, rotate: usize, at: usize, len: usize) -> Bytes {
    let start = (rotate + at) % data.len();
    if start + len <= data.len() {
        return data.slice(start..start + len);
    }
    let mut b = BytesMut::with_capacity(len);
    b.extend_from_slice(&data[start..]);
    b.extend_from_slice(&data[..len - (data.len() - start)]);
    b.freeze()
}

/// Streams the call and waits for its commit; fails unless the server's
/// SHA-256 is the one of the bytes sent.
pub async fn run(mut client: Client, spec: CallSpec) -> anyhow::Result<CallResult> {
    tokio::time::sleep_until(spec.start.into()).await;
    let piece = (spec.bytes_per_sec as f64 * spec.period.as_secs_f64()).round() as usize;
    let total = spec.data.len();
    let messages = total.div_ceil(piece);

    let (tx, rx) = tokio::sync::mpsc::channel::<(Instant, Bytes)>(64);
    let sends = Arc::new(Mutex::new(Vec::with_capacity(messages)));
    let ended = Arc::new(Mutex::new(None::<Instant>));
    let body = futures::stream::unfold(
        (rx, sends.clone(), ended.clone()),
        |(mut rx, sends, ended)| async move {
            match rx.recv().await {
                Some((queued, msg)) => {
                    let waited = queued.elapsed().as_micros() as u32;
                    sends.lock().unwrap_or_else(|e| e.into_inner()).push(waited);
                    Some((msg, (rx, sends, ended)))
                }
                None => {
                    *ended.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
                    None
                }
            }
        },
    );

    let producer = async {
        let mut sha = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        let mut late = Vec::with_capacity(messages);
        for k in 0..messages {
            let due = spec.start + spec.period * k as u32;
            tokio::time::sleep_until(due.into()).await;
            let at = k * piece;
            let audio = rotated(&spec.data, spec.rotate, at, piece.min(total - at));
            let msg = if k == 0 {
                let mut first = BytesMut::from(&spec.header[..]);
                first.extend_from_slice(&audio);
                first.freeze()
            } else {
                audio
            };
            sha.update(&msg);
            let now = Instant::now();
            late.push(now.duration_since(due).as_micros() as u32);
            if tx.send((now, msg)).await.is_err() {
                break; // the request ended early; its error says why
            }
        }
        drop(tx);
        (hex::encode(sha.finish()), late)
    };
    let header = pb::IngestHeader {
        external_call_id: spec.call_id.clone(),
        ..Default::default()
    };
    let ((sha, late_us), answer) = tokio::join!(producer, client.ingest_stream(header, body));
    let answered = Instant::now();
    let rec = answer
        .with_context(|| format!("{} refused", spec.call_id))?
        .recording
        .with_context(|| format!("{}: no recording in the answer", spec.call_id))?;
    ensure!(
        rec.sha256 == sha && rec.size_bytes as usize == spec.header.len() + total,
        "{}: the server committed {} bytes with SHA-256 {}, the call sent {} with {sha}",
        spec.call_id,
        rec.size_bytes,
        rec.sha256,
        spec.header.len() + total,
    );
    let ended = ended
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .unwrap_or(answered);
    let send_us = std::mem::take(&mut *sends.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(CallResult {
        send_us,
        late_us,
        commit: answered.saturating_duration_since(ended),
    })
}
