//! End to end: a Python service using ordinary drivers (psycopg, PyMySQL, redis-py) against real
//! PostgreSQL, MariaDB and Redis servers. Every database operation becomes a CLIENT span decoded
//! from the wire, inside the trace of the HTTP request that made it.

mod common;

use std::{process::Command, time::Duration};

use common::{Agent, curl, python_service, require_capture, serial, servers};
use periscope_tests::{OtlpReceiver, ReceivedSpan, Transport};

fn db_spans<'a>(spans: &'a [ReceivedSpan], system: &str) -> Vec<&'a ReceivedSpan> {
    spans
        .iter()
        .filter(|s| s.attr("db.system.name").as_deref() == Some(system))
        .collect()
}

fn named<'a>(spans: &[&'a ReceivedSpan], name: &str) -> Vec<&'a ReceivedSpan> {
    spans
        .iter()
        .copied()
        .filter(|s| s.span.name == name)
        .collect()
}

fn summary(spans: &[&ReceivedSpan]) -> Vec<String> {
    spans
        .iter()
        .map(|s| {
            format!(
                "{} | {} | {} | {}",
                s.service_name,
                s.span.name,
                s.attr("db.query.text").unwrap_or_default(),
                s.attr("db.response.status_code").unwrap_or_default()
            )
        })
        .collect()
}

/// Runs one route of the app with the agent watching, and returns every span received.
fn traced_route(
    route: &str,
    expect_db_spans: usize,
    system: &str,
    db_args: &[String],
) -> Vec<ReceivedSpan> {
    let receiver = OtlpReceiver::start(Transport::Grpc).expect("receiver");
    let (_app, port) = python_service("db_app.py", db_args);
    let agent = Agent::start(
        &[
            "--exe",
            "db_app.py",
            "--otlp-endpoint",
            &receiver.endpoint(),
            "--otlp-protocol",
            "grpc",
        ],
        &[],
    );
    let body = curl(&[&format!("http://127.0.0.1:{port}{route}")]);
    assert!(
        body.contains("\"result\""),
        "the app's database calls failed: {body}"
    );
    let spans = receiver.wait_for(Duration::from_secs(20), |s| {
        s.iter().any(|s| s.span.name == format!("GET {route}"))
            && db_spans(s, system).len() >= expect_db_spans
    });
    agent.stop();
    spans
}

/// Every database span is a CLIENT child of the request's SERVER span, in its trace.
fn assert_inside_request(spans: &[ReceivedSpan], route: &str, db: &[&ReceivedSpan]) {
    let server: Vec<_> = spans
        .iter()
        .filter(|s| s.kind_name() == "server" && s.span.name == format!("GET {route}"))
        .collect();
    assert_eq!(server.len(), 1, "one server span for {route}");
    for s in db {
        assert_eq!(s.kind_name(), "client", "{}", s.span.name);
        assert_eq!(s.service_name, "db_app");
        assert_eq!(
            s.trace_id_hex(),
            server[0].trace_id_hex(),
            "{} in the request's trace",
            s.span.name
        );
        assert_eq!(
            s.parent_span_id_hex(),
            server[0].span_id_hex(),
            "{} child of the request",
            s.span.name
        );
        assert!(s.duration() <= server[0].duration());
    }
}

#[test]
fn postgresql_simple_prepared_pipelined_and_failing_queries() {
    require_capture!();
    let _serial = serial();
    let pg = servers::postgres();
    let spans = traced_route(
        "/pg",
        9,
        "postgresql",
        &["--pg".into(), pg.port.to_string()],
    );
    let db = db_spans(&spans, "postgresql");
    let all = summary(&db);
    let inserts = named(&db, "INSERT items");
    assert_eq!(
        inserts.len(),
        4,
        "3 prepared executions + 1 duplicate: {all:#?}"
    );
    for s in &inserts {
        assert_eq!(
            s.attr("db.query.text").as_deref(),
            Some("INSERT INTO items (id, name) VALUES ($1, $2)"),
            "a statement prepared once still yields its text on every execution"
        );
        assert_eq!(s.attr("db.operation.name").as_deref(), Some("INSERT"));
        assert_eq!(s.attr("db.collection.name").as_deref(), Some("items"));
        assert_eq!(s.attr("db.namespace").as_deref(), Some("postgres"));
        assert_eq!(s.attr("server.address").as_deref(), Some("127.0.0.1"));
        assert_eq!(s.int_attr("server.port"), Some(pg.port as i64));
    }
    let failed: Vec<_> = inserts.iter().filter(|s| s.is_error()).collect();
    assert_eq!(failed.len(), 1, "{all:#?}");
    assert_eq!(
        failed[0].attr("db.response.status_code").as_deref(),
        Some("23505")
    );
    assert_eq!(named(&db, "CREATE items").len(), 1, "{all:#?}");
    assert_eq!(named(&db, "DELETE items").len(), 1, "{all:#?}");
    assert_eq!(
        named(&db, "UPDATE items").len(),
        1,
        "pipelined update: {all:#?}"
    );
    assert!(
        named(&db, "SELECT items").len() >= 2,
        "prepared select + pipelined count: {all:#?}"
    );
    assert_inside_request(&spans, "/pg", &db);
}

