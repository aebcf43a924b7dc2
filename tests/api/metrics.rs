//! `GET /metrics` as Prometheus reads it: a real server ingests and plays a
//! recording over gRPC and answers one call with NOT_FOUND, and the
//! exposition is parsed by the Prometheus project's own Python parsers
//! (`prometheus-client`): the strict OpenMetrics parser, and the classic
//! text-format parser for a scraper that does not ask for OpenMetrics.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use callvault::server::{Roles, serve_metrics};
use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use tonic::Code;

use crate::helpers::*;

/// What Prometheus sends.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// Parses stdin with the parser named by argv[1] and prints the families
/// as JSON.
const PARSE: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics
from prometheus_client.parser import text_string_to_metric_families as classic
parse = {"openmetrics": openmetrics, "classic": classic}[sys.argv[1]]
families = [
    {"name": f.name, "type": f.type, "unit": f.unit,
     "samples": [{"name": s.name, "labels": s.labels, "value": s.value} for s in f.samples]}
    for f in parse(sys.stdin.read())
]
json.dump(families, sys.stdout, allow_nan=False)
"#;

#[derive(Debug, Deserialize)]
struct Family {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    unit: String,
    samples: Vec<Sample>,
}

#[derive(Debug, Clone, Deserialize)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// The Python with prometheus-client (`CALLVAULT_TEST_PYTHON`, which
/// scripts/test.sh sets to its venv). Missing under CI is a failure.
fn python() -> Option<PathBuf> {
    let found = std::env::var_os("CALLVAULT_TEST_PYTHON").map(PathBuf::from);
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CALLVAULT_TEST_PYTHON is not set (scripts/test.sh sets it to a venv with prometheus-client)"
        );
        eprintln!(
            "skipped: CALLVAULT_TEST_PYTHON is not set (scripts/test.sh sets it to a venv with prometheus-client)"
        );
    }
    found
}

/// `parser` ("openmetrics" or "classic") over `text`; fails the test with
/// the parser's complaint if it refuses the text.
async fn parse(python: &Path, parser: &str, text: &str) -> Vec<Family> {
    let mut child = tokio::process::Command::new(python)
        .args(["-c", PARSE, parser])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(text.as_bytes()).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "the {parser} parser refused the exposition: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let families: Vec<Family> = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = families.iter().map(|f| f.name.as_str()).collect();
    let distinct: BTreeSet<&str> = names.iter().copied().collect();
    assert_eq!(
        names.len(),
        distinct.len(),
        "a family appears twice ({parser}): {names:?}"
    );
    families
}

/// GET /metrics: the content type and the body.
async fn scrape(url: &str, accept: Option<&str>) -> (String, String) {
    let mut req = reqwest::Client::new().get(url);
    if let Some(a) = accept {
        req = req.header("Accept", a);
    }
    let res = req.send().await.unwrap();
    assert_eq!(res.status(), reqwest::StatusCode::OK);
    let content_type = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (content_type, res.text().await.unwrap())
}

fn family<'a>(families: &'a [Family], name: &str) -> &'a Family {
    families
        .iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("no family {name}"))
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The value of the sample `name` with exactly these labels.
fn value(families: &[Family], family_name: &str, name: &str, with: &[(&str, &str)]) -> f64 {
    let want = labels(with);
    family(families, family_name)
        .samples
        .iter()
        .find(|s| s.name == name && s.labels == want)
        .unwrap_or_else(|| panic!("no sample {name}{want:?} in {family_name}"))
        .value
}

