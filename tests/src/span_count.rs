//! Counting spans without decoding them, for the receiver's count-only mode: under benchmark
//! load, decoding every attribute of every span cost the receiver (which shares the machine
//! with the workload) most of its time. The messages below are the OTLP request's skeleton:
//! prost skips the resource and scope fields, and each span stays an opaque byte string.

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;

use crate::receiver::Store;

/// `ExportTraceServiceRequest` with only `resource_spans` (field 1).
#[derive(Clone, PartialEq, prost::Message)]
pub struct SpanCountRequest {
    #[prost(message, repeated, tag = "1")]
    pub resource_spans: Vec<ResourceSpanCount>,
}

/// `ResourceSpans` with only `scope_spans` (field 2).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ResourceSpanCount {
    #[prost(message, repeated, tag = "2")]
    pub scope_spans: Vec<ScopeSpanCount>,
}

/// `ScopeSpans` with its `spans` (field 2) left encoded.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ScopeSpanCount {
    #[prost(bytes = "bytes", repeated, tag = "2")]
    pub spans: Vec<prost::bytes::Bytes>,
}

impl SpanCountRequest {
    pub fn span_count(&self) -> usize {
        self.resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum()
    }
}

/// The gRPC `Export` method in count-only mode.
pub struct CountExport {
    pub store: Arc<Store>,
}

impl tonic::server::UnaryService<SpanCountRequest> for CountExport {
    type Response = ExportTraceServiceResponse;
    type Future = std::future::Ready<Result<tonic::Response<Self::Response>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<SpanCountRequest>) -> Self::Future {
        self.store
            .note_headers(&request.metadata().clone().into_headers());
        self.store.count_only(request.get_ref().span_count());
        std::future::ready(Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        })))
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use prost::Message as _;

    use super::SpanCountRequest;

    #[test]
    fn counts_the_spans_of_a_full_request() {
        let scope = |n: usize| ScopeSpans {
            spans: (0..n)
                .map(|i| Span {
                    name: format!("GET /{i}"),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let request = ExportTraceServiceRequest {
            resource_spans: vec![
                ResourceSpans {
                    resource: Some(Resource::default()),
                    scope_spans: vec![scope(3), scope(0)],
                    ..Default::default()
                },
                ResourceSpans {
                    scope_spans: vec![scope(5)],
                    ..Default::default()
                },
            ],
        };
        let bytes = request.encode_to_vec();
        let counted = SpanCountRequest::decode(&bytes[..]).unwrap();
        assert_eq!(counted.span_count(), 8);
    }
}