#[test]
fn mariadb_queries_database_switch_and_errors() {
    require_capture!();
    let _serial = serial();
    let mdb = servers::mariadb();
    let spans = traced_route(
        "/mysql",
        6,
        "mariadb",
        &["--mysql".into(), mdb.port.to_string()],
    );
    let db = db_spans(&spans, "mariadb");
    let all = summary(&db);
    let insert = named(&db, "INSERT orders");
    assert_eq!(insert.len(), 1, "{all:#?}");
    assert_eq!(
        insert[0].attr("db.query.text").as_deref(),
        Some("INSERT INTO orders (id, total) VALUES (?, ?)"),
        "literals are replaced by ?"
    );
    assert_eq!(
        insert[0].attr("db.namespace").as_deref(),
        Some("shop"),
        "after COM_INIT_DB"
    );
    assert_eq!(insert[0].int_attr("server.port"), Some(mdb.port as i64));
    assert_eq!(named(&db, "SELECT orders").len(), 1, "{all:#?}");
    let missing = named(&db, "SELECT missing_table");
    assert_eq!(missing.len(), 1, "{all:#?}");
    assert!(missing[0].is_error());
    assert_eq!(
        missing[0].attr("db.response.status_code").as_deref(),
        Some("1146")
    );
    assert_inside_request(&spans, "/mysql", &db);
}

#[test]
fn redis_commands_pipelines_and_errors() {
    require_capture!();
    let _serial = serial();
    let redis = servers::redis();
    let spans = traced_route(
        "/redis",
        7,
        "redis",
        &["--redis".into(), redis.port.to_string()],
    );
    let db = db_spans(&spans, "redis");
    let all = summary(&db);
    let set = named(&db, "SET");
    assert_eq!(set.len(), 1, "{all:#?}");
    assert_eq!(
        set[0].attr("db.query.text").as_deref(),
        Some("SET ? ?"),
        "arguments hidden"
    );
    assert_eq!(set[0].attr("db.operation.name").as_deref(), Some("SET"));
    // redis-py sends INCR as INCRBY.
    assert_eq!(
        named(&db, "INCRBY").len(),
        2,
        "pipelined commands, one span each: {all:#?}"
    );
    assert_eq!(named(&db, "GET").len(), 2, "{all:#?}");
    let lpush = named(&db, "LPUSH");
    assert_eq!(lpush.len(), 1, "{all:#?}");
    assert!(lpush[0].is_error());
    assert_eq!(
        lpush[0].attr("db.response.status_code").as_deref(),
        Some("WRONGTYPE")
    );
    assert_inside_request(&spans, "/redis", &db);
}

/// Command-line clients, not only drivers: psql, the mariadb client and redis-cli.
#[test]
fn command_line_clients() {
    require_capture!();
    let _serial = serial();
    let pg = servers::postgres();
    let mdb = servers::mariadb();
    let redis = servers::redis();
    let receiver = OtlpReceiver::start(Transport::HttpProtobuf).expect("receiver");
    let agent = Agent::exporting_to(
        &receiver,
        &["--exe", "psql", "--exe", "mariadb", "--exe", "redis-cli"],
    );
    let ok = |cmd: &mut Command| {
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ok(Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &pg.port.to_string(),
            "-U",
            "postgres",
            "-d",
            "postgres",
        ])
        .args(["-c", "SELECT 40 + 2 AS answer"])
        .env("PGSSLMODE", "disable"));
    ok(Command::new("mariadb")
        .args([
            "-h",
            "127.0.0.1",
            "-P",
            &mdb.port.to_string(),
            "-u",
            "root",
            "--skip-ssl",
        ])
        .args(["-e", "SELECT 'hello' AS greeting"]));
    ok(Command::new("redis-cli").args(["-p", &redis.port.to_string(), "PING"]));
    let spans = receiver.wait_for(Duration::from_secs(20), |s| {
        ["postgresql", "mariadb", "redis"]
            .iter()
            .all(|sys| !db_spans(s, sys).is_empty())
    });
    agent.stop();
    let pg_spans = db_spans(&spans, "postgresql");
    assert!(
        pg_spans.iter().any(|s| s.service_name == "psql"
            && s.attr("db.query.text").as_deref() == Some("SELECT ? + ? AS answer")),
        "{:#?}",
        summary(&pg_spans)
    );
    let my = db_spans(&spans, "mariadb");
    assert!(
        my.iter().any(|s| s.service_name == "mariadb"
            && s.attr("db.query.text").as_deref() == Some("SELECT ? AS greeting")),
        "{:#?}",
        summary(&my)
    );
    let rd = db_spans(&spans, "redis");
    assert!(
        rd.iter()
            .any(|s| s.service_name == "redis-cli" && s.span.name == "PING"),
        "{:#?}",
        summary(&rd)
    );
}
