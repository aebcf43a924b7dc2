//! The gRPC metering layer: counts every call as it arrives and records, as
//! it ends, its final status code and how long it ran.
//!
//! What is counted as a call's code:
//! - a `grpc-status` in the response headers (a trailers-only answer: a
//!   unary error, a stream refused before its first message, the unary
//!   timeout);
//! - else the `grpc-status` of the response's trailers, which tonic sends
//!   after the last message, so a streaming RPC (Play, Ingest, Export, …)
//!   is counted with the status it ended with, an error in the middle of
//!   the stream included;
//! - `CANCELLED` when the response is dropped before its status was sent
//!   (the client went away or reset the stream), `UNKNOWN` when the body
//!   failed or ended without a status.
//!
//! The duration runs from the request's arrival to that moment: for a
//! stream, its whole life. Only methods of the protos this server was built
//! with are named; any other path is counted as `unknown`, so a client
//! cannot mint label values.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Instant;

use http_body::{Body, Frame, SizeHint};
use prost::Message as _;

use crate::metrics::Metrics;

/// `/package.Service/Method` -> (service, method), for every method of the
/// served protos (callvault, health, both reflection versions).
static METHODS: LazyLock<HashMap<String, (String, String)>> = LazyLock::new(|| {
    let sets = [
        super::pb::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ];
    let mut methods = HashMap::new();
    for set in sets {
        let files = prost_types::FileDescriptorSet::decode(set)
            .map(|s| s.file)
            .unwrap_or_default();
        for file in files {
            for service in &file.service {
                let qualified = match file.package() {
                    "" => service.name().to_owned(),
                    package => format!("{package}.{}", service.name()),
                };
                for method in &service.method {
                    methods.insert(
                        format!("/{qualified}/{}", method.name()),
                        (qualified.clone(), method.name().to_owned()),
                    );
                }
            }
        }
    }
    methods
});

/// The (service, method) labels of a request path.
fn rpc_of(path: &str) -> (&'static str, &'static str) {
    match METHODS.get(path) {
        Some((service, method)) => (service.as_str(), method.as_str()),
        None => ("unknown", "unknown"),
    }
}

/// The code name of a `grpc-status` value (`5` -> `NOT_FOUND`).
fn code_name(value: &http::HeaderValue) -> &'static str {
    let code = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<i32>().ok())
        .map_or(tonic::Code::Unknown, tonic::Code::from_i32);
    super::code_name(code)
}

/// Meters every call of the service it wraps (see the module doc).
#[derive(Debug, Clone)]
pub struct MeteringLayer(pub Arc<Metrics>);

impl<S> tower::Layer<S> for MeteringLayer {
    type Service = Metered<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Metered {
            inner,
            metrics: self.0.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Metered<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B, ResBody> tower::Service<http::Request<B>> for Metered<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<MeteredBody<ResBody>>;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let (service, method) = rpc_of(req.uri().path());
        self.metrics.grpc_started(service, method);
        // Dropped unfinished (the client went away while the handler ran),
        // the call counts as cancelled.
        let mut call = Call {
            metrics: Some(self.metrics.clone()),
            service,
            method,
            started: Instant::now(),
        };
        let fut = self.inner.call(req);
        Box::pin(async move {
            match fut.await {
                Ok(res) => {
                    if let Some(status) = res.headers().get("grpc-status") {
                        call.finish(code_name(status));
                    }
                    Ok(res.map(|inner| MeteredBody { inner, call }))
                }
                Err(e) => {
                    call.finish("UNKNOWN");
                    Err(e)
                }
            }
        })
    }
}

/// One call being metered; recorded once, by `finish` or on drop.
#[derive(Debug)]
struct Call {
    /// `None` once recorded.
    metrics: Option<Arc<Metrics>>,
    service: &'static str,
    method: &'static str,
    started: Instant,
}

