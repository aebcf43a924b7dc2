//! The node's metrics, in one `prometheus-client` registry: KMS calls per
//! operation and region (count, errors, latency histogram) and per tenant,
//! the key cache, gRPC calls per method and final status, audio bytes
//! ingested and played per tenant, uploads in flight, tenant key health,
//! erasures and the compliance backlog, and the process itself (`process`).
//!
//! Components record into the shared [`Metrics`]; the metrics listener
//! (`server::serve_metrics`) renders it on `GET /metrics`, as OpenMetrics
//! 1.0 to a scraper that asks for it and as the Prometheus text format
//! 0.0.4 otherwise ([`Format::negotiate`]). The library writes each family
//! as one block with its HELP and TYPE (and UNIT) lines, escapes label
//! values, and ends OpenMetrics with `# EOF`. Label values are tenant ids,
//! key ARNs and region names validated where they enter, and names this
//! code chooses (operations, gRPC methods of the served protos, codes).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

mod listener;
mod process;
mod state;

pub use listener::serve_metrics;
pub use state::{Backlog, KeyHealthGauge};

/// Latency buckets of a KMS call, in seconds: 1 ms (a local keyring, a
/// cached regional endpoint) to 10 s (an SDK retrying a throttled call).
const KMS_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Duration buckets of a gRPC call, in seconds: the unary range of
/// [`KMS_BUCKETS`], then the minutes a streamed ingest or play lasts.
const GRPC_BUCKETS: [f64; 17] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0,
    600.0, 3600.0,
];

