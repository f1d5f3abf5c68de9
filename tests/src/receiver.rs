//! A real OTLP trace receiver for tests: gRPC (tonic, on the generated `TraceService`) or
//! HTTP/protobuf (`POST /v1/traces`, on hyper). It runs on its own thread with its own tokio
//! runtime, binds `127.0.0.1:0`, keeps what it receives in memory and stops when dropped.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode as OtlpStatusCode;
use prost::Message as _;
use std::task::{Context, Poll};
use tonic::codegen::{BoxFuture, Service, http};
use tonic::server::NamedService;

use crate::span_count::{CountExport, SpanCountRequest};

/// Largest request body the receiver accepts (the OTLP/HTTP recommendation).
const MAX_BODY: usize = 64 * 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Grpc,
    HttpProtobuf,
}

/// One received span with the resource it came with.
#[derive(Clone, Debug)]
pub struct ReceivedSpan {
    /// The resource's `service.name` ("" when missing).
    pub service_name: String,
    /// Every resource attribute, values as strings.
    pub resource: BTreeMap<String, String>,
    pub span: Span,
}

impl ReceivedSpan {
    /// A span attribute as a string, whatever its type.
    pub fn attr(&self, key: &str) -> Option<String> {
        find_attr(&self.span.attributes, key).and_then(any_to_string)
    }

    /// An integer span attribute (also accepted: a string holding an integer).
    pub fn int_attr(&self, key: &str) -> Option<i64> {
        match find_attr(&self.span.attributes, key)?.value.as_ref()? {
            any_value::Value::IntValue(i) => Some(*i),
            any_value::Value::StringValue(s) => s.parse().ok(),
            _ => None,
        }
    }

    pub fn trace_id_hex(&self) -> String {
        hex(&self.span.trace_id)
    }

    pub fn span_id_hex(&self) -> String {
        hex(&self.span.span_id)
    }

    /// Empty for a root span.
    pub fn parent_span_id_hex(&self) -> String {
        hex(&self.span.parent_span_id)
    }

    /// `server`, `client`, `internal`, `producer`, `consumer` or `unspecified`.
    pub fn kind_name(&self) -> &'static str {
        match SpanKind::try_from(self.span.kind) {
            Ok(SpanKind::Server) => "server",
            Ok(SpanKind::Client) => "client",
            Ok(SpanKind::Internal) => "internal",
            Ok(SpanKind::Producer) => "producer",
            Ok(SpanKind::Consumer) => "consumer",
            _ => "unspecified",
        }
    }

    pub fn is_error(&self) -> bool {
        self.span
            .status
            .as_ref()
            .is_some_and(|s| s.code == OtlpStatusCode::Error as i32)
    }

    pub fn status_message(&self) -> String {
        self.span
            .status
            .as_ref()
            .map(|s| s.message.clone())
            .unwrap_or_default()
    }

    pub fn duration(&self) -> Duration {
        Duration::from_nanos(
            self.span
                .end_time_unix_nano
                .saturating_sub(self.span.start_time_unix_nano),
        )
    }
}

fn find_attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
}

