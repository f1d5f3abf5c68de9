//! End to end: unmodified HTTP/1 servers and clients, the real agent, a real OTLP receiver.

mod common;

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{
    Agent, KeepaliveClient, Program, StatsFile, curl, python_service, require_capture, serial,
    servers, workload,
};
use periscope_tests::{OtlpReceiver, ReceivedSpan, Transport};

const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const PARENT_ID: &str = "b7ad6b7169203331";

fn find<'a>(spans: &'a [ReceivedSpan], kind: &str, name: &str) -> Vec<&'a ReceivedSpan> {
    spans
        .iter()
        .filter(|s| s.kind_name() == kind && s.span.name == name)
        .collect()
}

fn one<'a>(spans: &'a [ReceivedSpan], kind: &str, name: &str) -> &'a ReceivedSpan {
    let found = find(spans, kind, name);
    assert_eq!(
        found.len(),
        1,
        "expected one {kind} span `{name}`, got {}; all spans: {:#?}",
        found.len(),
        spans
            .iter()
            .map(|s| (s.kind_name(), &s.span.name))
            .collect::<Vec<_>>()
    );
    found[0]
}

/// The python stdlib service and curl, traced by executable name, exported over `transport`.
fn python_service_and_curl(transport: Transport) {
    let _serial = serial();
    let receiver = OtlpReceiver::start(transport).expect("receiver");
    let (_server, port) = python_service::<&str>("shop.py", &[]);
    let agent = Agent::exporting_to(&receiver, &["--exe", "shop.py", "--exe", "curl"]);
    let base = format!("http://127.0.0.1:{port}");
    // Two requests on one keep-alive connection.
    curl(&[
        "-o",
        "/dev/null",
        &format!("{base}/items/42?token=secret"),
        "-o",
        "/dev/null",
        &format!("{base}/items/43"),
    ]);
    curl(&["-o", "/dev/null", &format!("{base}/missing")]);
    curl(&["-o", "/dev/null", &format!("{base}/fail")]);
    curl(&[
        "-H",
        &format!("traceparent: 00-{TRACE_ID}-{PARENT_ID}-01"),
        &format!("{base}/slow?ms=300"),
    ]);
    curl(&["-d", "hello=world", &format!("{base}/orders")]);

    let spans = receiver.wait_for(Duration::from_secs(20), |spans| {
        spans.iter().filter(|s| s.kind_name() == "server").count() >= 6
            && spans.iter().filter(|s| s.kind_name() == "client").count() >= 6
    });
    agent.stop();

    // Server side, as python saw it.
    let item = one(&spans, "server", "GET /items/42");
    assert_eq!(item.service_name, "shop");
    let exe = item
        .resource
        .get("process.executable.name")
        .cloned()
        .unwrap_or_default();
    assert!(
        exe.starts_with("python3"),
        "process.executable.name = {exe}"
    );
    assert!(item.resource.contains_key("host.name"));
    assert!(item.resource.contains_key("process.pid"));
    assert_eq!(item.attr("http.request.method").as_deref(), Some("GET"));
    assert_eq!(item.attr("url.path").as_deref(), Some("/items/42"));
    assert_eq!(item.attr("url.query").as_deref(), Some("token=REDACTED"));
    assert_eq!(item.attr("url.scheme").as_deref(), Some("http"));
    assert_eq!(item.int_attr("http.response.status_code"), Some(200));
    assert_eq!(item.attr("server.address").as_deref(), Some("127.0.0.1"));
    assert_eq!(item.int_attr("server.port"), Some(port as i64));
    assert_eq!(item.attr("client.address").as_deref(), Some("127.0.0.1"));
    assert_eq!(
        item.attr("network.peer.address").as_deref(),
        Some("127.0.0.1")
    );
    assert!(
        item.attr("user_agent.original")
            .unwrap_or_default()
            .starts_with("curl/")
    );
    assert!(!item.is_error());
    one(&spans, "server", "GET /items/43");

    let missing = one(&spans, "server", "GET /missing");
    assert_eq!(missing.int_attr("http.response.status_code"), Some(404));
    assert!(!missing.is_error(), "a 404 is not a server error");
    let fail = one(&spans, "server", "GET /fail");
    assert_eq!(fail.int_attr("http.response.status_code"), Some(500));
    assert!(fail.is_error());
    assert_eq!(fail.attr("error.type").as_deref(), Some("500"));

    let slow = one(&spans, "server", "GET /slow");
    assert_eq!(
        slow.trace_id_hex(),
        TRACE_ID,
        "incoming traceparent continues the trace"
    );
    assert_eq!(slow.parent_span_id_hex(), PARENT_ID);
    assert!(
        slow.duration() >= Duration::from_millis(300) && slow.duration() < Duration::from_secs(5),
        "server span lasts the 300 ms sleep: {:?}",
        slow.duration()
    );
    let post = one(&spans, "server", "POST /orders");
    assert_eq!(post.int_attr("http.response.status_code"), Some(201));

    // Client side, as curl saw it.
    let client = one(&spans, "client", "GET /items/42");
    assert_eq!(client.service_name, "curl");
    assert_eq!(
        client.attr("url.full").as_deref(),
        Some(format!("http://127.0.0.1:{port}/items/42?token=REDACTED").as_str())
    );
    assert_eq!(client.int_attr("server.port"), Some(port as i64));
    let client_missing = one(&spans, "client", "GET /missing");
    assert!(
        client_missing.is_error(),
        "a 404 is an error for the client"
    );
    let client_slow = one(&spans, "client", "GET /slow");
    assert!(client_slow.duration() >= slow.duration());
    for s in &spans {
        assert!(
            s.duration() < Duration::from_secs(10),
            "{} lasts {:?}",
            s.span.name,
            s.duration()
        );
    }
}

