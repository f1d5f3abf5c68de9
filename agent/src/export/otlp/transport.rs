//! Sending one encoded export request: OTLP/gRPC with tonic, OTLP/HTTP with reqwest. Each
//! failure says whether the OTLP specification lets it be retried.

use std::time::Duration;

use anyhow::{Context as _, anyhow};
use bytes::{BufMut as _, Bytes};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceResponse,
};
use prost::Message as _;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER, USER_AGENT};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::{Channel, Endpoint};

use super::settings::{OtlpProtocol, OtlpSettings};

const AGENT: &str = concat!("periscope/", env!("CARGO_PKG_VERSION"));
const GRPC_EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// The backend accepted the request, perhaps not all of it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Accepted {
    /// Spans the backend said it rejected (OTLP partial success); not to be retried.
    pub rejected_spans: u64,
    pub message: String,
}

impl From<Option<ExportTracePartialSuccess>> for Accepted {
    fn from(partial: Option<ExportTracePartialSuccess>) -> Self {
        let partial = partial.unwrap_or_default();
        Self {
            rejected_spans: u64::try_from(partial.rejected_spans).unwrap_or(0),
            message: partial.error_message,
        }
    }
}

#[derive(Debug)]
pub struct SendError {
    pub message: String,
    /// A transient failure: the same request may be sent again.
    pub retryable: bool,
    /// How long the backend asked us to wait first.
    pub retry_after: Option<Duration>,
}

pub enum Transport {
    Grpc(GrpcTransport),
    Http(HttpTransport),
}

impl Transport {
    /// Must be called inside the Tokio runtime that will drive the sends.
    pub fn new(settings: &OtlpSettings) -> anyhow::Result<Self> {
        Ok(match settings.protocol {
            OtlpProtocol::Grpc => Self::Grpc(GrpcTransport::new(settings)?),
            OtlpProtocol::HttpProtobuf => Self::Http(HttpTransport::new(settings)?),
        })
    }

    pub async fn send(&self, request: Bytes) -> Result<Accepted, SendError> {
        match self {
            Self::Grpc(t) => t.send(request).await,
            Self::Http(t) => t.send(request).await,
        }
    }
}

pub struct GrpcTransport {
    channel: Channel,
    metadata: MetadataMap,
}

impl GrpcTransport {
    fn new(settings: &OtlpSettings) -> anyhow::Result<Self> {
        let mut metadata = MetadataMap::new();
        for (k, v) in &settings.headers {
            let key = MetadataKey::from_bytes(k.as_bytes())
                .map_err(|e| anyhow!("OTLP header '{k}': {e}"))?;
            let value = MetadataValue::try_from(v.as_str())
                .map_err(|e| anyhow!("OTLP header '{k}': {e}"))?;
            metadata.insert(key, value);
        }
        let endpoint = Endpoint::from_shared(settings.url.clone())
            .with_context(|| format!("OTLP endpoint '{}'", settings.url))?
            .user_agent(AGENT)?
            .connect_timeout(settings.timeout)
            .timeout(settings.timeout);
        Ok(Self {
            channel: endpoint.connect_lazy(),
            metadata,
        })
    }

    async fn send(&self, request: Bytes) -> Result<Accepted, SendError> {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready().await.map_err(|e| SendError {
            message: format!("gRPC channel not ready: {e}"),
            retryable: true,
            retry_after: None,
        })?;
        let mut request = tonic::Request::new(request);
        *request.metadata_mut() = self.metadata.clone();
        let response = grpc
            .unary(
                request,
                PathAndQuery::from_static(GRPC_EXPORT_PATH),
                EncodedRequestCodec,
            )
            .await
            .map_err(grpc_error)?;
        Ok(response.into_inner().partial_success.into())
    }
}

fn grpc_error(status: tonic::Status) -> SendError {
    use tonic::Code;
    // The codes the OTLP specification calls retryable (RESOURCE_EXHAUSTED only with retry
    // information, which this exporter does not read).
    let retryable = matches!(
        status.code(),
        Code::Cancelled
            | Code::DeadlineExceeded
            | Code::Aborted
            | Code::OutOfRange
            | Code::Unavailable
            | Code::DataLoss
    );
    SendError {
        message: format!("gRPC status {:?}: {}", status.code(), status.message()),
        retryable,
        retry_after: None,
    }
}

/// Sends a request that is already encoded (so a retry costs no re-encoding) and decodes the
/// collector's reply.
#[derive(Clone, Copy, Debug, Default)]
struct EncodedRequestCodec;

impl Codec for EncodedRequestCodec {
    type Encode = Bytes;
    type Decode = ExportTraceServiceResponse;
    type Encoder = Self;
    type Decoder = Self;

    fn encoder(&mut self) -> Self {
        *self
    }

    fn decoder(&mut self) -> Self {
        *self
    }
}

impl Encoder for EncodedRequestCodec {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for EncodedRequestCodec {
    type Item = ExportTraceServiceResponse;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, tonic::Status> {
        ExportTraceServiceResponse::decode(src)
            .map(Some)
            .map_err(|e| tonic::Status::internal(format!("undecodable export response: {e}")))
    }
}

pub struct HttpTransport {
    client: reqwest::Client,
    url: String,
    headers: HeaderMap,
}

impl HttpTransport {
    fn new(settings: &OtlpSettings) -> anyhow::Result<Self> {
        let mut headers = HeaderMap::with_capacity(settings.headers.len() + 2);
        for (k, v) in &settings.headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|e| anyhow!("OTLP header '{k}': {e}"))?;
            let value = HeaderValue::from_str(v).map_err(|e| anyhow!("OTLP header '{k}': {e}"))?;
            headers.insert(name, value);
        }
        // After the user's headers: these two describe the body and cannot be overridden.
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-protobuf"),
        );
        headers.insert(USER_AGENT, HeaderValue::from_static(AGENT));
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .build()
            .context("building the HTTP client for OTLP")?;
        Ok(Self {
            client,
            url: settings.url.clone(),
            headers,
        })
    }

    async fn send(&self, request: Bytes) -> Result<Accepted, SendError> {
        let response = self
            .client
            .post(&self.url)
            .headers(self.headers.clone())
            .body(request)
            .send()
            .await
            .map_err(|e| SendError {
                message: error_chain(&e),
                // Nothing reached the backend, or it never answered: worth another try.
                retryable: e.is_connect() || e.is_timeout() || e.is_request(),
                retry_after: None,
            })?;
        let status = response.status();
        if status.is_success() {
            // A 200 may carry a partial success; an unreadable body still means accepted.
            let body = response.bytes().await.unwrap_or_default();
            let reply = ExportTraceServiceResponse::decode(body).unwrap_or_default();
            return Ok(reply.partial_success.into());
        }
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        Err(SendError {
            message: format!("HTTP status {status}"),
            retryable: matches!(status.as_u16(), 429 | 502 | 503 | 504),
            retry_after,
        })
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
