//! A batch of span records as one encoded OTLP `ExportTraceServiceRequest`.
//!
//! The request is built straight from our records with opentelemetry-proto's generated types
//! and encoded once, so retries resend the same bytes. Going through the SDK's `SpanData`
//! instead copied every attribute twice more (into the SDK's values, then into the protobuf
//! types, then once again per gRPC attempt): it was the largest part of the agent's CPU per span.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind as OtlpKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{Span, SpanFlags, Status};
use prost::Message as _;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len, message};

use crate::spans::model::{AttrValue, ProcessResource, SpanKind, SpanRecord, SpanStatus};

/// The instrumentation scope every span is reported under.
pub const SCOPE_NAME: &str = "periscope";

/// Field numbers of the messages that wrap the spans (`ExportTraceServiceRequest`,
/// `ResourceSpans`, `ScopeSpans` in opentelemetry-proto's `trace/v1` definitions).
const REQUEST_RESOURCE_SPANS: u32 = 1;
const RESOURCE_SPANS_RESOURCE: u32 = 1;
const RESOURCE_SPANS_SCOPE_SPANS: u32 = 2;
const SCOPE_SPANS_SCOPE: u32 = 1;
const SCOPE_SPANS_SPANS: u32 = 2;

/// Encode spans already grouped by process resource (see [`group_by_resource`]).
///
/// The bytes are exactly those of the equivalent `ExportTraceServiceRequest` (a test holds
/// them equal), but the three wrapping messages are framed here: prost sizes every nested
/// message again at each level it is wrapped in, and a span sits four levels deep.
pub fn encode_request(groups: Vec<(Arc<ProcessResource>, Vec<SpanRecord>)>) -> Vec<u8> {
    let scope = InstrumentationScope {
        name: SCOPE_NAME.to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        ..Default::default()
    };
    let mut out = Vec::new();
    for (resource, records) in groups {
        let resource = otlp_resource(&resource);
        let spans: Vec<Span> = records.into_iter().map(otlp_span).collect();
        let spans_len: usize = spans
            .iter()
            .map(|span| {
                let len = span.encoded_len();
                key_len(SCOPE_SPANS_SPANS) + encoded_len_varint(len as u64) + len
            })
            .sum();
        let scope_spans_len = message::encoded_len(SCOPE_SPANS_SCOPE, &scope) + spans_len;
        let resource_spans_len = message::encoded_len(RESOURCE_SPANS_RESOURCE, &resource)
            + key_len(RESOURCE_SPANS_SCOPE_SPANS)
            + encoded_len_varint(scope_spans_len as u64)
            + scope_spans_len;
        out.reserve(
            key_len(REQUEST_RESOURCE_SPANS)
                + encoded_len_varint(resource_spans_len as u64)
                + resource_spans_len,
        );

        encode_key(REQUEST_RESOURCE_SPANS, WireType::LengthDelimited, &mut out);
        encode_varint(resource_spans_len as u64, &mut out);
        message::encode(RESOURCE_SPANS_RESOURCE, &resource, &mut out);
        encode_key(
            RESOURCE_SPANS_SCOPE_SPANS,
            WireType::LengthDelimited,
            &mut out,
        );
        encode_varint(scope_spans_len as u64, &mut out);
        message::encode(SCOPE_SPANS_SCOPE, &scope, &mut out);
        for span in &spans {
            encode_key(SCOPE_SPANS_SPANS, WireType::LengthDelimited, &mut out);
            span.encode_length_delimited(&mut out)
                .expect("a Vec grows as needed");
        }
    }
    out
}

/// Split a batch by resource, keeping first-seen order.
pub fn group_by_resource(batch: Vec<SpanRecord>) -> Vec<(Arc<ProcessResource>, Vec<SpanRecord>)> {
    let Some(first) = batch.first().map(|s| s.resource.clone()) else {
        return Vec::new();
    };
    // Often a single process fills the whole batch: then it stays as it is.
    if batch
        .iter()
        .all(|s| Arc::ptr_eq(&s.resource, &first) || *s.resource == *first)
    {
        return vec![(first, batch)];
    }
    let mut groups: Vec<(Arc<ProcessResource>, Vec<SpanRecord>)> = Vec::new();
    for span in batch {
        let found = groups
            .iter()
            .position(|(r, _)| Arc::ptr_eq(r, &span.resource))
            .or_else(|| groups.iter().position(|(r, _)| **r == *span.resource));
        match found {
            Some(i) => groups[i].1.push(span),
            None => groups.push((span.resource.clone(), vec![span])),
        }
    }
    groups
}