/// Checks one histogram series (`with` are its labels without `le`): the
/// buckets are `bounds` then +Inf, cumulative, and the +Inf bucket is the
/// count. Returns the count.
fn histogram(families: &[Family], name: &str, with: &[(&str, &str)], bounds: &[f64]) -> f64 {
    let f = family(families, name);
    assert_eq!(f.kind, "histogram", "{name}");
    let want = labels(with);
    let mut buckets: Vec<(f64, f64)> = f
        .samples
        .iter()
        .filter(|s| s.name == format!("{name}_bucket"))
        .filter_map(|s| {
            let mut l = s.labels.clone();
            let le = l.remove("le")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap()
            };
            (l == want).then_some((le, s.value))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let les: Vec<f64> = buckets.iter().map(|b| b.0).collect();
    let mut want_les = bounds.to_vec();
    want_les.push(f64::INFINITY);
    assert_eq!(les, want_les, "{name}{want:?}");
    assert!(
        buckets.windows(2).all(|w| w[0].1 <= w[1].1),
        "{name}{want:?} buckets are not cumulative: {buckets:?}"
    );
    let count = value(families, name, &format!("{name}_count"), with);
    assert_eq!(buckets.last().map(|b| b.1), Some(count), "{name}{want:?}");
    let sum = value(families, name, &format!("{name}_sum"), with);
    assert!(sum >= 0.0, "{name}{want:?}");
    count
}

const KMS_BOUNDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const GRPC_BOUNDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0,
    600.0, 3600.0,
];

const PLAYBACK: &str = "callvault.v1.PlaybackService";
const INGEST: &str = "callvault.v1.IngestService";

on_both_catalogs!(
    metrics_parse_with_the_prometheus_parsers_on_sqlite,
    metrics_parse_with_the_prometheus_parsers_on_postgres,
    metrics_parse_with_the_prometheus_parsers
);

