//! End to end: an unmodified Python grpcio server and client over HTTP/2 (h2c): unary calls,
//! failing calls, server streaming, a deadline and a cancellation, all multiplexed on one
//! connection; an incoming traceparent is honoured.

mod common;

use std::{path::PathBuf, process::Command, time::Duration};

use common::{Agent, Program, free_port, require_capture, serial, wait_for_port, workload};
use periscope_tests::{OtlpReceiver, ReceivedSpan, Transport};

const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const PARENT_ID: &str = "b7ad6b7169203331";

/// Generate the Python stubs for greeter.proto into a temporary directory.
fn generate_stubs() -> PathBuf {
    let out = std::env::temp_dir().join(format!("periscope-grpc-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    let proto_dir = workload("grpc");
    let status = Command::new("python3")
        .args(["-m", "grpc_tools.protoc", "-I"])
        .arg(&proto_dir)
        .arg(format!("--python_out={}", out.display()))
        .arg(format!("--grpc_python_out={}", out.display()))
        .arg(proto_dir.join("greeter.proto"))
        .status()
        .expect("grpcio-tools installed (cargo xtask setup)");
    assert!(status.success());
    out
}

fn calls<'a>(spans: &'a [ReceivedSpan], kind: &str, name: &str) -> Vec<&'a ReceivedSpan> {
    let mut found: Vec<_> = spans
        .iter()
        .filter(|s| s.kind_name() == kind && s.span.name == name)
        .collect();
    found.sort_by_key(|s| s.span.start_time_unix_nano);
    found
}

#[test]
fn grpcio_unary_streaming_and_failing_calls() {
    require_capture!();
    let _serial = serial();
    let stubs = generate_stubs();
    let receiver = OtlpReceiver::start(Transport::Grpc).expect("receiver");
    let port = free_port();
    let _server = Program::spawn(
        Command::new("python3")
            .arg(workload("grpc/greeter_server.py"))
            .args(["--port", &port.to_string()])
            .env("PYTHONPATH", &stubs)
            .env("OTEL_SERVICE_NAME", "greeter"),
    );
    wait_for_port(port);
    let agent = Agent::exporting_to(
        &receiver,
        &["--exe", "greeter_server.py", "--exe", "greeter_client.py"],
    );
    let out = Command::new("python3")
        .arg(workload("grpc/greeter_client.py"))
        .args(["--target", &format!("127.0.0.1:{port}")])
        .args(["--traceparent", &format!("00-{TRACE_ID}-{PARENT_ID}-01")])
        .env("PYTHONPATH", &stubs)
        .env("OTEL_SERVICE_NAME", "greeter-client")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "client: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let spans = receiver.wait_for(Duration::from_secs(20), |s| {
        s.iter().filter(|s| s.service_name == "greeter").count() >= 7
            && s.iter()
                .filter(|s| s.service_name == "greeter-client")
                .count()
                >= 7
    });
    agent.stop();

    let server_hello = calls(&spans, "server", "greeter.Greeter/SayHello");
    assert_eq!(
        server_hello.len(),
        4,
        "ok, not found, invalid, again: {spans:#?}"
    );
    let codes: Vec<_> = server_hello
        .iter()
        .map(|s| s.attr("rpc.response.status_code").unwrap_or_default())
        .collect();
    assert_eq!(codes, ["OK", "NOT_FOUND", "INVALID_ARGUMENT", "OK"]);
    for s in &server_hello {
        assert_eq!(s.service_name, "greeter");
        assert_eq!(s.attr("rpc.system.name").as_deref(), Some("grpc"));
        assert_eq!(s.attr("rpc.service").as_deref(), Some("greeter.Greeter"));
        assert_eq!(s.attr("rpc.method").as_deref(), Some("SayHello"));
        assert_eq!(s.int_attr("server.port"), Some(port as i64));
        // The caller's errors are not the server's: NOT_FOUND and INVALID_ARGUMENT stay unset.
        assert!(!s.is_error(), "{:?}", s.attr("rpc.response.status_code"));
        // An incoming traceparent metadata entry is honoured.
        assert_eq!(s.trace_id_hex(), TRACE_ID);
    }
    let client_hello = calls(&spans, "client", "greeter.Greeter/SayHello");
    assert_eq!(client_hello.len(), 4);
    assert!(!client_hello[0].is_error());
    assert!(
        client_hello[1].is_error(),
        "NOT_FOUND is an error for the caller"
    );
    assert!(client_hello[2].is_error());

    let stream = calls(&spans, "server", "greeter.Greeter/SayHelloStream");
    assert_eq!(stream.len(), 2, "streamed call + cancelled call");
    assert_eq!(
        stream[0].attr("rpc.response.status_code").as_deref(),
        Some("OK")
    );
    let slow = calls(&spans, "client", "greeter.Greeter/SaySlowly");
    assert_eq!(slow.len(), 1);
    // The client gives up at its deadline and resets the stream; whether the server's
    // DEADLINE_EXCEEDED trailers reach it first is a race. Either way the call failed.
    assert!(slow[0].is_error());
    let seen = (
        slow[0].attr("rpc.response.status_code"),
        slow[0].attr("error.type"),
    );
    assert!(
        seen.0.as_deref() == Some("DEADLINE_EXCEEDED") || seen.1.as_deref() == Some("CANCEL"),
        "{seen:?}"
    );
    let slow_server = calls(&spans, "server", "greeter.Greeter/SaySlowly");
    assert_eq!(slow_server.len(), 1);
    assert!(
        slow_server[0].is_error(),
        "DEADLINE_EXCEEDED is a server-side failure"
    );
}