fn otlp_resource(res: &ProcessResource) -> Resource {
    let mut attributes: Vec<KeyValue> = res
        .attributes
        .iter()
        .map(|(k, v)| key_value(k.clone(), v.clone()))
        .collect();
    if !res.attributes.iter().any(|(k, _)| k == "service.name") {
        attributes.push(key_value(
            "service.name".to_owned(),
            AttrValue::Str(res.service_name.clone()),
        ));
    }
    Resource {
        attributes,
        ..Default::default()
    }
}

/// One record as an OTLP span; its strings move over rather than being copied.
fn otlp_span(span: SpanRecord) -> Span {
    // Bit 8 says whether the parent is remote is known, bit 9 that it is.
    let mut flags = u32::from(span.trace_flags) | SpanFlags::ContextHasIsRemoteMask as u32;
    if span.parent_is_remote {
        flags |= SpanFlags::ContextIsRemoteMask as u32;
    }
    let parent_span_id = if span.is_root() {
        Vec::new()
    } else {
        span.parent_span_id.to_vec()
    };
    let status = match span.status {
        SpanStatus::Unset => Status::default(),
        SpanStatus::Error { message } => Status {
            message,
            code: StatusCode::Error as i32,
        },
    };
    Span {
        trace_id: span.trace_id.to_vec(),
        span_id: span.span_id.to_vec(),
        trace_state: span.trace_state.unwrap_or_default(),
        parent_span_id,
        flags,
        name: span.name,
        kind: match span.kind {
            SpanKind::Server => OtlpKind::Server,
            SpanKind::Client => OtlpKind::Client,
        } as i32,
        start_time_unix_nano: unix_nanos(span.start),
        end_time_unix_nano: unix_nanos(span.end),
        attributes: span
            .attributes
            .into_iter()
            .map(|(k, v)| key_value(k.to_owned(), v))
            .collect(),
        status: Some(status),
        ..Default::default()
    }
}

