//! OTLP exporter: spans to an OpenTelemetry collector over gRPC or HTTP/protobuf.
//!
//! [`OtlpSettings::resolve`] turns command-line flags and the standard `OTEL_EXPORTER_OTLP_*`
//! environment variables into one exact destination ([`settings`]). Each batch is encoded once,
//! straight from the span records, into the bytes of an OTLP request ([`encode`]) and sent by
//! tonic or reqwest ([`transport`]); transient failures are retried with backoff within the
//! export timeout, resending the same bytes.

pub mod encode;
pub mod settings;
pub mod transport;

use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;

pub use self::settings::*;
use self::transport::{SendError, Transport};
use super::SpanExporter;
use crate::spans::model::SpanRecord;

/// First wait before a retry; it doubles up to [`MAX_BACKOFF`], with jitter.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often, at most, a backend's partial rejections are reported.
const REJECTION_LOG_INTERVAL: Duration = Duration::from_secs(30);

pub struct OtlpExporter {
    // Declared (and so dropped) before the runtime it was built in.
    transport: Option<Transport>,
    runtime: Option<tokio::runtime::Runtime>,
    settings: OtlpSettings,
    last_rejection_log: Option<Instant>,
    /// The last request's buffer, taken back once sent and encoded into again.
    spare: Vec<u8>,
    encoder: encode::RequestEncoder,
}

/// A request buffer larger than this is let go after use rather than kept for the next batch.
const MAX_SPARE_BYTES: usize = 16 * 1024 * 1024;

impl std::fmt::Debug for OtlpExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpExporter")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl OtlpExporter {
    pub fn new(settings: &OtlpSettings) -> anyhow::Result<Self> {
        if settings.url.starts_with("https://") {
            bail!(
                "OTLP endpoint '{}': https is not supported by this build; use an http:// endpoint (for example a local collector)",
                settings.url
            );
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("periscope-otlp")
            .build()
            .context("starting the OTLP exporter's runtime")?;
        let transport = {
            // tonic's lazily connecting channel spawns its worker on the current runtime.
            let _guard = runtime.enter();
            Transport::new(settings)
                .with_context(|| format!("building the OTLP {} exporter", settings.protocol))?
        };
        Ok(Self {
            transport: Some(transport),
            runtime: Some(runtime),
            settings: settings.clone(),
            last_rejection_log: None,
            spare: Vec::new(),
            encoder: encode::RequestEncoder::default(),
        })
    }

    pub fn settings(&self) -> &OtlpSettings {
        &self.settings
    }

    /// Send one encoded request, retrying transient failures until `deadline`.
    fn send_with_retries(
        &self,
        request: &Bytes,
        deadline: Instant,
    ) -> Result<transport::Accepted, String> {
        let (Some(transport), Some(runtime)) = (self.transport.as_ref(), self.runtime.as_ref())
        else {
            return Err("the OTLP exporter is shut down".to_owned());
        };
        let mut backoff = FIRST_BACKOFF;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(format!("timed out after {:?}", self.settings.timeout));
            }
            let attempt =
                async { tokio::time::timeout(remaining, transport.send(request.clone())).await };
            let error: SendError = match runtime.block_on(attempt) {
                Ok(Ok(accepted)) => return Ok(accepted),
                Ok(Err(e)) => e,
                Err(_) => return Err(format!("timed out after {:?}", self.settings.timeout)),
            };
            if !error.retryable {
                return Err(error.message);
            }
            let wait = error.retry_after.unwrap_or_else(|| with_jitter(backoff));
            if Instant::now() + wait >= deadline {
                return Err(format!("{} (no time left to retry)", error.message));
            }
            std::thread::sleep(wait);
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

/// Between half and all of `backoff`, so that agents failing together do not retry together.
fn with_jitter(backoff: Duration) -> Duration {
    backoff.mul_f64(rand::random_range(0.5..=1.0))
}

impl SpanExporter for OtlpExporter {
    fn export(&mut self, batch: Vec<SpanRecord>) -> anyhow::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let deadline = Instant::now() + self.settings.timeout;
        let total = batch.len();
        let mut buffer = std::mem::take(&mut self.spare);
        self.encoder
            .encode(&encode::group_by_resource(batch), &mut buffer);
        let request = Bytes::from(buffer);
        let sent = self.send_with_retries(&request, deadline);
        // Every clone handed to the transport is gone by now, so the buffer comes back whole.
        if let Ok(mut buffer) = request.try_into_mut()
            && buffer.capacity() <= MAX_SPARE_BYTES
        {
            // Emptied first: turning it back into a Vec would otherwise move its bytes.
            buffer.clear();
            self.spare = buffer.into();
        }
        let accepted = sent.map_err(|e| {
            anyhow!(
                "OTLP export to {} failed ({total} of {total} spans lost): {e}",
                self.settings.url
            )
        })?;
        if accepted.rejected_spans > 0
            && self
                .last_rejection_log
                .is_none_or(|t| t.elapsed() >= REJECTION_LOG_INTERVAL)
        {
            self.last_rejection_log = Some(Instant::now());
            log::warn!(
                "the OTLP backend at {} rejected {} of {total} spans: {}",
                self.settings.url,
                accepted.rejected_spans,
                accepted.message
            );
        }
        Ok(())
    }

    fn flush(&mut self, _timeout: Duration) -> anyhow::Result<()> {
        // Every export is sent synchronously: nothing is buffered here.
        Ok(())
    }

    fn shutdown(&mut self, timeout: Duration) -> anyhow::Result<()> {
        drop(self.transport.take());
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(timeout);
        }
        Ok(())
    }
}

impl Drop for OtlpExporter {
    fn drop(&mut self) {
        drop(self.transport.take());
        if let Some(rt) = self.runtime.take() {
            // Never blocks, so dropping inside an async context is safe too.
            rt.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::spans::model::{AttrValue, ProcessResource, SpanKind, SpanStatus};

    fn span() -> SpanRecord {
        let start = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        SpanRecord {
            trace_id: [7; 16],
            span_id: [1; 8],
            parent_span_id: [0; 8],
            parent_is_remote: false,
            trace_flags: 1,
            trace_state: None,
            name: "GET /".into(),
            kind: SpanKind::Server,
            start,
            end: start + Duration::from_millis(5),
            attributes: vec![("http.response.status_code", AttrValue::Int(200))],
            status: SpanStatus::Unset,
            resource: Arc::new(ProcessResource {
                service_name: "a".into(),
                pid: 1,
                attributes: vec![],
            }),
        }
    }

    #[test]
    fn https_is_rejected_clearly() {
        let s = OtlpSettings {
            protocol: OtlpProtocol::HttpProtobuf,
            url: "https://c:4318/v1/traces".into(),
            headers: vec![],
            timeout: DEFAULT_TIMEOUT,
        };
        let e = OtlpExporter::new(&s).unwrap_err().to_string();
        assert!(e.contains("https"), "{e}");
    }

    #[test]
    fn empty_batch_needs_no_backend() {
        for protocol in [OtlpProtocol::Grpc, OtlpProtocol::HttpProtobuf] {
            let s = OtlpSettings {
                protocol,
                url: "http://127.0.0.1:9".into(),
                headers: vec![("x-a".into(), "b".into())],
                timeout: Duration::from_millis(200),
            };
            let mut e = OtlpExporter::new(&s).unwrap();
            e.export(Vec::new()).unwrap();
            e.flush(Duration::from_millis(100)).unwrap();
            e.shutdown(Duration::from_millis(100)).unwrap();
            assert!(e.export(vec![span()]).is_err());
        }
    }
}