impl Call {
    fn finish(&mut self, code: &'static str) {
        if let Some(m) = self.metrics.take() {
            m.grpc_finished(self.service, self.method, code, self.started.elapsed());
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.finish("CANCELLED");
    }
}

/// A response body that records its call's final status when the trailers
/// pass, or when it ends or is dropped without them.
#[derive(Debug)]
pub struct MeteredBody<B> {
    inner: B,
    call: Call,
}

impl<B> Body for MeteredBody<B>
where
    B: Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(status) = frame.trailers_ref().and_then(|t| t.get("grpc-status")) {
                    this.call.finish(code_name(status));
                }
            }
            Poll::Ready(Some(Err(_)) | None) => this.call.finish("UNKNOWN"),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::convert::Infallible;

    use bytes::Bytes;

    use super::*;
    use crate::metrics::Format;

    #[test]
    fn served_methods_are_named_and_others_are_unknown() {
        assert_eq!(
            rpc_of("/callvault.v1.PlaybackService/Play"),
            ("callvault.v1.PlaybackService", "Play")
        );
        assert_eq!(
            rpc_of("/grpc.health.v1.Health/Check"),
            ("grpc.health.v1.Health", "Check")
        );
        assert_eq!(
            rpc_of("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"),
            (
                "grpc.reflection.v1alpha.ServerReflection",
                "ServerReflectionInfo"
            )
        );
        assert_eq!(
            rpc_of("/callvault.v1.PlaybackService/Nope"),
            ("unknown", "unknown")
        );
        assert_eq!(rpc_of("/x\"}\n"), ("unknown", "unknown"));
    }

    /// A response body: these frames, in order.
    #[derive(Debug, Default)]
    struct Frames(VecDeque<Frame<Bytes>>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.0.pop_front().map(Ok))
        }
    }

    /// A message, then trailers with `grpc-status: code` if given.
    fn stream(code: Option<&'static str>) -> Frames {
        let mut frames = VecDeque::from([Frame::data(Bytes::from_static(b"message"))]);
        if let Some(code) = code {
            let mut t = http::HeaderMap::new();
            t.insert("grpc-status", http::HeaderValue::from_static(code));
            frames.push_back(Frame::trailers(t));
        }
        Frames(frames)
    }

    /// One Play call answered with `response`; the client reads the whole
    /// body, or hangs up after the headers.
    async fn call(metrics: &Arc<Metrics>, response: http::Response<Frames>, read_body: bool) {
        let mut response = Some(response);
        let inner = tower::service_fn(move |_: http::Request<()>| {
            let res = response.take().unwrap_or_default();
            async move { Ok::<_, Infallible>(res) }
        });
        let mut svc = tower::Layer::layer(&MeteringLayer(metrics.clone()), inner);
        let req = http::Request::builder()
            .uri("/callvault.v1.PlaybackService/Play")
            .body(())
            .unwrap();
        let Ok(res) = tower::Service::call(&mut svc, req).await;
        if read_body {
            let mut body = res.into_body();
            while std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx))
                .await
                .is_some()
            {}
        }
    }

    #[tokio::test]
    async fn a_call_counts_with_its_final_status_wherever_it_is_sent() {
        let m = Arc::new(Metrics::default());
        // OK in the trailers after the stream's messages.
        call(&m, http::Response::new(stream(Some("0"))), true).await;
        // DATA_LOSS in the trailers after a message: an error mid-stream.
        call(&m, http::Response::new(stream(Some("15"))), true).await;
        // NOT_FOUND in the headers: a trailers-only answer.
        let mut res = http::Response::new(Frames::default());
        res.headers_mut()
            .insert("grpc-status", http::HeaderValue::from_static("5"));
        call(&m, res, false).await;
        // The client went away before the status.
        call(&m, http::Response::new(stream(Some("0"))), false).await;
        let text = m.render(Format::Prometheus);
        let count = |code: &str| {
            let sample = format!(
                "callvault_grpc_request_duration_seconds_count{{service=\"callvault.v1.PlaybackService\",method=\"Play\",code=\"{code}\"}} "
            );
            text.lines()
                .find_map(|l| l.strip_prefix(&sample))
                .and_then(|v| v.parse::<u64>().ok())
        };
        assert_eq!(count("OK"), Some(1), "{text}");
        assert_eq!(count("DATA_LOSS"), Some(1), "{text}");
        assert_eq!(count("NOT_FOUND"), Some(1), "{text}");
        assert_eq!(count("CANCELLED"), Some(1), "{text}");
        assert!(
            text.contains(
                "callvault_grpc_requests_total{service=\"callvault.v1.PlaybackService\",method=\"Play\"} 4"
            ),
            "{text}"
        );
        let errors: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("callvault_grpc_errors_total{"))
            .collect();
        assert_eq!(errors.len(), 3, "{text}");
        for code in ["DATA_LOSS", "NOT_FOUND", "CANCELLED"] {
            assert!(
                errors
                    .iter()
                    .any(|l| l.contains(&format!("code=\"{code}\"}} 1"))),
                "{text}"
            );
        }
    }
}