/// The two text expositions a scraper may get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 (`# EOF`, UNIT lines, counters named without
    /// `_total` in their metadata).
    OpenMetrics,
    /// The Prometheus text format 0.0.4, for scrapers that do not ask for
    /// OpenMetrics.
    Prometheus,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Self::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        }
    }

    /// OpenMetrics when the `Accept` header lists
    /// `application/openmetrics-text` with a non-zero quality (Prometheus
    /// asks for it first), else the classic text format.
    pub fn negotiate(accept: Option<&str>) -> Self {
        let asks = |range: &str| {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or_default();
            media.eq_ignore_ascii_case("application/openmetrics-text")
                && !parts.any(|p| {
                    p.strip_prefix("q=")
                        .and_then(|q| q.trim().parse::<f64>().ok())
                        .is_some_and(|q| q <= 0.0)
                })
        };
        match accept {
            Some(a) if a.split(',').any(asks) => Self::OpenMetrics,
            _ => Self::Prometheus,
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KmsCall {
    operation: &'static str,
    region: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantKmsCall {
    tenant: String,
    operation: &'static str,
    region: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantLabel {
    tenant: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Erasure {
    tenant: String,
    trigger: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GrpcMethod {
    service: &'static str,
    method: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GrpcCall {
    service: &'static str,
    method: &'static str,
    code: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every metric of the node. The families share their storage with the
/// registry that renders them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    kms_requests: Family<KmsCall, Counter>,
    kms_errors: Family<KmsCall, Counter>,
    kms_latency: HistogramFamily<KmsCall>,
    kms_tenant_requests: Family<TenantKmsCall, Counter>,
    /// KMS calls per operation, all regions: what `calls` answers (the
    /// families cannot be read back by operation alone).
    kms_calls: Mutex<BTreeMap<&'static str, u64>>,
    cache_hits: Counter,
    cache_misses: Counter,
    erasures: Family<Erasure, Counter>,
    ingested_bytes: Family<TenantLabel, Counter>,
    played_bytes: Family<TenantLabel, Counter>,
    uploads_in_flight: Gauge,
    grpc_started: Family<GrpcMethod, Counter>,
    grpc_duration: HistogramFamily<GrpcCall>,
    grpc_errors: Family<GrpcCall, Counter>,
    key_health: Arc<state::KeyHealth>,
    backlog: Arc<state::BacklogGauges>,
    /// Set once the node's first key-health pass has run
    /// (`keys::prime`): its first scrape waits for it.
    pub(crate) key_health_primed: tokio::sync::OnceCell<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let kms_latency: HistogramFamily<KmsCall> =
            Family::new_with_constructor(|| Histogram::new(KMS_BUCKETS));
        let grpc_duration: HistogramFamily<GrpcCall> =
            Family::new_with_constructor(|| Histogram::new(GRPC_BUCKETS));
        let m = Self {
            registry: Registry::default(),
            kms_requests: Family::default(),
            kms_errors: Family::default(),
            kms_latency,
            kms_tenant_requests: Family::default(),
            kms_calls: Mutex::default(),
            cache_hits: Counter::default(),
            cache_misses: Counter::default(),
            erasures: Family::default(),
            ingested_bytes: Family::default(),
            played_bytes: Family::default(),
            uploads_in_flight: Gauge::default(),
            grpc_started: Family::default(),
            grpc_duration,
            grpc_errors: Family::default(),
            key_health: Arc::default(),
            backlog: Arc::default(),
            key_health_primed: tokio::sync::OnceCell::new(),
        };
        m.registered()
    }

    fn registered(mut self) -> Self {
        let r = self.registry.sub_registry_with_prefix("callvault");
        r.register(
            "kms_requests",
            "KMS calls per operation and region",
            self.kms_requests.clone(),
        );
        r.register(
            "kms_errors",
            "KMS calls that failed, per operation and region",
            self.kms_errors.clone(),
        );
        r.register_with_unit(
            "kms_latency",
            "Duration of KMS calls per operation and region",
            Unit::Seconds,
            self.kms_latency.clone(),
        );
        r.register(
            "kms_tenant_requests",
            "KMS calls per tenant, operation and region (KMS cost per tenant)",
            self.kms_tenant_requests.clone(),
        );
        r.register(
            "key_cache_hits",
            "Data-key unwraps answered by the key cache",
            self.cache_hits.clone(),
        );
        r.register(
            "key_cache_misses",
            "Data-key unwraps that went to KMS (or failed)",
            self.cache_misses.clone(),
        );
        r.register(
            "grpc_requests",
            "gRPC calls received, per service and method",
            self.grpc_started.clone(),
        );
        r.register_with_unit(
            "grpc_request_duration",
            "Duration of finished gRPC calls, to the end of the response stream, per service, \
             method and final status code",
            Unit::Seconds,
            self.grpc_duration.clone(),
        );
        r.register(
            "grpc_errors",
            "gRPC calls that finished with a status other than OK, per service, method and code",
            self.grpc_errors.clone(),
        );
        r.register_with_unit(
            "ingested",
            "Audio bytes received by Ingest streams, per tenant, as they arrive",
            Unit::Bytes,
            self.ingested_bytes.clone(),
        );
        r.register_with_unit(
            "played",
            "Audio bytes sent by Play streams, per tenant",
            Unit::Bytes,
            self.played_bytes.clone(),
        );
        r.register(
            "uploads_in_flight",
            "Ingest streams being received by this node",
            self.uploads_in_flight.clone(),
        );
        r.register(
            "recordings_erased",
            "Recordings erased by this node, per tenant and trigger (request, retention_expiry)",
            self.erasures.clone(),
        );
        r.register_collector(Box::new(self.key_health.clone()));
        r.register_collector(Box::new(self.backlog.clone()));
        self.registry
            .register_collector(Box::new(process::ProcessCollector));
        self
    }

    pub(crate) fn record(
        &self,
        op: &'static str,
        region: &str,
        tenant: Option<&str>,
        took: Duration,
        ok: bool,
    ) {
        let call = KmsCall {
            operation: op,
            region: region.to_owned(),
        };
        self.kms_requests.get_or_create(&call).inc();
        // Created at zero with the first call, so that an error rate has a
        // series to divide before the first error.
        let errors = self.kms_errors.get_or_create(&call);
        if !ok {
            errors.inc();
        }
        self.kms_latency
            .get_or_create(&call)
            .observe(took.as_secs_f64());
        if let Some(tenant) = tenant {
            self.kms_tenant_requests
                .get_or_create(&TenantKmsCall {
                    tenant: tenant.to_owned(),
                    operation: op,
                    region: call.region,
                })
                .inc();
        }
        // A std mutex is right here: the critical section is a map update
        // with no await inside.
        let mut calls = self.kms_calls.lock().unwrap_or_else(|e| e.into_inner());
        *calls.entry(op).or_default() += 1;
    }

    /// Total KMS calls of one operation, all regions.
    pub fn calls(&self, op: &str) -> u64 {
        let calls = self.kms_calls.lock().unwrap_or_else(|e| e.into_inner());
        calls.get(op).copied().unwrap_or(0)
    }

    pub fn total_calls(&self) -> u64 {
        let calls = self.kms_calls.lock().unwrap_or_else(|e| e.into_inner());
        calls.values().sum()
    }

    /// Counts one data-key unwrap through the key cache.
    pub(crate) fn key_cache(&self, hit: bool) {
        if hit {
            self.cache_hits.inc();
        } else {
            self.cache_misses.inc();
        }
    }

    /// Counts recordings erased (`trigger`: `request` or `retention_expiry`).
    pub fn erased(&self, tenant: &str, trigger: &'static str, n: u64) {
        self.erasures
            .get_or_create(&Erasure {
                tenant: tenant.to_owned(),
                trigger,
            })
            .inc_by(n);
    }

    /// The tenant's counter of audio bytes received by Ingest streams.
    pub fn ingested_bytes(&self, tenant: &str) -> Counter {
        self.ingested_bytes.get_or_create_owned(&TenantLabel {
            tenant: tenant.to_owned(),
        })
    }

    /// The tenant's counter of audio bytes sent by Play streams.
    pub fn played_bytes(&self, tenant: &str) -> Counter {
        self.played_bytes.get_or_create_owned(&TenantLabel {
            tenant: tenant.to_owned(),
        })
    }

    /// Counts an upload in flight until the returned guard drops.
    pub fn upload_in_flight(&self) -> InFlight {
        self.uploads_in_flight.inc();
        InFlight(self.uploads_in_flight.clone())
    }

    /// Counts a gRPC call as it arrives.
    pub fn grpc_started(&self, service: &'static str, method: &'static str) {
        self.grpc_started
            .get_or_create(&GrpcMethod { service, method })
            .inc();
    }

    /// Records a gRPC call's end: its final status code (`OK`,
    /// `NOT_FOUND`, …) and how long it ran.
    pub fn grpc_finished(
        &self,
        service: &'static str,
        method: &'static str,
        code: &'static str,
        took: Duration,
    ) {
        let call = GrpcCall {
            service,
            method,
            code,
        };
        self.grpc_duration
            .get_or_create(&call)
            .observe(took.as_secs_f64());
        if code != "OK" {
            self.grpc_errors.get_or_create(&call).inc();
        }
    }

    /// Publishes the latest health check of one tenant key.
    pub fn set_key_health(&self, tenant: &str, key_arn: &str, gauge: KeyHealthGauge) {
        self.key_health.set(tenant, key_arn, gauge);
    }

    /// Publishes the compliance backlog as read now, or withdraws it
    /// (`None`: the catalog could not be read) rather than report a stale
    /// or made-up number.
    pub fn set_backlog(&self, backlog: Option<Backlog>) {
        self.backlog.set(backlog);
    }

    pub fn render(&self, format: Format) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail, and the collectors fail only
        // when their writer does.
        let _ = match format {
            Format::OpenMetrics => {
                prometheus_client::encoding::text::encode(&mut out, &self.registry)
            }
            Format::Prometheus => {
                prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            }
        };
        out
    }

    /// The Prometheus text format (what a scraper gets without asking for
    /// OpenMetrics).
    pub fn render_prometheus(&self) -> String {
        self.render(Format::Prometheus)
    }
}

/// An upload counted in `callvault_uploads_in_flight` until dropped.
#[derive(Debug)]
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enabled() -> KeyHealthGauge {
        KeyHealthGauge {
            state: crate::domain::KeyHealthState::Enabled,
            recordings: 1,
            incident: false,
        }
    }

    #[test]
    fn label_values_cannot_break_out_of_their_label() {
        let m = Metrics::default();
        m.set_key_health("evil\"} 1\ncallvault_fake 1", "arn\\", enabled());
        m.erased("a\"b\\c", "request", 1);
        for format in [Format::Prometheus, Format::OpenMetrics] {
            let text = m.render(format);
            assert!(
                !text.lines().any(|l| l.starts_with("callvault_fake")),
                "{text}"
            );
            assert!(
                text.contains(r#"tenant="evil\"} 1\ncallvault_fake 1",key_arn="arn\\""#),
                "{text}"
            );
            assert!(
                text.contains(r#"tenant="a\"b\\c",trigger="request""#),
                "{text}"
            );
        }
    }

    #[test]
    fn each_family_is_one_block_and_openmetrics_ends_with_eof() {
        let m = Metrics::default();
        m.record(
            "Decrypt",
            "local",
            Some("acme"),
            Duration::from_millis(3),
            true,
        );
        m.record(
            "Decrypt",
            "eu-west-1",
            Some("acme"),
            Duration::from_millis(30),
            false,
        );
        m.record(
            "GenerateDataKey",
            "local",
            Some("acme"),
            Duration::from_secs(20),
            true,
        );
        m.set_key_health("acme", "arn:a", enabled());
        m.set_key_health("beta", "arn:b", enabled());
        for format in [Format::Prometheus, Format::OpenMetrics] {
            let text = m.render(format);
            // A family's samples follow its TYPE line before the next TYPE.
            let mut seen = Vec::new();
            let mut current = String::new();
            for line in text.lines() {
                if let Some(rest) = line.strip_prefix("# TYPE ") {
                    current = rest.split(' ').next().unwrap_or_default().to_owned();
                    assert!(!seen.contains(&current), "{current} twice:\n{text}");
                    seen.push(current.clone());
                } else if !line.starts_with('#') {
                    let name = line.split(['{', ' ']).next().unwrap_or_default();
                    assert!(
                        name.starts_with(&current),
                        "{name} outside {current}:\n{text}"
                    );
                }
            }
            assert!(
                text.contains("# HELP callvault_kms_latency_seconds "),
                "{text}"
            );
        }
        let om = m.render(Format::OpenMetrics);
        assert!(om.ends_with("# EOF\n"), "{om}");
        assert!(
            om.contains("# UNIT callvault_kms_latency_seconds seconds"),
            "{om}"
        );
        // 20 s: past the last bound, in +Inf only.
        for (le, n) in [("10.0", 0), ("+Inf", 1)] {
            let bucket = format!(
                r#"callvault_kms_latency_seconds_bucket{{le="{le}",operation="GenerateDataKey",region="local"}} {n}"#
            );
            assert!(om.contains(&bucket), "{bucket}:\n{om}");
        }
        let text = m.render_prometheus();
        assert!(
            text.contains(
                r#"callvault_kms_errors_total{operation="Decrypt",region="eu-west-1"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"callvault_kms_errors_total{operation="Decrypt",region="local"} 0"#),
            "{text}"
        );
        assert_eq!((m.calls("Decrypt"), m.total_calls()), (2, 3));
    }

    #[test]
    fn openmetrics_only_when_asked_for() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        for (accept, want) in [
            (Some(prometheus), Format::OpenMetrics),
            (Some("Application/OpenMetrics-Text"), Format::OpenMetrics),
            (
                Some("text/plain, application/openmetrics-text; q=0"),
                Format::Prometheus,
            ),
            (Some("text/plain;version=0.0.4"), Format::Prometheus),
            (Some("*/*"), Format::Prometheus),
            (None, Format::Prometheus),
        ] {
            assert_eq!(Format::negotiate(accept), want, "{accept:?}");
        }
    }
}