fn key_value(key: String, value: AttrValue) -> KeyValue {
    let value = match value {
        AttrValue::Str(s) => any_value::Value::StringValue(s),
        AttrValue::Static(s) => any_value::Value::StringValue(s.to_owned()),
        AttrValue::Shared(s) => any_value::Value::StringValue(s.as_ref().to_owned()),
        AttrValue::Int(i) => any_value::Value::IntValue(i),
        AttrValue::Bool(b) => any_value::Value::BoolValue(b),
    };
    KeyValue {
        key,
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};

    use super::*;

    fn resource(name: &str, pid: u32) -> Arc<ProcessResource> {
        Arc::new(ProcessResource {
            service_name: name.into(),
            pid,
            attributes: vec![
                ("service.name".into(), AttrValue::from(name)),
                ("process.pid".into(), AttrValue::Int(pid as i64)),
            ],
        })
    }

    fn span(res: &Arc<ProcessResource>, id: u8) -> SpanRecord {
        let start = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        SpanRecord {
            trace_id: [7; 16],
            span_id: [id; 8],
            parent_span_id: [0; 8],
            parent_is_remote: false,
            trace_flags: 1,
            trace_state: Some("vendor=x".into()),
            name: "GET /".into(),
            kind: SpanKind::Server,
            start,
            end: start + Duration::from_millis(5),
            attributes: vec![
                ("http.response.status_code", AttrValue::Int(500)),
                ("url.scheme", AttrValue::Static("http")),
                ("network.peer.address", AttrValue::Shared("10.0.0.1".into())),
                ("http.request.method", AttrValue::from("GET")),
                ("tls", AttrValue::Bool(false)),
            ],
            status: SpanStatus::Error {
                message: "boom".into(),
            },
            resource: res.clone(),
        }
    }

    fn decode(groups: Vec<(Arc<ProcessResource>, Vec<SpanRecord>)>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest::decode(encode_request(groups).as_slice()).unwrap()
    }

    fn text(kv: &KeyValue) -> Option<&str> {
        match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s),
            _ => None,
        }
    }

    #[test]
    fn groups_by_resource_pointer_or_value() {
        let a = resource("a", 1);
        let a_copy = Arc::new((*a).clone());
        let b = resource("b", 2);
        let groups = group_by_resource(vec![
            span(&a, 1),
            span(&b, 2),
            span(&a_copy, 3),
            span(&a, 4),
        ]);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].0.service_name, "a");
        let ids: Vec<u8> = groups[0].1.iter().map(|s| s.span_id[0]).collect();
        assert_eq!(ids, vec![1, 3, 4]);
        assert_eq!(groups[1].1.len(), 1);
    }

    #[test]
    fn a_client_span_with_a_remote_parent_decodes_field_by_field() {
        let res = resource("svc", 9);
        let mut rec = span(&res, 3);
        rec.parent_span_id = [2; 8];
        rec.parent_is_remote = true;
        rec.kind = SpanKind::Client;
        let req = decode(vec![(res, vec![rec])]);

        let rs = &req.resource_spans[0];
        let ss = &rs.scope_spans[0];
        assert_eq!(ss.scope.as_ref().unwrap().name, "periscope");
        let s = &ss.spans[0];
        assert_eq!(s.trace_id, vec![7; 16]);
        assert_eq!(s.span_id, vec![3; 8]);
        assert_eq!(s.parent_span_id, vec![2; 8]);
        assert_eq!(s.trace_state, "vendor=x");
        assert_eq!(s.flags, 0x301, "sampled, remote-ness known, parent remote");
        assert_eq!(s.kind, OtlpKind::Client as i32);
        assert_eq!(s.name, "GET /");
        assert_eq!(s.start_time_unix_nano, 1_700_000_000_000_000_000);
        assert_eq!(s.end_time_unix_nano - s.start_time_unix_nano, 5_000_000);
        let status = s.status.as_ref().unwrap();
        assert_eq!(status.code, StatusCode::Error as i32);
        assert_eq!(status.message, "boom");

        let keys: Vec<&str> = s.attributes.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "http.response.status_code",
                "url.scheme",
                "network.peer.address",
                "http.request.method",
                "tls"
            ]
        );
        assert_eq!(
            s.attributes[0].value.as_ref().unwrap().value,
            Some(any_value::Value::IntValue(500))
        );
        assert_eq!(text(&s.attributes[1]), Some("http"));
        assert_eq!(text(&s.attributes[2]), Some("10.0.0.1"));
        assert_eq!(text(&s.attributes[3]), Some("GET"));
        assert_eq!(
            s.attributes[4].value.as_ref().unwrap().value,
            Some(any_value::Value::BoolValue(false))
        );
    }

    #[test]
    fn a_root_server_span_has_no_parent_and_an_unset_status() {
        let res = resource("svc", 9);
        let mut rec = span(&res, 3);
        rec.status = SpanStatus::Unset;
        rec.trace_state = None;
        rec.trace_flags = 0;
        let s = decode(vec![(res, vec![rec])]).resource_spans[0].scope_spans[0].spans[0].clone();
        assert!(s.parent_span_id.is_empty());
        assert_eq!(s.flags, 0x100);
        assert_eq!(s.kind, OtlpKind::Server as i32);
        assert_eq!(s.status.unwrap().code, StatusCode::Unset as i32);
        assert_eq!(s.trace_state, "");
    }

    #[test]
    fn one_resource_spans_per_process_with_its_attributes() {
        let a = resource("a", 1);
        let mut bare = (*resource("b", 2)).clone();
        bare.attributes.retain(|(k, _)| k != "service.name");
        let b = Arc::new(bare);
        let req = decode(group_by_resource(vec![
            span(&a, 1),
            span(&b, 2),
            span(&a, 3),
        ]));
        assert_eq!(req.resource_spans.len(), 2);
        let attrs = |i: usize| req.resource_spans[i].resource.clone().unwrap().attributes;
        assert_eq!(attrs(0)[0].key, "service.name");
        assert_eq!(text(&attrs(0)[0]), Some("a"));
        assert_eq!(attrs(0)[1].key, "process.pid");
        assert_eq!(req.resource_spans[0].scope_spans[0].spans.len(), 2);
        // A resource without its own service.name still gets one.
        let b_attrs = attrs(1);
        let name = b_attrs.iter().find(|kv| kv.key == "service.name").unwrap();
        assert_eq!(text(name), Some("b"));
    }

    #[test]
    fn the_bytes_are_those_of_the_same_request_encoded_by_prost() {
        let a = resource("a", 1);
        let b = resource("b", 2);
        let batch = vec![span(&a, 1), span(&b, 2), span(&a, 3)];
        let groups = group_by_resource(batch);
        let expected = ExportTraceServiceRequest {
            resource_spans: groups
                .iter()
                .map(|(res, spans)| ResourceSpans {
                    resource: Some(otlp_resource(res)),
                    scope_spans: vec![ScopeSpans {
                        scope: Some(InstrumentationScope {
                            name: SCOPE_NAME.to_owned(),
                            version: env!("CARGO_PKG_VERSION").to_owned(),
                            ..Default::default()
                        }),
                        spans: spans.iter().cloned().map(otlp_span).collect(),
                        schema_url: String::new(),
                    }],
                    schema_url: String::new(),
                })
                .collect(),
        }
        .encode_to_vec();
        assert_eq!(encode_request(groups), expected);
    }

    #[test]
    fn an_empty_batch_is_an_empty_request() {
        assert!(encode_request(group_by_resource(Vec::new())).is_empty());
    }
}
