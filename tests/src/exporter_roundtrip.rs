//! The agent's OTLP exporter against the real receiver, over both transports.

use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use periscope::export::SpanExporter;
use periscope::export::otlp::{OtlpExporter, OtlpOptions, OtlpProtocol, OtlpSettings};
use periscope::export::pipeline::{ExportPipeline, PipelineOptions};
use periscope::spans::model::{AttrValue, ProcessResource, SpanKind, SpanRecord, SpanStatus};

use crate::procs::free_port;
use crate::{OtlpReceiver, Transport};

const TRACE: [u8; 16] = [
    0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36,
];

fn resource(service: &str, pid: u32) -> Arc<ProcessResource> {
    Arc::new(ProcessResource {
        service_name: service.into(),
        pid,
        attributes: vec![
            ("service.name".into(), AttrValue::from(service)),
            ("process.pid".into(), AttrValue::Int(pid as i64)),
            ("host.name".into(), AttrValue::from("testhost")),
        ],
    })
}

fn two_spans() -> Vec<SpanRecord> {
    let gateway = resource("gateway", 100);
    let payments = resource("payments", 200);
    let t0 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let client = SpanRecord {
        trace_id: TRACE,
        span_id: [0x11; 8],
        parent_span_id: [0; 8],
        parent_is_remote: false,
        trace_flags: 1,
        trace_state: None,
        name: "POST /pay".into(),
        kind: SpanKind::Client,
        start: t0,
        end: t0 + Duration::from_millis(40),
        attributes: vec![
            ("http.request.method", AttrValue::from("POST")),
            ("server.address", AttrValue::from("payments")),
            ("server.port", AttrValue::Int(8080)),
            ("http.response.status_code", AttrValue::Int(500)),
        ],
        status: SpanStatus::Error {
            message: "HTTP 500".into(),
        },
        resource: gateway,
    };
    let server = SpanRecord {
        trace_id: TRACE,
        span_id: [0x22; 8],
        parent_span_id: [0x11; 8],
        parent_is_remote: true,
        trace_flags: 1,
        trace_state: None,
        name: "POST /pay".into(),
        kind: SpanKind::Server,
        start: t0 + Duration::from_millis(1),
        end: t0 + Duration::from_millis(39),
        attributes: vec![
            ("http.route", AttrValue::from("/pay")),
            ("url.scheme", AttrValue::from("http")),
            ("network.peer.ok", AttrValue::Bool(true)),
        ],
        status: SpanStatus::Unset,
        resource: payments,
    };
    vec![client, server]
}

fn settings_for(rx: &OtlpReceiver, headers: Option<&str>) -> OtlpSettings {
    let endpoint = rx.endpoint();
    let protocol = rx.protocol();
    let flags = OtlpOptions {
        headers: headers.map(str::to_owned),
        timeout: Some(Duration::from_secs(5)),
        ..Default::default()
    };
    // Resolve through the same path the agent uses, from "environment" variables.
    let env = move |name: &str| match name {
        "OTEL_EXPORTER_OTLP_ENDPOINT" => Some(endpoint.clone()),
        "OTEL_EXPORTER_OTLP_PROTOCOL" => Some(protocol.to_owned()),
        _ => None,
    };
    OtlpSettings::resolve(&flags, &env).unwrap().unwrap()
}

