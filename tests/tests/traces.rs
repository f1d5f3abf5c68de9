//! End to end: one incoming request through a chain of unmodified services (Python stdlib with
//! a thread pool and sequential calls, Node.js) is ONE trace with every parent link right.

mod common;

use std::{collections::BTreeMap, process::Command, time::Duration};

use common::{
    Agent, Program, curl, free_port, require_capture, serial, servers, wait_for_port, workload,
};
use periscope_tests::{OtlpReceiver, ReceivedSpan, Transport};

struct Chain {
    _services: Vec<Program>,
    _databases: (servers::Server, servers::Server),
    gateway: u16,
    ports: BTreeMap<&'static str, u16>,
}

/// gateway (pool fan-out) → auth, user; user → PostgreSQL, Redis, inventory (Node);
/// inventory → pricing.
fn start_chain() -> Chain {
    let pg = servers::postgres();
    let redis = servers::redis();
    let ports: BTreeMap<&str, u16> = ["gateway", "auth", "user", "inventory", "pricing"]
        .into_iter()
        .map(|s| (s, free_port()))
        .collect();
    let url = |svc: &str, path: &str| format!("http://127.0.0.1:{}{path}", ports[svc]);
    let python = |name: &str, args: Vec<String>| {
        let mut cmd = Command::new("python3");
        cmd.arg(workload("chain.py"))
            .arg(ports[name].to_string())
            .args(args)
            .env("OTEL_SERVICE_NAME", name);
        Program::spawn(&mut cmd)
    };
    let services = vec![
        python("pricing", vec![]),
        python("auth", vec![]),
        Program::spawn(
            Command::new("node")
                .arg(workload("inventory.js"))
                .arg(ports["inventory"].to_string())
                .arg(url("pricing", "/price/42"))
                .env("OTEL_SERVICE_NAME", "inventory"),
        ),
        python(
            "user",
            vec![
                "--mode".into(),
                "sequential".into(),
                "--pg".into(),
                pg.port.to_string(),
                "--redis".into(),
                redis.port.to_string(),
                url("inventory", "/stock/42"),
            ],
        ),
        python(
            "gateway",
            vec![
                "--mode".into(),
                "pool".into(),
                url("auth", "/check"),
                url("user", "/user/42"),
            ],
        ),
    ];
    for port in ports.values() {
        wait_for_port(*port);
    }
    Chain {
        _services: services,
        _databases: (pg, redis),
        gateway: ports["gateway"],
        ports,
    }
}

/// Finds the single span of a service and kind in one trace (and, for clients, the peer port).
fn pick<'a>(
    trace: &'a [&'a ReceivedSpan],
    service: &str,
    kind: &str,
    peer_port: Option<u16>,
) -> &'a ReceivedSpan {
    let found: Vec<_> = trace
        .iter()
        .filter(|s| s.service_name == service && s.kind_name() == kind)
        .filter(|s| peer_port.is_none_or(|p| s.int_attr("server.port") == Some(p as i64)))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one {kind} span of {service} (peer {peer_port:?}) expected in trace: {:#?}",
        trace
            .iter()
            .map(|s| (
                &s.service_name,
                s.kind_name(),
                &s.span.name,
                s.span_id_hex(),
                s.parent_span_id_hex()
            ))
            .collect::<Vec<_>>()
    );
    found[0]
}

fn assert_child(child: &ReceivedSpan, parent: &ReceivedSpan) {
    assert_eq!(
        child.parent_span_id_hex(),
        parent.span_id_hex(),
        "{} {} `{}` should be the child of {} {} `{}`",
        child.service_name,
        child.kind_name(),
        child.span.name,
        parent.service_name,
        parent.kind_name(),
        parent.span.name
    );
}