#[test]
fn python_http_server_and_curl_over_otlp_grpc() {
    require_capture!();
    python_service_and_curl(Transport::Grpc);
}

#[test]
fn python_http_server_and_curl_over_otlp_http() {
    require_capture!();
    python_service_and_curl(Transport::HttpProtobuf);
}

/// nginx with a generated config, prefork (master + worker), selected by name.
#[test]
fn nginx_static_files_and_errors() {
    require_capture!();
    let _serial = serial();
    let site = servers::NginxSite::prepare(
        "nginx",
        servers::Listen::Http,
        "location = /health { return 200 \"ok\\n\"; } location = /broken { return 502; }",
    );
    let port = site.port;
    let spans = site.traced(
        |base| {
            curl(&[
                "-o",
                "/dev/null",
                &format!("{base}/index.html"),
                "-o",
                "/dev/null",
                &format!("{base}/health"),
            ]);
            curl(&["-o", "/dev/null", &format!("{base}/nope.html")]);
            curl(&["-o", "/dev/null", &format!("{base}/broken")]);
            curl(&["-I", &format!("{base}/index.html")]);
        },
        5,
    );
    for s in &spans {
        assert_eq!(s.service_name, "nginx");
        assert_eq!(s.kind_name(), "server");
    }
    let index = one(&spans, "server", "GET /index.html");
    assert_eq!(index.int_attr("http.response.status_code"), Some(200));
    assert_eq!(index.int_attr("server.port"), Some(port as i64));
    assert_eq!(
        one(&spans, "server", "GET /health").int_attr("http.response.status_code"),
        Some(200)
    );
    assert_eq!(
        one(&spans, "server", "GET /nope.html").int_attr("http.response.status_code"),
        Some(404)
    );
    let broken = one(&spans, "server", "GET /broken");
    assert_eq!(broken.int_attr("http.response.status_code"), Some(502));
    assert!(broken.is_error());
    assert_eq!(
        one(&spans, "server", "HEAD /index.html").int_attr("http.response.status_code"),
        Some(200)
    );
}

/// Every process traced, exporting over HTTP to a receiver in this very process: the receiver's
/// side of the agent's export connection must never become a span.
#[test]
fn export_traffic_is_never_traced() {
    require_capture!();
    let _serial = serial();
    let receiver = OtlpReceiver::start(Transport::HttpProtobuf).expect("receiver");
    let (_server, port) = python_service::<&str>("shop.py", &[]);
    let agent = Agent::exporting_to(&receiver, &[]);
    for i in 0..5 {
        curl(&[
            "-o",
            "/dev/null",
            &format!("http://127.0.0.1:{port}/items/{i}"),
        ]);
        std::thread::sleep(Duration::from_millis(600));
    }
    let spans = receiver.wait_for(Duration::from_secs(20), |s| {
        s.iter().filter(|s| s.span.name == "GET /items/4").count() >= 2
    });
    agent.stop();
    assert!(
        !find(&spans, "server", "GET /items/4").is_empty(),
        "workload traced"
    );
    let export_spans: Vec<_> = spans
        .iter()
        .filter(|s| s.attr("url.path").as_deref() == Some("/v1/traces"))
        .map(|s| (s.service_name.clone(), s.kind_name(), s.span.name.clone()))
        .collect();
    assert!(
        export_spans.is_empty(),
        "export traffic was traced: {export_spans:?}"
    );
}