async fn metrics_parse_with_the_prometheus_parsers(kind: CatalogKind) {
    let Some(python) = python() else { return };
    // Background jobs that could call KMS between two families of one
    // scrape (the peaks job, the indexer's next pass) wait past the test.
    let app = spawn_app_opts(AppOptions {
        kind,
        tune: Some(Box::new(|a| {
            a.schedule.peaks_poll = Duration::from_secs(3600);
            a.schedule.retention_check = Duration::from_secs(3600);
        })),
        ..AppOptions::default()
    })
    .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/metrics", listener.local_addr().unwrap());
    tokio::spawn(serve_metrics(
        listener,
        None,
        app.archive.clone(),
        Roles::ALL,
    ));
    let tenant = app.tenant.id.to_string();
    let key_arn = callvault::catalog::keys::active(&mut *app.db().await, &app.tenant.id)
        .await
        .unwrap()
        .key_arn
        .to_string();
    let key = [("tenant", tenant.as_str()), ("key_arn", key_arn.as_str())];

    // The first scrape of a fresh node already has the key's health and
    // the compliance backlog.
    let (content_type, first) = scrape(&url, Some(PROMETHEUS_ACCEPT)).await;
    assert_eq!(
        content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(first.ends_with("# EOF\n"), "{first}");
    let fams = parse(&python, "openmetrics", &first).await;
    let state = [key[0], key[1], ("state", "enabled")];
    assert_eq!(
        value(
            &fams,
            "callvault_tenant_key_state",
            "callvault_tenant_key_state",
            &state
        ),
        1.0
    );
    let incident = "callvault_tenant_key_incident";
    assert_eq!(value(&fams, incident, incident, &key), 0.0);
    let due = "callvault_retention_due_recordings";
    assert_eq!(value(&fams, due, due, &[]), 0.0);
    let pending = "callvault_deletion_certificates_pending";
    assert_eq!(value(&fams, pending, pending, &[]), 0.0);

    // An ingest, a play, and a play of a recording that does not exist.
    let audio = fixture("speech_mulaw.wav");
    let id = app
        .ingest("metrics-1", audio.clone())
        .await
        .unwrap()
        .recording
        .unwrap()
        .recording_id;
    assert_eq!(app.play(&id).await.unwrap(), audio.as_ref());
    let missing = uuid::Uuid::now_v7().to_string();
    assert_eq!(app.play(&missing).await.unwrap_err().code(), Code::NotFound);

    let (content_type, text) = scrape(&url, Some(PROMETHEUS_ACCEPT)).await;
    assert!(content_type.starts_with("application/openmetrics-text"));
    let fams = parse(&python, "openmetrics", &text).await;

    // KMS latency histograms per operation and region, agreeing with the
    // request counters.
    for op in ["GenerateDataKey", "Decrypt"] {
        let call = [("operation", op), ("region", "local")];
        let count = histogram(&fams, "callvault_kms_latency_seconds", &call, KMS_BOUNDS);
        assert!(count >= 1.0, "{op}");
        let requests = "callvault_kms_requests";
        assert_eq!(
            value(&fams, requests, "callvault_kms_requests_total", &call),
            count
        );
        let errors = "callvault_kms_errors";
        assert_eq!(
            value(&fams, errors, "callvault_kms_errors_total", &call),
            0.0
        );
    }

    // gRPC: each call once, with its final code; the failed one as an error
    // of its method.
    let duration = "callvault_grpc_request_duration_seconds";
    assert_eq!(family(&fams, duration).unit, "seconds");
    assert_eq!(
        family(&fams, "callvault_kms_latency_seconds").unit,
        "seconds"
    );
    for (service, method, code) in [
        (INGEST, "Ingest", "OK"),
        (PLAYBACK, "Play", "OK"),
        (PLAYBACK, "Play", "NOT_FOUND"),
    ] {
        let call = [("service", service), ("method", method), ("code", code)];
        assert_eq!(
            histogram(&fams, duration, &call, GRPC_BOUNDS),
            1.0,
            "{method} {code}"
        );
    }
    let requests = "callvault_grpc_requests";
    let total = "callvault_grpc_requests_total";
    let play = [("service", PLAYBACK), ("method", "Play")];
    assert_eq!(value(&fams, requests, total, &play), 2.0);
    let ingest = [("service", INGEST), ("method", "Ingest")];
    assert_eq!(value(&fams, requests, total, &ingest), 1.0);
    let errors = family(&fams, "callvault_grpc_errors");
    let error_samples: Vec<_> = errors
        .samples
        .iter()
        .map(|s| (s.labels.clone(), s.value))
        .collect();
    assert_eq!(
        error_samples,
        [(
            labels(&[
                ("service", PLAYBACK),
                ("method", "Play"),
                ("code", "NOT_FOUND")
            ]),
            1.0
        )],
        "{text}"
    );

    // Audio volume, uploads in flight, the key cache.
    let size = audio.len() as f64;
    let by_tenant = [("tenant", tenant.as_str())];
    let ingested = "callvault_ingested_bytes";
    assert_eq!(
        value(
            &fams,
            ingested,
            "callvault_ingested_bytes_total",
            &by_tenant
        ),
        size
    );
    let played = "callvault_played_bytes";
    assert_eq!(
        value(&fams, played, "callvault_played_bytes_total", &by_tenant),
        size
    );
    let in_flight = "callvault_uploads_in_flight";
    assert_eq!(value(&fams, in_flight, in_flight, &[]), 0.0);
    let misses = "callvault_key_cache_misses";
    assert!(value(&fams, misses, "callvault_key_cache_misses_total", &[]) >= 1.0);

    // The process, read from /proc.
    let rss = "process_resident_memory_bytes";
    assert!(value(&fams, rss, rss, &[]) > 0.0);
    assert_eq!(family(&fams, rss).unit, "bytes");
    let fds = "process_open_fds";
    assert!(value(&fams, fds, fds, &[]) > 0.0);
    let threads = "process_threads";
    assert!(value(&fams, threads, threads, &[]) >= 1.0);
    assert!(
        value(
            &fams,
            "process_cpu_seconds",
            "process_cpu_seconds_total",
            &[]
        ) > 0.0
    );
    let start = "process_start_time_seconds";
    let started = value(&fams, start, start, &[]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        started <= now + 1.0 && started > now - 86_400.0,
        "{started} vs {now}"
    );

    // A scraper that does not ask for OpenMetrics gets the classic format,
    // with the same families.
    let (content_type, classic) = scrape(&url, None).await;
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    assert!(!classic.contains("# EOF"), "{classic}");
    let classic_fams = parse(&python, "classic", &classic).await;
    let names =
        |fams: &[Family]| -> BTreeSet<String> { fams.iter().map(|f| f.name.clone()).collect() };
    assert_eq!(names(&classic_fams), names(&fams));
    let not_found = [
        ("service", PLAYBACK),
        ("method", "Play"),
        ("code", "NOT_FOUND"),
    ];
    assert_eq!(
        histogram(&classic_fams, duration, &not_found, GRPC_BOUNDS),
        1.0
    );
    assert!(
        classic.contains(
            "callvault_kms_requests_total{operation=\"GenerateDataKey\",region=\"local\"} 1\n"
        ),
        "{classic}"
    );
    app.shutdown().await;
}