#[test]
fn chain_of_services_is_one_trace_per_request() {
    require_capture!();
    let _serial = serial();
    let receiver = OtlpReceiver::start(Transport::Grpc).expect("receiver");
    let chain = start_chain();
    let agent = Agent::start(
        &[
            "--exe",
            "chain.py",
            "--exe",
            "inventory.js",
            "--otlp-endpoint",
            &receiver.endpoint(),
            "--otlp-protocol",
            "grpc",
        ],
        &[],
    );
    const REQUESTS: usize = 3;
    // HTTP spans per request; the user service also queries PostgreSQL and Redis (and, on its
    // first request, sets its connections up: those spans count too, but are not checked).
    const HTTP_SPANS_PER_REQUEST: usize = 9;
    for i in 0..REQUESTS {
        curl(&[
            "-o",
            "/dev/null",
            &format!("http://127.0.0.1:{}/checkout/{i}", chain.gateway),
        ]);
    }
    let count =
        |s: &[ReceivedSpan], f: &dyn Fn(&ReceivedSpan) -> bool| s.iter().filter(|x| f(x)).count();
    let is_http = |s: &ReceivedSpan| s.attr("http.request.method").is_some();
    let is_query = |s: &ReceivedSpan| s.attr("db.operation.name").as_deref() == Some("SELECT");
    let is_get = |s: &ReceivedSpan| s.attr("db.operation.name").as_deref() == Some("GET");
    let spans = receiver.wait_for(Duration::from_secs(30), |s| {
        count(s, &is_http) >= REQUESTS * HTTP_SPANS_PER_REQUEST
            && count(s, &is_query) >= REQUESTS
            && count(s, &is_get) >= REQUESTS
    });
    agent.stop();

    let mut traces: BTreeMap<String, Vec<&ReceivedSpan>> = BTreeMap::new();
    for s in &spans {
        traces.entry(s.trace_id_hex()).or_default().push(s);
    }
    assert_eq!(
        traces.len(),
        REQUESTS,
        "one trace per incoming request; got {} traces of sizes {:?}",
        traces.len(),
        traces.values().map(Vec::len).collect::<Vec<_>>()
    );
    let p = &chain.ports;
    for trace in traces.values() {
        assert_eq!(
            trace.iter().filter(|s| is_http(s)).count(),
            HTTP_SPANS_PER_REQUEST,
            "{:#?}",
            trace
                .iter()
                .map(|s| (
                    &s.service_name,
                    s.kind_name(),
                    &s.span.name,
                    s.int_attr("http.response.status_code")
                ))
                .collect::<Vec<_>>()
        );
        let gateway = pick(trace, "gateway", "server", None);
        assert!(
            gateway.parent_span_id_hex().is_empty()
                || gateway.parent_span_id_hex() == "0000000000000000"
        );
        let to_auth = pick(trace, "gateway", "client", Some(p["auth"]));
        let to_user = pick(trace, "gateway", "client", Some(p["user"]));
        assert_child(to_auth, gateway);
        assert_child(to_user, gateway);
        let auth = pick(trace, "auth", "server", None);
        assert_child(auth, to_auth);
        let user = pick(trace, "user", "server", None);
        assert_child(user, to_user);
        let to_inventory = pick(trace, "user", "client", Some(p["inventory"]));
        assert_child(to_inventory, user);
        for (system, operation) in [("postgresql", "SELECT"), ("redis", "GET")] {
            let db: Vec<_> = trace
                .iter()
                .filter(|s| s.attr("db.system.name").as_deref() == Some(system))
                .collect();
            let calls: Vec<_> = db
                .iter()
                .filter(|s| s.attr("db.operation.name").as_deref() == Some(operation))
                .collect();
            assert_eq!(
                calls.len(),
                1,
                "one {system} {operation} per request; all database spans: {:?}",
                spans
                    .iter()
                    .filter(|s| s.attr("db.system.name").is_some())
                    .map(|s| (s.span.name.clone(), s.trace_id_hex()))
                    .collect::<Vec<_>>()
            );
            for s in &db {
                assert_eq!(s.service_name, "user");
                assert_child(s, user);
            }
        }
        let inventory = pick(trace, "inventory", "server", None);
        assert_child(inventory, to_inventory);
        let to_pricing = pick(trace, "inventory", "client", Some(p["pricing"]));
        assert_child(to_pricing, inventory);
        let pricing = pick(trace, "pricing", "server", None);
        assert_child(pricing, to_pricing);
        // Children lie within their parents.
        assert!(gateway.duration() >= to_user.duration());
        assert!(to_user.duration() >= user.duration());
    }
}