/// A keep-alive connection opened before the agent started: later requests on it are decoded,
/// with addresses and roles recovered from /proc.
#[test]
fn connection_opened_before_the_agent() {
    require_capture!();
    let _serial = serial();
    let receiver = OtlpReceiver::start(Transport::Grpc).expect("receiver");
    let (_server, port) = python_service::<&str>("shop.py", &[]);
    let mut client = KeepaliveClient::connect(port);
    client.ask("/items/before");
    let agent = Agent::exporting_to(
        &receiver,
        &["--exe", "shop.py", "--exe", "keepalive_client.py"],
    );
    client.ask("/items/after");
    client.ask("/items/again");
    client.ask("/items/third");
    client.close();
    let spans = receiver.wait_for(Duration::from_secs(20), |s| s.len() >= 6);
    agent.stop();
    assert!(find(&spans, "server", "GET /items/before").is_empty());
    // The server was already blocked in read() when the probes were attached: that read is
    // seen too, since the data path needs nothing from a syscall's entry.
    for path in ["/items/after", "/items/again", "/items/third"] {
        let server = one(&spans, "server", &format!("GET {path}"));
        assert_eq!(server.int_attr("server.port"), Some(port as i64));
        assert_eq!(server.attr("client.address").as_deref(), Some("127.0.0.1"));
        let client = one(&spans, "client", &format!("GET {path}"));
        assert_eq!(client.service_name, "keepalive_client");
        assert_eq!(client.int_attr("network.peer.port"), Some(port as i64));
        // Both ends seen on this host: one trace.
        assert_eq!(server.parent_span_id_hex(), client.span_id_hex());
    }
}