fn any_to_string(v: &AnyValue) -> Option<String> {
    Some(match v.value.as_ref()? {
        any_value::Value::StringValue(s) => s.clone(),
        any_value::Value::IntValue(i) => i.to_string(),
        any_value::Value::BoolValue(b) => b.to_string(),
        any_value::Value::DoubleValue(d) => d.to_string(),
        any_value::Value::BytesValue(b) => hex(b),
        any_value::Value::ArrayValue(a) => {
            let items: Vec<String> = a.values.iter().filter_map(any_to_string).collect();
            format!("[{}]", items.join(","))
        }
        any_value::Value::KvlistValue(kv) => {
            let items: Vec<String> = kv
                .values
                .iter()
                .map(|e| {
                    let v = e.value.as_ref().and_then(any_to_string).unwrap_or_default();
                    format!("{}={v}", e.key)
                })
                .collect();
            format!("{{{}}}", items.join(","))
        }
        #[allow(unreachable_patterns)]
        _ => return None,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the receiver keeps, shared between the server tasks and the test.
#[derive(Default)]
pub(crate) struct Store {
    spans: Mutex<Vec<ReceivedSpan>>,
    count: AtomicUsize,
    drop_spans: AtomicBool,
    requests: AtomicUsize,
    last_headers: Mutex<BTreeMap<String, String>>,
    /// Requests still to be refused, and whether as a transient failure.
    refuse_left: AtomicUsize,
    refuse_transient: AtomicBool,
    refused: AtomicUsize,
}

impl Store {
    pub(crate) fn note_headers(&self, headers: &hyper::HeaderMap) {
        let map = headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        *self.last_headers.lock().unwrap_or_else(|e| e.into_inner()) = map;
    }

    /// `Some(transient)` when this request is to be refused.
    pub(crate) fn take_refusal(&self) -> Option<bool> {
        self.refuse_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .ok()?;
        self.refused.fetch_add(1, Ordering::SeqCst);
        Some(self.refuse_transient.load(Ordering::SeqCst))
    }

    /// Count-only mode: the spans of one request, counted without being decoded.
    pub(crate) fn count_only(&self, spans: usize) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(spans, Ordering::Relaxed);
    }

    fn ingest(&self, req: ExportTraceServiceRequest) -> usize {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let keep = !self.drop_spans.load(Ordering::Relaxed);
        let mut received = Vec::new();
        let mut n = 0;
        for rs in req.resource_spans {
            let resource: BTreeMap<String, String> = rs
                .resource
                .map(|r| {
                    r.attributes
                        .into_iter()
                        .map(|kv| {
                            let v = kv
                                .value
                                .as_ref()
                                .and_then(any_to_string)
                                .unwrap_or_default();
                            (kv.key, v)
                        })
                        .collect()
                })
                .unwrap_or_default();
            let service_name = resource.get("service.name").cloned().unwrap_or_default();
            for ss in rs.scope_spans {
                n += ss.spans.len();
                if keep {
                    received.extend(ss.spans.into_iter().map(|span| ReceivedSpan {
                        service_name: service_name.clone(),
                        resource: resource.clone(),
                        span,
                    }));
                }
            }
        }
        if keep {
            self.spans
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(received);
        }
        self.count.fetch_add(n, Ordering::Relaxed);
        n
    }
}

pub struct OtlpReceiver {
    transport: Transport,
    addr: SocketAddr,
    store: Arc<Store>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl OtlpReceiver {
    /// Start listening on `127.0.0.1:0`.
    pub fn start(transport: Transport) -> anyhow::Result<Self> {
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").context("binding the OTLP receiver")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let store = Arc::new(Store::default());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<anyhow::Result<()>>();
        let thread_store = store.clone();
        let thread = std::thread::Builder::new()
            .name(format!("otlp-receiver-{}", addr.port()))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.into()));
                        return;
                    }
                };
                rt.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e.into()));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    match transport {
                        Transport::Grpc => serve_grpc(listener, thread_store, stop_rx).await,
                        Transport::HttpProtobuf => {
                            serve_http(listener, thread_store, stop_rx).await
                        }
                    }
                });
                // Dropping the runtime cancels any connection still open.
                rt.shutdown_timeout(Duration::from_secs(1));
            })
            .context("spawning the OTLP receiver thread")?;
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .context("the OTLP receiver did not start")??;
        Ok(Self {
            transport,
            addr,
            store,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT`, without `/v1/traces`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// For `OTEL_EXPORTER_OTLP_PROTOCOL`.
    pub fn protocol(&self) -> &'static str {
        match self.transport {
            Transport::Grpc => "grpc",
            Transport::HttpProtobuf => "http/protobuf",
        }
    }

    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// Everything kept so far, in arrival order.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.store
            .spans
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Spans received so far (counted even when not kept).
    pub fn span_count(&self) -> usize {
        self.store.count.load(Ordering::Relaxed)
    }

    /// Export requests received so far.
    pub fn request_count(&self) -> usize {
        self.store.requests.load(Ordering::Relaxed)
    }

    /// Poll until `pred` holds for the kept spans or `timeout` passes; returns the spans either
    /// way.
    pub fn wait_for(
        &self,
        timeout: Duration,
        pred: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Vec<ReceivedSpan> {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let spans = self.store.spans.lock().unwrap_or_else(|e| e.into_inner());
                if pred(&spans) || Instant::now() >= deadline {
                    return spans.clone();
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The headers (gRPC: metadata) of the latest export request, names lowercase.
    pub fn last_headers(&self) -> BTreeMap<String, String> {
        self.store
            .last_headers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// `false`: count spans without keeping them, or even decoding them past the span
    /// boundaries (for benchmarks).
    pub fn set_keep_spans(&self, keep: bool) {
        self.store.drop_spans.store(!keep, Ordering::Relaxed);
    }

    /// Refuse the next `n` export requests: as a transient failure the OTLP specification lets a
    /// client retry (gRPC UNAVAILABLE, HTTP 503), or as a permanent one (INVALID_ARGUMENT, 400).
    pub fn refuse_next(&self, n: usize, transient: bool) {
        self.store
            .refuse_transient
            .store(transient, Ordering::SeqCst);
        self.store.refuse_left.store(n, Ordering::SeqCst);
    }

    /// Requests refused so far by [`Self::refuse_next`].
    pub fn refused_count(&self) -> usize {
        self.store.refused.load(Ordering::SeqCst)
    }

    /// Forget the spans kept so far (the count stays).
    pub fn clear(&self) {
        self.store
            .spans
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// gRPC

struct GrpcService {
    store: Arc<Store>,
}

#[tonic::async_trait]
impl TraceService for GrpcService {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.store
            .note_headers(&request.metadata().clone().into_headers());
        self.store.ingest(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

async fn serve_grpc(
    listener: tokio::net::TcpListener,
    store: Arc<Store>,
    stop: tokio::sync::oneshot::Receiver<()>,
) {
    let full = TraceServiceServer::new(GrpcService {
        store: store.clone(),
    })
    .max_decoding_message_size(MAX_BODY);
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    let result = tonic::transport::Server::builder()
        .add_service(GrpcRoutes { full, store })
        .serve_with_incoming_shutdown(incoming, async {
            let _ = stop.await;
        })
        .await;
    if let Err(e) = result {
        log::error!("OTLP gRPC receiver failed: {e}");
    }
}

/// The trace service, decoded in full, or in count-only mode only down to span boundaries.
#[derive(Clone)]
struct GrpcRoutes {
    full: TraceServiceServer<GrpcService>,
    store: Arc<Store>,
}

impl NamedService for GrpcRoutes {
    const NAME: &'static str = <TraceServiceServer<GrpcService> as NamedService>::NAME;
}

impl Service<http::Request<tonic::body::Body>> for GrpcRoutes {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        if let Some(transient) = self.store.take_refusal() {
            let status = if transient {
                tonic::Status::unavailable("refused by the test")
            } else {
                tonic::Status::invalid_argument("refused by the test")
            };
            return Box::pin(async move { Ok(status.into_http()) });
        }
        if !self.store.drop_spans.load(Ordering::Relaxed) {
            return self.full.call(request);
        }
        let store = self.store.clone();
        Box::pin(async move {
            let codec =
                tonic_prost::ProstCodec::<ExportTraceServiceResponse, SpanCountRequest>::default();
            let mut grpc =
                tonic::server::Grpc::new(codec).apply_max_message_size_config(Some(MAX_BODY), None);
            Ok(grpc.unary(CountExport { store }, request).await)
        })
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP/protobuf

async fn serve_http(
    listener: tokio::net::TcpListener,
    store: Arc<Store>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    loop {
        let (stream, _) = tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    log::warn!("OTLP HTTP receiver: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let store = store.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let store = store.clone();
                async move { Ok::<_, Infallible>(handle_http(req, &store).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

fn plain(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(text.to_owned())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain"),
    );
    r
}

async fn handle_http(req: Request<Incoming>, store: &Store) -> Response<Full<Bytes>> {
    if req.uri().path() != "/v1/traces" {
        return plain(StatusCode::NOT_FOUND, "only /v1/traces is served here\n");
    }
    if req.method() != Method::POST {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "POST only\n");
    }
    let header = |name: hyper::header::HeaderName| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase()
    };
    store.note_headers(req.headers());
    if let Some(transient) = store.take_refusal() {
        return if transient {
            plain(StatusCode::SERVICE_UNAVAILABLE, "refused by the test\n")
        } else {
            plain(StatusCode::BAD_REQUEST, "refused by the test\n")
        };
    }
    let content_type = header(hyper::header::CONTENT_TYPE);
    let encoding = header(hyper::header::CONTENT_ENCODING);
    let media = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_owned();
    if media != "application/x-protobuf" && media != "application/protobuf" {
        return plain(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            &format!(
                "content type '{content_type}' is not supported: this receiver takes application/x-protobuf only\n"
            ),
        );
    }
    let body = match http_body_util::Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => return plain(StatusCode::BAD_REQUEST, &format!("reading the body: {e}\n")),
    };
    let body: Vec<u8> = match encoding.as_str() {
        "" | "identity" => body.to_vec(),
        "gzip" => {
            let mut out = Vec::new();
            let decoder = flate2::read::GzDecoder::new(&body[..]);
            if let Err(e) = decoder.take(MAX_BODY as u64 + 1).read_to_end(&mut out) {
                return plain(StatusCode::BAD_REQUEST, &format!("bad gzip body: {e}\n"));
            }
            if out.len() > MAX_BODY {
                return plain(StatusCode::PAYLOAD_TOO_LARGE, "body too large\n");
            }
            out
        }
        other => {
            return plain(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                &format!("content encoding '{other}' is not supported (gzip or none)\n"),
            );
        }
    };
    if store.drop_spans.load(Ordering::Relaxed) {
        match SpanCountRequest::decode(&body[..]) {
            Ok(r) => store.count_only(r.span_count()),
            Err(e) => {
                return plain(
                    StatusCode::BAD_REQUEST,
                    &format!("not an ExportTraceServiceRequest: {e}\n"),
                );
            }
        }
        return protobuf_reply();
    }
    let request = match ExportTraceServiceRequest::decode(&body[..]) {
        Ok(r) => r,
        Err(e) => {
            return plain(
                StatusCode::BAD_REQUEST,
                &format!("not an ExportTraceServiceRequest: {e}\n"),
            );
        }
    };
    store.ingest(request);
    protobuf_reply()
}

/// The OTLP/HTTP success reply.
fn protobuf_reply() -> Response<Full<Bytes>> {
    let reply = ExportTraceServiceResponse {
        partial_success: None,
    }
    .encode_to_vec();
    let mut r = Response::new(Full::new(Bytes::from(reply)));
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/x-protobuf"),
    );
    r
}