fn roundtrip(transport: Transport) {
    let rx = OtlpReceiver::start(transport).unwrap();
    let settings = settings_for(&rx, Some("x-tenant=acme,authorization=Bearer%20t0k"));
    match transport {
        Transport::Grpc => {
            assert_eq!(settings.protocol, OtlpProtocol::Grpc);
            assert_eq!(settings.url, rx.endpoint());
        }
        Transport::HttpProtobuf => {
            assert_eq!(settings.protocol, OtlpProtocol::HttpProtobuf);
            assert_eq!(settings.url, format!("{}/v1/traces", rx.endpoint()));
        }
    }
    let mut exporter = OtlpExporter::new(&settings).unwrap();
    exporter.export(two_spans()).unwrap();

    let spans = rx.wait_for(Duration::from_secs(10), |s| s.len() >= 2);
    assert_eq!(spans.len(), 2, "{spans:#?}");
    assert_eq!(rx.span_count(), 2);
    // Two resources: two ResourceSpans, possibly in one request.
    let client = spans.iter().find(|s| s.kind_name() == "client").unwrap();
    let server = spans.iter().find(|s| s.kind_name() == "server").unwrap();

    assert_eq!(client.service_name, "gateway");
    assert_eq!(client.resource["process.pid"], "100");
    assert_eq!(client.resource["host.name"], "testhost");
    assert_eq!(client.resource.len(), 3, "{:?}", client.resource);
    assert_eq!(server.service_name, "payments");
    assert_eq!(server.resource["process.pid"], "200");

    assert_eq!(client.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(server.trace_id_hex(), client.trace_id_hex());
    assert_eq!(client.span_id_hex(), "1111111111111111");
    assert_eq!(client.parent_span_id_hex(), "");
    assert_eq!(server.span_id_hex(), "2222222222222222");
    assert_eq!(server.parent_span_id_hex(), client.span_id_hex());

    assert_eq!(client.span.name, "POST /pay");
    assert_eq!(client.attr("http.request.method").as_deref(), Some("POST"));
    assert_eq!(client.attr("server.address").as_deref(), Some("payments"));
    assert_eq!(client.int_attr("server.port"), Some(8080));
    assert_eq!(client.int_attr("http.response.status_code"), Some(500));
    assert_eq!(server.attr("http.route").as_deref(), Some("/pay"));
    assert_eq!(server.attr("network.peer.ok").as_deref(), Some("true"));

    assert!(client.is_error());
    assert_eq!(client.status_message(), "HTTP 500");
    assert!(!server.is_error());
    assert_eq!(client.duration(), Duration::from_millis(40));
    assert_eq!(server.duration(), Duration::from_millis(38));
    assert_eq!(
        client.span.start_time_unix_nano,
        1_700_000_000 * 1_000_000_000
    );
    // W3C flags carry the sampled bit; the remote-parent flag is set on the server span only.
    assert_eq!(client.span.flags & 0xff, 1);
    assert_eq!(client.span.flags & 0x300, 0x100);
    assert_eq!(server.span.flags & 0x300, 0x300);

    let headers = rx.last_headers();
    assert_eq!(headers.get("x-tenant").map(String::as_str), Some("acme"));
    assert_eq!(
        headers.get("authorization").map(String::as_str),
        Some("Bearer t0k")
    );

    exporter.shutdown(Duration::from_secs(2)).unwrap();
}

#[test]
fn grpc_roundtrip() {
    roundtrip(Transport::Grpc);
}

#[test]
fn http_protobuf_roundtrip() {
    roundtrip(Transport::HttpProtobuf);
}

fn dead_backend(protocol: OtlpProtocol) {
    let port = free_port();
    let timeout = Duration::from_millis(800);
    let settings = OtlpSettings {
        protocol,
        url: match protocol {
            OtlpProtocol::Grpc => format!("http://127.0.0.1:{port}"),
            OtlpProtocol::HttpProtobuf => format!("http://127.0.0.1:{port}/v1/traces"),
        },
        headers: vec![],
        timeout,
    };
    let mut exporter = OtlpExporter::new(&settings).unwrap();
    let t0 = Instant::now();
    let err = exporter.export(two_spans()).unwrap_err();
    let took = t0.elapsed();
    assert!(took < timeout + Duration::from_millis(700), "took {took:?}");
    assert!(err.to_string().contains("2 of 2 spans lost"), "{err:#}");
}

#[test]
fn grpc_dead_backend_fails_within_timeout() {
    dead_backend(OtlpProtocol::Grpc);
}

#[test]
fn http_dead_backend_fails_within_timeout() {
    dead_backend(OtlpProtocol::HttpProtobuf);
}

/// A backend that fails twice with a transient error gets the batch on the third try, once;
/// a permanent error is not retried.
fn retries(transport: Transport) {
    let rx = OtlpReceiver::start(transport).unwrap();
    let mut exporter = OtlpExporter::new(&settings_for(&rx, None)).unwrap();
    rx.refuse_next(2, true);
    exporter.export(two_spans()).unwrap();
    assert_eq!(rx.refused_count(), 2);
    assert_eq!(rx.request_count(), 1, "{transport:?}: delivered once");
    assert_eq!(rx.span_count(), 2);

    rx.refuse_next(1, false);
    let t0 = Instant::now();
    let err = exporter.export(two_spans()).unwrap_err().to_string();
    assert!(err.contains("2 of 2 spans lost"), "{err}");
    assert_eq!(
        rx.refused_count(),
        3,
        "{transport:?}: a permanent error is not retried"
    );
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    assert_eq!(rx.span_count(), 2);
}

#[test]
fn grpc_transient_failures_are_retried() {
    retries(Transport::Grpc);
}

#[test]
fn http_transient_failures_are_retried() {
    retries(Transport::HttpProtobuf);
}

#[test]
fn pipeline_delivers_everything_and_receiver_can_just_count() {
    for transport in [Transport::Grpc, Transport::HttpProtobuf] {
        let rx = OtlpReceiver::start(transport).unwrap();
        rx.set_keep_spans(false);
        let exporter = OtlpExporter::new(&settings_for(&rx, None)).unwrap();
        let mut pipeline = ExportPipeline::start(
            Box::new(exporter),
            PipelineOptions {
                queue_capacity: 1000,
                max_batch: 64,
                batch_interval: Duration::from_millis(50),
                export_timeout: Duration::from_secs(5),
            },
        );
        let stats = pipeline.stats();
        for i in 0..250u64 {
            let mut span = two_spans().remove(i as usize % 2);
            span.span_id = (i + 1).to_be_bytes();
            pipeline.submit(span);
        }
        pipeline.shutdown(Duration::from_secs(10));
        let s = stats.snapshot();
        assert_eq!(s.exported, 250, "{transport:?}: {s:?}");
        assert_eq!(rx.span_count(), 250, "{transport:?}");
        assert!(rx.spans().is_empty());
    }
}

#[test]
fn http_receiver_rejects_what_it_cannot_read() {
    use std::io::{Read, Write};
    let rx = OtlpReceiver::start(Transport::HttpProtobuf).unwrap();
    let send = |headers: &str, body: &[u8]| -> String {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", rx.port())).unwrap();
        write!(
            s,
            "POST /v1/traces HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}Content-Length: {}\r\n\r\n",
            body.len()
        )
        .unwrap();
        s.write_all(body).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    let r = send("Content-Type: application/json\r\n", b"{}");
    assert!(r.starts_with("HTTP/1.1 415"), "{r}");
    assert!(r.contains("application/x-protobuf"), "{r}");
    let r = send(
        "Content-Type: application/x-protobuf\r\nContent-Encoding: br\r\n",
        b"x",
    );
    assert!(r.starts_with("HTTP/1.1 415"), "{r}");
    let r = send("Content-Type: application/x-protobuf\r\n", b"\xff\xff\xff");
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");

    // gzip is accepted.
    use prost::Message as _;
    let req = opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
        resource_spans: vec![opentelemetry_proto::tonic::trace::v1::ResourceSpans {
            resource: None,
            scope_spans: vec![opentelemetry_proto::tonic::trace::v1::ScopeSpans {
                scope: None,
                spans: vec![opentelemetry_proto::tonic::trace::v1::Span {
                    name: "zipped".into(),
                    ..Default::default()
                }],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    };
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&req.encode_to_vec()).unwrap();
    let body = gz.finish().unwrap();
    let r = send(
        "Content-Type: application/x-protobuf\r\nContent-Encoding: gzip\r\n",
        &body,
    );
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert_eq!(rx.spans()[0].span.name, "zipped");
}