/// Stopped in the middle of a load, the agent reads every record the kernel says it delivered
/// (the kernel's count is taken first, then the ring is drained), so nothing counted as
/// delivered goes unread.
#[test]
fn a_stop_under_load_reads_every_record_the_kernel_delivered() {
    require_capture!();
    let _serial = serial();
    let receiver = OtlpReceiver::start(Transport::Grpc).expect("receiver");
    let (_server, port) = python_service::<&str>("shop.py", &[]);
    let stats_file = StatsFile::new("stop-under-load");
    let agent = Agent::exporting_to(
        &receiver,
        &["--exe", "shop.py", "--stats-file", stats_file.path()],
    );
    let running = Arc::new(AtomicBool::new(true));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let running = running.clone();
            std::thread::spawn(move || {
                let mut client = KeepaliveClient::connect(port);
                while running.load(Ordering::Relaxed) {
                    client.ask("/items/1");
                }
                client.close();
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    agent.stop();
    running.store(false, Ordering::Relaxed);
    for client in clients {
        client.join().unwrap();
    }
    let stats = stats_file.read();
    let delivered = stats["kernel"]["data_events"].as_u64().unwrap();
    let read = stats["streams"]["data_events_read"].as_u64().unwrap();
    assert!(delivered > 100, "the load ran: {stats:#}");
    assert!(
        read >= delivered,
        "read {read} of {delivered} records the kernel delivered: {stats:#}"
    );
}

/// Once a keep-alive connection's responses have shown that their heads alone frame them, the
/// kernel copies only a prefix of each response syscall, on both ends: large responses still
/// become the right spans, and the stats count the copies cut short.
#[test]
fn large_keepalive_responses_are_copied_only_as_far_as_their_heads() {
    require_capture!();
    let _serial = serial();
    let receiver = OtlpReceiver::start(Transport::Grpc).expect("receiver");
    let (_server, port) = python_service::<&str>("shop.py", &[]);
    let stats_file = StatsFile::new("capped");
    let agent = Agent::exporting_to(
        &receiver,
        &[
            "--exe",
            "shop.py",
            "--exe",
            "keepalive_client.py",
            "--stats-file",
            stats_file.path(),
        ],
    );
    let mut client = KeepaliveClient::connect(port);
    let mut ask = |path: &str| {
        client.ask(path);
        // Time for the agent to read the exchange, as it would under steady traffic.
        std::thread::sleep(Duration::from_millis(60));
    };
    for _ in 0..10 {
        ask("/blob?kb=16");
    }
    // Other statuses and sizes after the copies were narrowed.
    ask("/fail");
    ask("/items/7");
    ask("/blob?kb=64");
    client.close();
    let spans = receiver.wait_for(Duration::from_secs(20), |s| s.len() >= 26);
    agent.stop();

    for kind in ["server", "client"] {
        let blobs = find(&spans, kind, "GET /blob");
        assert_eq!(blobs.len(), 11, "{kind}: {spans:#?}");
        assert!(
            blobs
                .iter()
                .all(|s| s.int_attr("http.response.status_code") == Some(200) && !s.is_error())
        );
        let fail = one(&spans, kind, "GET /fail");
        assert_eq!(fail.int_attr("http.response.status_code"), Some(500));
        assert!(fail.is_error());
        let item = one(&spans, kind, "GET /items/7");
        assert_eq!(item.int_attr("http.response.status_code"), Some(200));
    }
    let stats = stats_file.read();
    let capped = stats["kernel"]["payload_capped"].as_u64().unwrap_or(0);
    assert!(
        capped >= 4,
        "responses after the first few should be copied only in part: {stats:#}"
    );
    assert_eq!(
        stats["streams"]["resync_skips"].as_u64(),
        Some(0),
        "{stats:#}"
    );
}

/// nginx writes a response's head and body as two buffers of one `writev`. Once the copies are
/// narrowed, the kernel reads the head's buffer alone; the spans stay right.
#[test]
fn nginx_keepalive_responses_are_copied_as_far_as_their_heads() {
    require_capture!();
    let _serial = serial();
    let site = servers::NginxSite::prepare("nginx-capped", servers::Listen::Http, "");
    site.add_file("big.html", &"x".repeat(32 * 1024));
    let receiver = OtlpReceiver::start(Transport::Grpc).expect("receiver");
    let stats_file = StatsFile::new("nginx-capped");
    let agent = Agent::exporting_to(
        &receiver,
        &["--exe", "nginx", "--stats-file", stats_file.path()],
    );
    let _nginx = site.start();
    let mut client = KeepaliveClient::connect(site.port);
    for path in ["/big.html"; 8]
        .into_iter()
        .chain(["/missing.html", "/index.html"])
    {
        client.ask(path);
        // Time for the agent to read the exchange, as it would under steady traffic.
        std::thread::sleep(Duration::from_millis(60));
    }
    client.close();
    let port = Some(site.port as i64);
    let ours = |s: &&ReceivedSpan| s.int_attr("server.port") == port;
    let spans = receiver.wait_for(Duration::from_secs(20), |s| {
        s.iter().filter(ours).count() >= 10
    });
    agent.stop();
    let spans: Vec<ReceivedSpan> = spans.iter().filter(ours).cloned().collect();
    let big = find(&spans, "server", "GET /big.html");
    assert_eq!(big.len(), 8, "{spans:#?}");
    assert!(
        big.iter()
            .all(|s| s.int_attr("http.response.status_code") == Some(200))
    );
    let missing = one(&spans, "server", "GET /missing.html");
    assert_eq!(missing.int_attr("http.response.status_code"), Some(404));
    let index = one(&spans, "server", "GET /index.html");
    assert_eq!(index.int_attr("http.response.status_code"), Some(200));
    let stats = stats_file.read();
    let capped = stats["kernel"]["payload_capped"].as_u64().unwrap_or(0);
    assert!(
        capped >= 1,
        "later responses should be copied only in part: {stats:#}"
    );
    assert_eq!(
        stats["streams"]["resync_skips"].as_u64(),
        Some(0),
        "{stats:#}"
    );
}

/// No endpoint configured: finished traces are printed as trees.
#[test]
fn terminal_tree_without_backend() {
    require_capture!();
    let _serial = serial();
    let (_server, port) = python_service::<&str>("shop.py", &[]);
    let agent = Agent::start(&["--exe", "shop.py"], &[]);
    curl(&[
        "-o",
        "/dev/null",
        &format!("http://127.0.0.1:{port}/slow?ms=50"),
    ]);
    std::thread::sleep(Duration::from_millis(2500));
    let (stdout, _) = agent.stop();
    assert!(stdout.contains("[trace "), "no tree header in:\n{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.contains("GET /slow"))
        .unwrap_or_else(|| panic!("no GET /slow line in:\n{stdout}"));
    assert!(line.contains("shop") && line.contains("ms"), "{line}");
}

/// `--output json` prints one span per line; `--port` selects the process listening there (and
/// so leaves curl, a client only, untraced).
#[test]
fn json_lines_for_the_process_on_a_port() {
    require_capture!();
    let _serial = serial();
    let (_server, port) = python_service::<&str>("shop.py", &[]);
    let port_arg = port.to_string();
    let agent = Agent::start(&["--port", &port_arg, "--output", "json"], &[]);
    curl(&[
        "-o",
        "/dev/null",
        &format!("http://127.0.0.1:{port}/items/9"),
    ]);
    std::thread::sleep(Duration::from_millis(1500));
    let (stdout, _) = agent.stop();
    let spans: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert_eq!(
        spans.len(),
        1,
        "only the server on the port is traced:\n{stdout}"
    );
    let span = &spans[0];
    assert_eq!(span["name"], "GET /items/9", "{span}");
    assert_eq!(span["kind"], "server", "{span}");
    assert_eq!(span["service"], "shop", "{span}");
    assert_eq!(span["trace_id"].as_str().map(str::len), Some(32), "{span}");
}

/// `--pid` traces that process and no other, even one running the same program.
#[test]
fn pid_selects_one_process() {
    require_capture!();
    let _serial = serial();
    let (chosen, chosen_port) = python_service::<&str>("shop.py", &[]);
    let (_other, other_port) = python_service::<&str>("shop.py", &[]);
    let pid_arg = chosen.pid().to_string();
    let agent = Agent::start(&["--pid", &pid_arg, "--output", "json"], &[]);
    for port in [chosen_port, other_port] {
        curl(&[
            "-o",
            "/dev/null",
            &format!("http://127.0.0.1:{port}/items/{port}"),
        ]);
    }
    std::thread::sleep(Duration::from_millis(1500));
    let (stdout, _) = agent.stop();
    let names: Vec<String> = stdout
        .lines()
        .map(|l| {
            let span: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
            span["name"].as_str().unwrap_or_default().to_owned()
        })
        .collect();
    assert_eq!(
        names,
        vec![format!("GET /items/{chosen_port}")],
        "only process {pid_arg} is traced:\n{stdout}"
    );
}

/// A selected server that starts a thread per connection: its threads belong to its selection
/// and take no entries of their own in the kernel's table of selected processes. (They did: the
/// table, cleared only by process exits, filled up, and a thread's id reused as the pid of an
/// unrelated program selected that program.)
#[test]
fn a_thread_per_connection_server_adds_no_selected_processes() {
    require_capture!();
    let _serial = serial();
    const CONNECTIONS: usize = 200;
    let (_server, port) = python_service::<&str>("shop.py", &[]);
    let stats_file = StatsFile::new("thread-per-connection");
    let agent = Agent::start(
        &[
            "--exe",
            "shop.py",
            "--output",
            "json",
            "--stats-file",
            stats_file.path(),
        ],
        &[],
    );
    // One request per connection: ThreadingHTTPServer serves each on a thread of its own.
    for _ in 0..CONNECTIONS {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .write_all(b"GET /items/1 HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).unwrap();
        assert!(response.starts_with(b"HTTP/1.1 200"), "{response:?}");
    }
    std::thread::sleep(Duration::from_millis(1500));
    let (stdout, _) = agent.stop();
    assert_eq!(
        stdout.lines().count(),
        CONNECTIONS,
        "every request traced:\n{stdout}"
    );
    let stats = stats_file.read();
    let entries = stats["selection"]["kernel_table_entries"].as_u64();
    assert_eq!(
        entries,
        Some(1),
        "the server alone is selected, not its {CONNECTIONS} threads: {stats:#}"
    );
    // By default the data path runs as raw tracepoints wherever BTF locates the socket fields.
    let btf = std::path::Path::new(periscope::capture::probes::KERNEL_BTF);
    let raw = periscope::capture::kernel_btf::sock_offsets(btf).is_ok();
    let expected = if raw { "raw" } else { "records" };
    assert_eq!(stats["socket_probes"].as_str(), Some(expected));
}

/// IPv6: a server on `::1` and curl calling it, both traced. Addresses and ports come from the
/// kernel's view of IPv6 sockets, and the two ends make one trace.
#[test]
fn ipv6_loopback_server_and_client() {
    require_capture!();
    let _serial = serial();
    let Ok(probe) = TcpListener::bind("[::1]:0") else {
        eprintln!("SKIPPED: this machine has no IPv6 loopback address");
        return;
    };
    let port = probe.local_addr().unwrap().port();
    drop(probe);
    // Serves a listing of the workloads folder.
    let server = Program::spawn(
        Command::new("python3")
            .args(["-m", "http.server", &port.to_string(), "--bind", "::1"])
            .current_dir(workload(".")),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("::1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on [::1]:{port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let receiver = OtlpReceiver::start(Transport::Grpc).expect("receiver");
    let pid = server.pid().to_string();
    let agent = Agent::exporting_to(&receiver, &["--pid", &pid, "--exe", "curl"]);
    let url = format!("http://[::1]:{port}/");
    curl(&["-g", "-o", "/dev/null", &url]);
    let spans = receiver.wait_for(Duration::from_secs(20), |s| s.len() >= 2);
    agent.stop();

    let served = one(&spans, "server", "GET /");
    assert_eq!(served.int_attr("http.response.status_code"), Some(200));
    assert_eq!(served.int_attr("server.port"), Some(i64::from(port)));
    assert_eq!(served.attr("client.address").as_deref(), Some("::1"));
    assert_eq!(served.attr("network.peer.address").as_deref(), Some("::1"));
    let called = one(&spans, "client", "GET /");
    assert_eq!(called.attr("url.full").as_deref(), Some(url.as_str()));
    assert_eq!(called.attr("server.address").as_deref(), Some("::1"));
    assert_eq!(called.int_attr("server.port"), Some(i64::from(port)));
    assert_eq!(called.attr("network.peer.address").as_deref(), Some("::1"));
    assert_eq!(called.int_attr("network.peer.port"), Some(i64::from(port)));
    assert_eq!(served.trace_id_hex(), called.trace_id_hex());
    assert_eq!(served.parent_span_id_hex(), called.span_id_hex());
}

/// The data path on the `sock` tracepoints' records, the fallback for a kernel whose BTF does
/// not locate the socket fields the raw tracepoints read (forced here with `--socket-probes
/// records`): the same spans, from both sides of a keep-alive connection, and the stats name
/// the attachment that ran.
#[test]
fn data_path_on_the_tracepoint_records() {
    require_capture!();
    let _serial = serial();
    let receiver = OtlpReceiver::start(Transport::Grpc).expect("receiver");
    let (_server, port) = python_service::<&str>("shop.py", &[]);
    let stats_file = StatsFile::new("socket-probes-records");
    let agent = Agent::exporting_to(
        &receiver,
        &[
            "--exe",
            "shop.py",
            "--exe",
            "curl",
            "--socket-probes",
            "records",
            "--stats-file",
            stats_file.path(),
        ],
    );
    let base = format!("http://127.0.0.1:{port}");
    curl(&[
        "-o",
        "/dev/null",
        &format!("{base}/items/7"),
        "-o",
        "/dev/null",
        &format!("{base}/missing"),
    ]);
    let spans = receiver.wait_for(Duration::from_secs(20), |s| s.len() >= 4);
    agent.stop();
    let stats = stats_file.read();
    assert_eq!(stats["socket_probes"].as_str(), Some("records"));

    let item = one(&spans, "server", "GET /items/7");
    assert_eq!(item.int_attr("http.response.status_code"), Some(200));
    assert_eq!(item.int_attr("server.port"), Some(i64::from(port)));
    assert_eq!(item.attr("client.address").as_deref(), Some("127.0.0.1"));
    let missing = one(&spans, "server", "GET /missing");
    assert_eq!(missing.int_attr("http.response.status_code"), Some(404));
    let called = one(&spans, "client", "GET /items/7");
    assert_eq!(
        called.attr("url.full").as_deref(),
        Some(format!("{base}/items/7").as_str())
    );
    assert_eq!(item.trace_id_hex(), called.trace_id_hex());
    assert_eq!(item.parent_span_id_hex(), called.span_id_hex());
    let called_missing = one(&spans, "client", "GET /missing");
    assert!(called_missing.is_error(), "a 404 is a client error");
}

/// Client sockets enter the kernel's socket table only for selected processes: a client's
/// `connect()` is where the kernel still knows the process. (Server sides complete their
/// handshake in softirq, owner unknown, and are entered whoever owns them.)
#[test]
fn only_selected_clients_enter_the_socket_table() {
    require_capture!();
    let _serial = serial();
    const CONNECTIONS: u64 = 200;
    // One process: a listener, and connections to it made and closed one after another.
    let script = format!(
        "import socket\n\
         listener = socket.create_server(('127.0.0.1', 0))\n\
         for _ in range({CONNECTIONS}):\n    \
             client = socket.create_connection(listener.getsockname())\n    \
             server, _ = listener.accept()\n    \
             client.close()\n    \
             server.close()\n"
    );
    let entered_with = |selection: &str| {
        let receiver = OtlpReceiver::start(Transport::Grpc).expect("receiver");
        let stats_file = StatsFile::new("socket-table");
        let agent = Agent::exporting_to(
            &receiver,
            &["--exe", selection, "--stats-file", stats_file.path()],
        );
        let status = Command::new("python3").args(["-c", &script]).status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "the connection loop failed"
        );
        agent.stop();
        stats_file.read()["kernel"]["sockets_entered"]
            .as_u64()
            .expect("sockets_entered in the stats")
    };
    // A few more connections of the host (the agent's own export, whatever else runs) may
    // fall in either count.
    let unselected = entered_with("no-such-program");
    assert!(
        (CONNECTIONS..CONNECTIONS + 50).contains(&unselected),
        "outside the selection, only the {CONNECTIONS} server sides are entered: {unselected}"
    );
    let selected = entered_with("python3");
    assert!(
        selected >= 2 * CONNECTIONS,
        "selected, both sides of {CONNECTIONS} connections are entered: {selected}"
    );
}

/// A request peeked at (MSG_PEEK) and then read is one request, not two. Bytes moved by a
/// syscall the agent does not decode (splice) are counted, not silently lost.
#[test]
fn peeked_reads_spliced_writes_and_bodies_ended_by_close() {
    require_capture!();
    let _serial = serial();
    let receiver = OtlpReceiver::start(Transport::Grpc).expect("receiver");
    let (_server, port) = python_service::<&str>("odd_io_server.py", &[]);
    let stats_file = StatsFile::new("odd-io");
    let agent = Agent::exporting_to(
        &receiver,
        &[
            "--exe",
            "odd_io_server.py",
            "--stats-file",
            stats_file.path(),
        ],
    );
    for path in ["/peek", "/splice", "/until-close"] {
        let body = curl(&[&format!("http://127.0.0.1:{port}{path}")]);
        assert_eq!(body.trim(), path);
    }
    // A body framed by the end of the connection ends only when the kernel reports the close:
    // the span must come while the agent runs, not from the flush at its shutdown.
    let is_until_close = |s: &ReceivedSpan| s.span.name == "GET /until-close";
    let closed_in_time = receiver
        .wait_for(Duration::from_secs(20), |s| s.iter().any(is_until_close))
        .iter()
        .any(is_until_close);
    std::thread::sleep(Duration::from_millis(1000));
    agent.stop();
    assert!(
        closed_in_time,
        "no span for the response that ended with its connection while the agent ran"
    );
    let spans = receiver.spans();
    let peek = one(&spans, "server", "GET /peek");
    assert_eq!(peek.int_attr("http.response.status_code"), Some(200));
    let until_close = one(&spans, "server", "GET /until-close");
    assert_eq!(until_close.int_attr("http.response.status_code"), Some(200));
    let stats = stats_file.read();
    let unwatched = stats["kernel"]["unwatched_socket_io"].as_u64();
    assert!(
        unwatched.is_some_and(|n| n >= 1),
        "the spliced response should be counted: {stats:#}"
    );
}

/// Scheduling policy of each thread of `pid`, by thread name (field 41 of its stat line).
fn thread_policies(pid: u32) -> Vec<(String, i32)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("task dir") {
        let Ok(stat) = std::fs::read_to_string(task.expect("task").path().join("stat")) else {
            continue;
        };
        let name = stat[stat.find('(').unwrap() + 1..stat.rfind(')').unwrap()].to_owned();
        let policy = stat[stat.rfind(')').unwrap() + 2..]
            .split(' ')
            .nth(38)
            .and_then(|p| p.parse().ok())
            .unwrap_or(-1);
        out.push((name, policy));
    }
    out
}

/// A backend that refuses every connection: the agent's queue stays bounded, every span it
/// cannot send is counted as dropped, the full queue makes it stop stepping aside for
/// the traced programs (it is behind), and it still stops promptly with exit status 0.
#[test]
fn dead_backend_bounded_queue_counted_drops() {
    require_capture!();
    let _serial = serial();
    let (_server, port) = python_service::<&str>("shop.py", &[]);
    // Nothing listens there: bound and closed at once.
    let dead = format!("http://127.0.0.1:{}", common::free_port());
    let stats_file = StatsFile::new("dead-backend");
    let agent = Agent::start(
        &[
            "--exe",
            "shop.py",
            "--queue-size",
            "4",
            "--stats-file",
            stats_file.path(),
        ],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &dead),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "1000"),
        ],
    );
    let clients: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                let mut client = KeepaliveClient::connect(port);
                for i in 0..60 {
                    client.ask(&format!("/items/{i}"));
                }
                client.close();
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
    std::thread::sleep(Duration::from_millis(500));
    let t0 = Instant::now();
    let (_, stderr) = agent.stop();
    assert!(
        t0.elapsed() < Duration::from_secs(15),
        "stopping took {:?}: {stderr}",
        t0.elapsed()
    );
    let stats = stats_file.read();
    let export = &stats["export"];
    let n = |key: &str| {
        export[key]
            .as_u64()
            .unwrap_or_else(|| panic!("{key}: {stats:#}"))
    };
    assert!(n("submitted") >= 240, "{stats:#}");
    assert_eq!(
        n("exported"),
        0,
        "nothing reached a dead backend: {stats:#}"
    );
    assert_eq!(
        n("dropped_queue_full") + n("dropped_export_failed"),
        n("submitted"),
        "every span is counted as lost: {stats:#}"
    );
    assert!(
        n("dropped_queue_full") > 0,
        "the queue stayed bounded: {stats:#}"
    );
    assert!(
        stats["cpu_priority"]["raised"].as_u64().unwrap_or(0) >= 1,
        "a full queue is falling behind: {stats:#}"
    );
}

/// Each `--cpu-priority` mode delivers every span. By default (`yield`) every thread stays at
/// normal priority, with no governor thread, and the stats report how often the agent stopped
/// stepping aside; under `idle` the capture and export threads run under SCHED_IDLE and the
/// governor that raises them when they fall behind stays at normal priority; `normal` leaves
/// every thread alone and reports nothing.
#[test]
fn agent_threads_yield_the_cpu_and_spans_still_arrive() {
    require_capture!();
    let _serial = serial();
    let receiver = OtlpReceiver::start(Transport::Grpc).expect("receiver");
    let (_server, port) = python_service::<&str>("shop.py", &[]);
    for mode in ["yield", "idle", "normal"] {
        receiver.clear();
        let stats_file = StatsFile::new(&format!("cpu-priority-{mode}"));
        let mut all = vec!["--exe", "shop.py", "--stats-file", stats_file.path()];
        if mode != "yield" {
            all.extend_from_slice(&["--cpu-priority", mode]);
        }
        let agent = Agent::exporting_to(&receiver, &all);
        // A thread names itself once it runs: give the governor a moment to.
        let expected: &[&str] = if mode == "idle" {
            &["periscope-expor", "periscope-sched"]
        } else {
            &["periscope-expor"]
        };
        let named = |policies: &[(String, i32)]| {
            expected
                .iter()
                .all(|name| policies.iter().any(|(n, _)| n == name))
        };
        let mut policies = thread_policies(agent.pid());
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while !named(&policies) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            policies = thread_policies(agent.pid());
        }
        let policy = |name: &str| {
            policies
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, p)| *p)
                .unwrap_or_else(|| panic!("no thread {name}: {policies:?}"))
        };
        const SCHED_OTHER: i32 = 0;
        const SCHED_IDLE: i32 = 5;
        if mode == "idle" {
            assert_eq!(policy("periscope"), SCHED_IDLE, "capture: {policies:?}");
            assert_eq!(
                policy("periscope-expor"),
                SCHED_IDLE,
                "export: {policies:?}"
            );
            assert_eq!(
                policy("periscope-sched"),
                SCHED_OTHER,
                "governor: {policies:?}"
            );
        } else {
            assert!(
                policies.iter().all(|(_, p)| *p == SCHED_OTHER),
                "{mode}: {policies:?}"
            );
            assert!(
                policies.iter().all(|(n, _)| n != "periscope-sched"),
                "{mode}: no governor thread: {policies:?}"
            );
        }
        for i in 0..20 {
            curl(&[
                "-o",
                "/dev/null",
                &format!("http://127.0.0.1:{port}/items/{i}"),
            ]);
        }
        let spans = receiver.wait_for(Duration::from_secs(20), |s| s.len() >= 20);
        agent.stop();
        assert_eq!(spans.len(), 20, "{mode}: {spans:#?}");
        let stats = stats_file.read();
        let raised = &stats["cpu_priority"]["raised"];
        if mode == "normal" {
            assert!(raised.is_null(), "{mode}: {stats:#}");
        } else {
            // Twenty requests never fill half the ring or the queue.
            assert_eq!(raised.as_u64(), Some(0), "{mode}: {stats:#}");
        }
    }
}
