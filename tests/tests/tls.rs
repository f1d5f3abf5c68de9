//! End to end: HTTPS served and called by unmodified programs linked to OpenSSL; the agent
//! reads the plaintext through its uprobes and never mistakes ciphertext for requests.

mod common;

use std::{process::Command, time::Duration};

use common::{Agent, curl, python_service, require_capture, serial, servers, workload};
use periscope_tests::{OtlpReceiver, ReceivedSpan, Transport};

fn named<'a>(
    spans: &'a [ReceivedSpan],
    service: &str,
    kind: &str,
    name: &str,
) -> Vec<&'a ReceivedSpan> {
    spans
        .iter()
        .filter(|s| s.service_name == service && s.kind_name() == kind && s.span.name == name)
        .collect()
}

#[test]
fn python_tls_server_with_curl_and_python_clients() {
    require_capture!();
    let _serial = serial();
    let receiver = OtlpReceiver::start(Transport::HttpProtobuf).expect("receiver");
    let certs = std::env::temp_dir().join(format!("periscope-certs-{}", std::process::id()));
    std::fs::create_dir_all(&certs).unwrap();
    let (_server, port) = python_service("tls_shop.py", &[&certs]);
    let agent = Agent::exporting_to(
        &receiver,
        &[
            "--exe",
            "tls_shop.py",
            "--exe",
            "curl",
            "--exe",
            "tls_client.py",
        ],
    );
    let base = format!("https://127.0.0.1:{port}");
    curl(&[
        "-k",
        "-o",
        "/dev/null",
        &format!("{base}/items/7?card=4111"),
    ]);
    curl(&["-k", "-o", "/dev/null", &format!("{base}/fail")]);
    let out = Command::new("python3")
        .arg(workload("tls_client.py"))
        .args([
            "127.0.0.1",
            &port.to_string(),
            "/items/1",
            "/items/2",
            "/missing",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let spans = receiver.wait_for(Duration::from_secs(20), |s| {
        s.iter().filter(|s| s.service_name == "tls_shop").count() >= 5
            && s.iter().filter(|s| s.kind_name() == "client").count() >= 5
    });
    agent.stop();

    let server = named(&spans, "tls_shop", "server", "GET /items/7");
    assert_eq!(server.len(), 1, "{spans:#?}");
    let server = server[0];
    assert_eq!(server.attr("url.scheme").as_deref(), Some("https"));
    assert_eq!(server.attr("url.query").as_deref(), Some("card=REDACTED"));
    assert_eq!(server.int_attr("http.response.status_code"), Some(200));
    let fail = named(&spans, "tls_shop", "server", "GET /fail");
    assert_eq!(fail.len(), 1);
    assert!(fail[0].is_error());

    let client = named(&spans, "curl", "client", "GET /items/7");
    assert_eq!(client.len(), 1);
    assert_eq!(
        client[0].attr("url.full").as_deref(),
        Some(format!("https://127.0.0.1:{port}/items/7?card=REDACTED").as_str())
    );
    // curl's span and the server's are one trace: both ends were traced on this host.
    assert_eq!(server.trace_id_hex(), client[0].trace_id_hex());
    assert_eq!(server.parent_span_id_hex(), client[0].span_id_hex());

    // Three requests on one kept-alive TLS connection from Python.
    for path in ["/items/1", "/items/2", "/missing"] {
        assert_eq!(
            named(&spans, "tls_client", "client", &format!("GET {path}")).len(),
            1,
            "{path}"
        );
        assert_eq!(
            named(&spans, "tls_shop", "server", &format!("GET {path}")).len(),
            1,
            "{path}"
        );
    }
    // Nothing decoded from ciphertext: every span is one of the requests made above.
    let expected = ["/items/7", "/fail", "/items/1", "/items/2", "/missing"];
    for s in &spans {
        let path = s.attr("url.path").unwrap_or_default();
        assert!(
            expected.contains(&path.as_str()),
            "unexpected span {} {}",
            s.kind_name(),
            s.span.name
        );
        assert_eq!(s.attr("url.scheme").as_deref(), Some("https"));
    }
}

/// nginx terminating TLS (linked to the system OpenSSL), started after the agent.
#[test]
fn nginx_https() {
    nginx_tls(false);
}

/// HTTP/2 inside TLS: curl --http2 negotiates h2 by ALPN with nginx.
#[test]
fn nginx_http2_over_tls() {
    nginx_tls(true);
}

fn nginx_tls(http2: bool) {
    require_capture!();
    let _serial = serial();
    let listen = if http2 {
        servers::Listen::Http2OverTls
    } else {
        servers::Listen::Https
    };
    let site =
        servers::NginxSite::prepare("nginx-tls", listen, "location = /teapot { return 418; }");
    let version = if http2 { "--http2" } else { "--http1.1" };
    let spans = site.traced(
        |base| {
            curl(&[
                "-k",
                version,
                "-o",
                "/dev/null",
                &format!("{base}/index.html"),
                "-o",
                "/dev/null",
                &format!("{base}/teapot"),
            ]);
        },
        2,
    );
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let index = named(&spans, "nginx", "server", "GET /index.html");
    assert_eq!(index.len(), 1);
    assert_eq!(index[0].attr("url.scheme").as_deref(), Some("https"));
    assert_eq!(index[0].int_attr("http.response.status_code"), Some(200));
    let teapot = named(&spans, "nginx", "server", "GET /teapot");
    assert_eq!(teapot.len(), 1);
    assert_eq!(teapot[0].int_attr("http.response.status_code"), Some(418));
    let expected_version = if http2 { "2" } else { "1.1" };
    for s in &spans {
        assert_eq!(
            s.attr("network.protocol.version").as_deref(),
            Some(expected_version)
        );
    }
}
