//! Decoding well-formed MySQL conversations: handshake, commands, result sets, prepared
//! statements, splits at every byte. Helpers here are shared with `robustness_tests`.

use super::*;
use crate::protocols::replay;
use crate::protocols::replay::assert_splits_decode_the_same;
pub(super) use crate::protocols::replay::{Step, db, req, resp, with_gap};

pub(super) fn run(steps: &[Step]) -> Vec<Exchange> {
    replay::run(&Mysql, steps)
}

/// (operation, query text, status code) of every exchange.
pub(super) fn summary(exchanges: &[Exchange]) -> Vec<(String, String, String)> {
    exchanges
        .iter()
        .map(db)
        .map(|d| {
            (
                d.operation.clone().unwrap_or_default(),
                d.query_text.clone().unwrap_or_default(),
                d.status_code.clone().unwrap_or_default(),
            )
        })
        .collect()
}

pub(super) fn pkt(seq: u8, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![len as u8, (len >> 8) as u8, (len >> 16) as u8, seq];
    out.extend_from_slice(payload);
    out
}

pub(super) fn lenenc(n: u64) -> Vec<u8> {
    match n {
        0..=0xfa => vec![n as u8],
        0xfb..=0xffff => vec![0xfc, n as u8, (n >> 8) as u8],
        0x1_0000..=0xff_ffff => vec![0xfd, n as u8, (n >> 8) as u8, (n >> 16) as u8],
        _ => {
            let mut v = vec![0xfe];
            v.extend_from_slice(&n.to_le_bytes());
            v
        }
    }
}

pub(super) const BASE_CAPS: u32 =
    CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION | 0x0008_0000 | CLIENT_CONNECT_WITH_DB;

pub(super) fn greeting(version: &str, caps: u32) -> Vec<u8> {
    let mut p = vec![0x0a];
    p.extend_from_slice(version.as_bytes());
    p.push(0);
    p.extend_from_slice(&7u32.to_le_bytes());
    p.extend_from_slice(b"abcdefgh\0");
    p.extend_from_slice(&(caps as u16).to_le_bytes());
    p.push(45);
    p.extend_from_slice(&2u16.to_le_bytes());
    p.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
    p.push(21);
    p.extend_from_slice(&[0; 10]);
    p.extend_from_slice(b"ijklmnopqrst\0mysql_native_password\0");
    pkt(0, &p)
}

pub(super) fn handshake(caps: u32, db: Option<&str>) -> Vec<u8> {
    let caps = match db {
        Some(_) => caps | CLIENT_CONNECT_WITH_DB,
        None => caps & !CLIENT_CONNECT_WITH_DB,
    };
    let mut p = caps.to_le_bytes().to_vec();
    p.extend_from_slice(&(1u32 << 24).to_le_bytes());
    p.push(45);
    p.extend_from_slice(&[0; 23]);
    p.extend_from_slice(b"app\0");
    p.push(20);
    p.extend_from_slice(&[0x55; 20]);
    if let Some(db) = db {
        p.extend_from_slice(db.as_bytes());
        p.push(0);
    }
    p.extend_from_slice(b"mysql_native_password\0");
    pkt(1, &p)
}

pub(super) fn ok(seq: u8, affected: u64, status: u16) -> Vec<u8> {
    let mut p = vec![0x00];
    p.extend(lenenc(affected));
    p.push(0);
    p.extend_from_slice(&status.to_le_bytes());
    p.extend_from_slice(&0u16.to_le_bytes());
    pkt(seq, &p)
}

/// The OK packet that ends a result set under `CLIENT_DEPRECATE_EOF`.
pub(super) fn ok_eof(seq: u8, status: u16) -> Vec<u8> {
    let mut p = vec![0xfe, 0, 0];
    p.extend_from_slice(&status.to_le_bytes());
    p.extend_from_slice(&0u16.to_le_bytes());
    pkt(seq, &p)
}

pub(super) fn err(seq: u8, code: u16, message: &str) -> Vec<u8> {
    let mut p = vec![0xff];
    p.extend_from_slice(&code.to_le_bytes());
    p.extend_from_slice(b"#42S02");
    p.extend_from_slice(message.as_bytes());
    pkt(seq, &p)
}

pub(super) fn eof(seq: u8, status: u16) -> Vec<u8> {
    let mut p = vec![0xfe, 0, 0];
    p.extend_from_slice(&status.to_le_bytes());
    pkt(seq, &p)
}

pub(super) fn column(seq: u8, name: &str) -> Vec<u8> {
    let mut p = Vec::new();
    for part in ["def", "shop", "items", "items", name, name] {
        p.extend(lenenc(part.len() as u64));
        p.extend_from_slice(part.as_bytes());
    }
    p.push(0x0c);
    p.extend_from_slice(&[45, 0, 0, 1, 0, 0, 0xfd, 0, 0, 0, 0, 0]);
    pkt(seq, &p)
}

pub(super) fn text_row(seq: u8, values: &[&str]) -> Vec<u8> {
    let mut p = Vec::new();
    for v in values {
        p.extend(lenenc(v.len() as u64));
        p.extend_from_slice(v.as_bytes());
    }
    pkt(seq, &p)
}

pub(super) fn command(code: u8, body: &[u8]) -> Vec<u8> {
    let mut p = vec![code];
    p.extend_from_slice(body);
    pkt(0, &p)
}

pub(super) fn query(text: &str) -> Vec<u8> {
    command(COM_QUERY, text.as_bytes())
}

/// A result set starting at sequence id `seq`: column count, definitions, rows, terminator.
pub(super) fn result_set(seq: u8, columns: usize, rows: usize, deprecate_eof: bool) -> Vec<u8> {
    result_set_with_status(seq, columns, rows, deprecate_eof, 0x0002)
}

pub(super) fn result_set_with_status(
    mut seq: u8,
    columns: usize,
    rows: usize,
    deprecate_eof: bool,
    status: u16,
) -> Vec<u8> {
    let mut next = || {
        let s = seq;
        seq = seq.wrapping_add(1);
        s
    };
    let mut out = pkt(next(), &lenenc(columns as u64));
    for c in 0..columns {
        out.extend(column(next(), &format!("c{c}")));
    }
    if !deprecate_eof {
        out.extend(eof(next(), 0x0002));
    }
    for r in 0..rows {
        let values: Vec<String> = (0..columns).map(|c| format!("{r}-{c}")).collect();
        let values: Vec<&str> = values.iter().map(String::as_str).collect();
        out.extend(text_row(next(), &values));
    }
    if deprecate_eof {
        out.extend(ok_eof(next(), status));
    } else {
        out.extend(eof(next(), status));
    }
    out
}

/// Greeting, handshake response with database `shop`, OK.
pub(super) fn connect(version: &str, client_caps: u32) -> Vec<Step> {
    vec![
        resp(greeting(version, 0xffff_ffff)),
        req(handshake(client_caps, Some("shop"))),
        resp(ok(2, 0, 2)),
    ]
}

pub(super) fn prepare_ok(
    seq: u8,
    id: u32,
    columns: u16,
    params: u16,
    deprecate_eof: bool,
) -> Vec<u8> {
    let mut p = vec![0x00];
    p.extend_from_slice(&id.to_le_bytes());
    p.extend_from_slice(&columns.to_le_bytes());
    p.extend_from_slice(&params.to_le_bytes());
    p.extend_from_slice(&[0, 0, 0]);
    let mut out = pkt(seq, &p);
    let mut seq = seq + 1;
    for (count, prefix) in [(params, "p"), (columns, "c")] {
        for i in 0..count {
            out.extend(column(seq, &format!("{prefix}{i}")));
            seq += 1;
        }
        if count > 0 && !deprecate_eof {
            out.extend(eof(seq, 2));
            seq += 1;
        }
    }
    out
}

pub(super) fn execute(id: u32) -> Vec<u8> {
    let mut body = id.to_le_bytes().to_vec();
    body.extend_from_slice(&[0, 1, 0, 0, 0, 0, 1, 8, 0]);
    body.extend_from_slice(&5u64.to_le_bytes());
    command(COM_STMT_EXECUTE, &body)
}

/// A binary-protocol result set: count, definitions, EOF, rows (0x00 header), EOF.
pub(super) fn binary_result(seq: u8, rows: usize) -> Vec<u8> {
    let mut out = pkt(seq, &[1]);
    out.extend(column(seq + 1, "id"));
    out.extend(eof(seq + 2, 2));
    let mut s = seq + 3;
    for r in 0..rows {
        out.extend(pkt(s, &[0, 0, r as u8, 0, 0, 0]));
        s += 1;
    }
    out.extend(eof(s, 2));
    out
}

// ---- detection ----

#[test]
fn detects_greetings_and_plain_commands() {
    assert!(Mysql.detect(Flow::Response, &greeting("8.0.36", 0xffff_ffff)));
    assert!(Mysql.detect(
        Flow::Response,
        &greeting("5.5.5-10.11.6-MariaDB-0+deb12u1", 0xffff_ffff)
    ));
    assert!(Mysql.detect(Flow::Request, &query("SELECT 1")));
    assert!(Mysql.detect(Flow::Request, &query("  /* hint */ select * from t")));
    assert!(Mysql.detect(Flow::Request, &command(COM_PING, b"")));
    // MySQL 8 query attributes: no parameters, one set.
    assert!(Mysql.detect(Flow::Request, &command(COM_QUERY, b"\x00\x01SELECT 1")));
    // The greeting is no request, a query no response.
    assert!(!Mysql.detect(Flow::Request, &greeting("8.0.36", 0xffff_ffff)));
    assert!(!Mysql.detect(Flow::Response, &query("SELECT 1")));
}

#[test]
fn rejects_other_protocols() {
    let others: &[&[u8]] = &[
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\n",
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n",
        b"PING\r\n",
        b"+PONG\r\n",
        // PostgreSQL startup, SSL request, simple query, and the server's R/S/Z messages.
        b"\x00\x00\x00\x08\x04\xd2\x16\x2f",
        b"\x00\x00\x00\x29\x00\x03\x00\x00user\x00postgres\x00database\x00db\x00\x00",
        b"Q\x00\x00\x00\x0dSELECT 1\x00",
        b"R\x00\x00\x00\x08\x00\x00\x00\x00S\x00\x00\x00\x16",
        // TLS client hello.
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"",
        b"\x03\x00\x00\x00\x03",
        // Binary junk after a plausible header.
        b"\x05\x00\x00\x00\x03\x00\xff\x10\x01",
    ];
    for bytes in others {
        for flow in [Flow::Request, Flow::Response] {
            assert!(!Mysql.detect(flow, bytes), "{flow} {bytes:?}");
        }
    }
    // A query whose declared length is shorter than the chunk (not a lone packet).
    let mut q = query("SELECT 1");
    q.extend_from_slice(b"trailing");
    assert!(!Mysql.detect(Flow::Request, &q));
}

// ---- handshake and text protocol ----

#[test]
fn query_after_handshake_carries_namespace_and_system() {
    let mut steps = connect("8.0.36", BASE_CAPS);
    steps.push(req(query("SELECT c0 FROM items")));
    steps.push(resp(result_set(1, 1, 3, false)));
    let out = run(&steps);
    assert_eq!(out.len(), 1);
    let d = db(&out[0]);
    assert_eq!(d.system, "mysql");
    assert_eq!(d.namespace.as_deref(), Some("shop"));
    assert_eq!(d.query_text.as_deref(), Some("SELECT c0 FROM items"));
    assert_eq!(d.rows, Some(3));
    assert!(!d.partial && d.status_code.is_none());
    assert_eq!(out[0].request_start_ns, 4000);
    assert_eq!(out[0].request_end_ns, 4500);
    assert_eq!(out[0].response_start_ns, Some(5000));
    assert_eq!(out[0].response_end_ns, Some(5500));
}

#[test]
fn mariadb_is_told_by_its_version_string() {
    let mut steps = connect("5.5.5-10.11.6-MariaDB-log", BASE_CAPS);
    steps.push(req(query("DO 1")));
    steps.push(resp(ok(1, 0, 2)));
    let out = run(&steps);
    assert_eq!(db(&out[0]).system, "mariadb");
    assert_eq!(db(&out[0]).rows, Some(0));
}

#[test]
fn ok_reports_affected_rows_and_err_the_error() {
    let mut steps = connect("8.0.36", BASE_CAPS);
    steps.push(req(query("UPDATE items SET a = 1")));
    steps.push(resp(ok(1, 300, 2)));
    steps.push(req(query("SELECT * FROM missing")));
    steps.push(resp(err(1, 1146, "Table 'shop.missing' doesn't exist")));
    let out = run(&steps);
    let texts_and_codes: Vec<_> = summary(&out).into_iter().map(|t| (t.1, t.2)).collect();
    assert_eq!(
        texts_and_codes,
        vec![
            ("UPDATE items SET a = 1".to_owned(), String::new()),
            ("SELECT * FROM missing".to_owned(), "1146".to_owned())
        ]
    );
    assert_eq!(db(&out[0]).rows, Some(300));
    let failed = db(&out[1]);
    assert_eq!(
        failed.error_message.as_deref(),
        Some("Table 'shop.missing' doesn't exist")
    );
    assert_eq!(failed.rows, None);
}

#[test]
fn err_without_sqlstate_keeps_the_whole_message() {
    let mut steps = connect("8.0.36", BASE_CAPS);
    steps.push(req(query("SELECT 1")));
    steps.push(resp(pkt(1, b"\xff\x15\x04Access denied")));
    let out = run(&steps);
    assert_eq!(db(&out[0]).status_code.as_deref(), Some("1045"));
    assert_eq!(db(&out[0]).error_message.as_deref(), Some("Access denied"));
}

#[test]
fn result_sets_with_and_without_deprecate_eof() {
    for deprecate in [false, true] {
        let caps = BASE_CAPS | if deprecate { CLIENT_DEPRECATE_EOF } else { 0 };
        let mut steps = connect("8.0.36", caps);
        steps.push(req(query("SELECT a, b FROM t")));
        steps.push(resp(result_set(1, 2, 4, deprecate)));
        steps.push(req(query("SELECT a FROM t WHERE 0")));
        steps.push(resp(result_set(1, 1, 0, deprecate)));
        steps.push(req(query("SELECT 1")));
        steps.push(resp(result_set(1, 1, 1, deprecate)));
        let out = run(&steps);
        let rows: Vec<_> = out.iter().map(|e| db(e).rows).collect();
        assert_eq!(
            rows,
            vec![Some(4), Some(0), Some(1)],
            "deprecate {deprecate}"
        );
        assert!(out.iter().all(|e| !db(e).partial));
    }
}

#[test]
fn more_results_keep_the_exchange_open() {
    const MORE: u16 = SERVER_MORE_RESULTS_EXISTS | 2;
    for deprecate in [false, true] {
        let caps = BASE_CAPS | if deprecate { CLIENT_DEPRECATE_EOF } else { 0 };
        let mut steps = connect("8.0.36", caps);
        steps.push(req(query("CALL p()")));
        // Packets of a result set: count, definitions, [EOF], rows, terminator.
        let packets = |columns: u8, rows: u8| 1 + columns + u8::from(!deprecate) + rows + 1;
        steps.push(resp(result_set_with_status(1, 1, 2, deprecate, MORE)));
        let next_seq = 1 + packets(1, 2);
        steps.push(resp(result_set_with_status(
            next_seq, 1, 3, deprecate, MORE,
        )));
        let last_seq = next_seq + packets(1, 3);
        steps.push(resp(ok(last_seq, 0, 2)));
        steps.push(req(query("SELECT 1")));
        steps.push(resp(result_set(1, 1, 1, deprecate)));
        let out = run(&steps);
        assert_eq!(out.len(), 2);
        assert_eq!(db(&out[0]).rows, Some(5));
        assert_eq!(out[0].response_start_ns, Some(5000));
        assert_eq!(out[0].response_end_ns, Some(7500));
        assert!(!db(&out[0]).partial && !db(&out[1]).partial);
    }
}

#[test]
fn init_db_use_and_session_tracking_set_the_namespace() {
    let caps = BASE_CAPS | CLIENT_SESSION_TRACK;
    let mut steps = connect("8.0.36", caps);
    steps.push(req(command(COM_INIT_DB, b"inventory")));
    steps.push(resp(ok(1, 0, 2)));
    steps.push(req(query("SELECT 1")));
    steps.push(resp(ok(1, 0, 2)));
    steps.push(req(query("use `my db`")));
    steps.push(resp(ok(1, 0, 2)));
    steps.push(req(command(COM_INIT_DB, b"nope")));
    steps.push(resp(err(1, 1049, "Unknown database 'nope'")));
    // A procedure switching schema, reported by session tracking.
    steps.push(req(query("CALL switch_schema()")));
    let mut p = vec![0x00, 0, 0];
    p.extend_from_slice(&(2 | SERVER_SESSION_STATE_CHANGED).to_le_bytes());
    p.extend_from_slice(&[0, 0, 0]); // warnings, empty info
    p.extend_from_slice(&[8, SESSION_TRACK_SCHEMA, 6, 5]);
    p.extend_from_slice(b"audit");
    steps.push(resp(pkt(1, &p)));
    steps.push(req(query("SELECT 2")));
    steps.push(resp(ok(1, 0, 2)));
    let out = run(&steps);
    let namespaces: Vec<_> = out
        .iter()
        .map(|e| db(e).namespace.clone().unwrap())
        .collect();
    assert_eq!(
        namespaces,
        vec!["inventory", "inventory", "my db", "my db", "audit", "audit"]
    );
    assert_eq!(db(&out[0]).operation.as_deref(), Some("USE"));
    assert_eq!(db(&out[0]).query_text, None);
    assert_eq!(db(&out[3]).status_code.as_deref(), Some("1049"));
}

#[test]
fn ping_quit_and_housekeeping() {
    let mut steps = connect("8.0.36", BASE_CAPS);
    steps.push(req(command(COM_PING, b"")));
    steps.push(resp(ok(1, 0, 2)));
    steps.push(req(command(0x1a, &5u32.to_le_bytes()))); // COM_STMT_RESET
    steps.push(resp(ok(1, 0, 2)));
    steps.push(req(command(0x1b, &[1, 0]))); // COM_SET_OPTION
    steps.push(resp(eof(1, 2)));
    steps.push(req(command(0x09, b""))); // COM_STATISTICS
    steps.push(resp(pkt(1, b"Uptime: 10  Threads: 1")));
    steps.push(req(command(COM_QUIT, b"")));
    let out = run(&steps);
    assert_eq!(out.len(), 1);
    assert_eq!(db(&out[0]).operation.as_deref(), Some("PING"));
    assert_eq!(db(&out[0]).rows, None);
}

#[test]
fn local_infile_waits_for_the_final_ok() {
    let mut steps = connect("8.0.36", BASE_CAPS);
    steps.push(req(query("LOAD DATA LOCAL INFILE 'f' INTO TABLE t")));
    steps.push(resp(pkt(1, b"\xfbf")));
    let mut file = pkt(2, b"1\tone\n2\ttwo\n");
    file.extend(pkt(3, b""));
    steps.push(req(file));
    steps.push(resp(ok(4, 2, 2)));
    steps.push(req(query("SELECT 1")));
    steps.push(resp(result_set(1, 1, 1, false)));
    let out = run(&steps);
    assert_eq!(out.len(), 2);
    assert_eq!(db(&out[0]).rows, Some(2));
    assert_eq!(out[0].response_end_ns, Some(7500));
    assert!(!db(&out[0]).partial && !db(&out[1]).partial);
}

#[test]
fn pipelined_queries_are_answered_in_order() {
    let mut steps = connect("8.0.36", BASE_CAPS);
    let mut both = query("SELECT 1");
    both.extend(query("SELECT 2"));
    steps.push(req(both));
    let mut answers = result_set(1, 1, 1, false);
    answers.extend(err(1, 1064, "syntax"));
    steps.push(resp(answers));
    let out = run(&steps);
    assert_eq!(out.len(), 2);
    assert_eq!(db(&out[0]).query_text.as_deref(), Some("SELECT 1"));
    assert_eq!(db(&out[0]).rows, Some(1));
    assert_eq!(db(&out[1]).query_text.as_deref(), Some("SELECT 2"));
    assert_eq!(db(&out[1]).status_code.as_deref(), Some("1064"));
}

#[test]
fn ssl_request_stops_decoding() {
    let mut ssl = (BASE_CAPS | CLIENT_SSL).to_le_bytes().to_vec();
    ssl.extend_from_slice(&(1u32 << 24).to_le_bytes());
    ssl.push(45);
    ssl.extend_from_slice(&[0; 23]);
    let out = run(&[
        resp(greeting("8.0.36", 0xffff_ffff)),
        req(pkt(1, &ssl)),
        req(b"\x16\x03\x01\x00\x50\x01\x00\x00\x4c\x03\x03"),
        resp(b"\x16\x03\x03\x00\x31\x02"),
        // Bytes that would look like a query in the clear.
        req(query("SELECT 1")),
        resp(ok(1, 0, 2)),
    ]);
    assert!(out.is_empty());
}

#[test]
fn compression_stops_decoding() {
    let mut steps = connect("8.0.36", BASE_CAPS | CLIENT_COMPRESS);
    steps.push(req(query("SELECT 1")));
    steps.push(resp(ok(1, 0, 2)));
    assert!(run(&steps).is_empty());
}

#[test]
fn authentication_round_trips_are_skipped() {
    let out = run(&[
        resp(greeting("8.0.36", 0xffff_ffff)),
        req(handshake(BASE_CAPS, None)),
        // Auth switch, the client's answer, "perform full authentication", the password, OK.
        resp(pkt(2, b"\xfecaching_sha2_password\0saltsaltsaltsaltsalt\0")),
        req(pkt(3, &[0x42; 32])),
        resp(pkt(4, b"\x01\x04")),
        req(pkt(5, b"secret\0")),
        resp(ok(6, 0, 2)),
        req(query("SELECT 1")),
        resp(result_set(1, 1, 1, false)),
    ]);
    assert_eq!(out.len(), 1);
    assert_eq!(db(&out[0]).namespace, None);
    assert_eq!(db(&out[0]).rows, Some(1));
}

#[test]
fn failed_authentication_yields_nothing() {
    let out = run(&[
        resp(greeting("8.0.36", 0xffff_ffff)),
        req(handshake(BASE_CAPS, Some("shop"))),
        resp(err(2, 1045, "Access denied")),
    ]);
    assert!(out.is_empty());
}

// ---- prepared statements ----

#[test]
fn statement_prepared_once_executed_many_times() {
    let mut steps = connect("8.0.36", BASE_CAPS);
    steps.push(req(command(
        COM_STMT_PREPARE,
        b"SELECT id FROM items WHERE id > ? AND id < ?",
    )));
    steps.push(resp(prepare_ok(1, 7, 1, 2, false)));
    for rows in [2, 0, 5] {
        steps.push(req(execute(7)));
        steps.push(resp(binary_result(1, rows)));
    }
    steps.push(req(command(COM_STMT_CLOSE, &7u32.to_le_bytes())));
    // Executing a closed statement: its text is gone.
    steps.push(req(execute(7)));
    steps.push(resp(err(1, 1243, "Unknown prepared statement handler")));
    let out = run(&steps);
    assert_eq!(out.len(), 4);
    for (e, rows) in out.iter().zip([2, 0, 5]) {
        let d = db(e);
        assert_eq!(
            d.query_text.as_deref(),
            Some("SELECT id FROM items WHERE id > ? AND id < ?")
        );
        assert_eq!(d.rows, Some(rows));
        assert!(!d.partial);
    }
    assert_eq!(db(&out[3]).query_text, None);
    assert_eq!(db(&out[3]).status_code.as_deref(), Some("1243"));
    assert!(db(&out[3]).partial);
}

#[test]
fn prepare_ok_with_deprecate_eof_and_without_definitions() {
    let caps = BASE_CAPS | CLIENT_DEPRECATE_EOF;
    let mut steps = connect("8.0.36", caps);
    steps.push(req(command(
        COM_STMT_PREPARE,
        b"SELECT a, b FROM t WHERE c = ?",
    )));
    steps.push(resp(prepare_ok(1, 1, 2, 1, true)));
    steps.push(req(command(COM_STMT_PREPARE, b"DO 1")));
    steps.push(resp(prepare_ok(1, 2, 0, 0, true)));
    steps.push(req(execute(1)));
    let mut result = pkt(1, &[2]);
    result.extend(column(2, "a"));
    result.extend(column(3, "b"));
    result.extend(pkt(4, &[0, 0, 1, 2]));
    result.extend(ok_eof(5, 2));
    steps.push(resp(result));
    steps.push(req(execute(2)));
    steps.push(resp(ok(1, 0, 2)));
    let out = run(&steps);
    assert_eq!(
        summary(&out).into_iter().map(|t| t.1).collect::<Vec<_>>(),
        vec!["SELECT a, b FROM t WHERE c = ?", "DO 1"]
    );
    assert_eq!(db(&out[0]).rows, Some(1));
    assert_eq!(db(&out[1]).rows, Some(0));
}

#[test]
fn failed_prepare_is_reported_successful_prepare_is_not() {
    let mut steps = connect("8.0.36", BASE_CAPS);
    steps.push(req(command(COM_STMT_PREPARE, b"SELECT * FROM nowhere")));
    steps.push(resp(err(1, 1146, "Table 'shop.nowhere' doesn't exist")));
    steps.push(req(command(COM_STMT_PREPARE, b"SELECT 1")));
    steps.push(resp(prepare_ok(1, 3, 1, 0, false)));
    let out = run(&steps);
    assert_eq!(out.len(), 1);
    assert_eq!(
        db(&out[0]).query_text.as_deref(),
        Some("SELECT * FROM nowhere")
    );
    assert_eq!(db(&out[0]).status_code.as_deref(), Some("1146"));
}

#[test]
fn mariadb_pipelined_prepare_execute_close_with_last_statement_id() {
    let mut steps = connect("5.5.5-10.6.12-MariaDB", BASE_CAPS);
    let mut burst = command(COM_STMT_PREPARE, b"INSERT INTO t VALUES (?)");
    burst.extend(execute(LAST_PREPARED_ID));
    burst.extend(command(COM_STMT_CLOSE, &LAST_PREPARED_ID.to_le_bytes()));
    steps.push(req(burst));
    let mut answers = prepare_ok(1, 9, 0, 1, false);
    answers.extend(ok(1, 1, 2));
    steps.push(resp(answers));
    let out = run(&steps);
    assert_eq!(out.len(), 1);
    assert_eq!(
        db(&out[0]).query_text.as_deref(),
        Some("INSERT INTO t VALUES (?)")
    );
    assert_eq!(db(&out[0]).rows, Some(1));
    assert!(!db(&out[0]).partial);
}

#[test]
fn cursor_execute_then_fetch() {
    let mut steps = connect("8.0.36", BASE_CAPS);
    steps.push(req(command(COM_STMT_PREPARE, b"SELECT id FROM t")));
    steps.push(resp(prepare_ok(1, 4, 1, 0, false)));
    steps.push(req(execute(4)));
    let mut opened = pkt(1, &[1]);
    opened.extend(column(2, "id"));
    opened.extend(eof(3, 2 | 0x0040));
    steps.push(resp(opened));
    let mut fetch = 4u32.to_le_bytes().to_vec();
    fetch.extend_from_slice(&100u32.to_le_bytes());
    steps.push(req(command(COM_STMT_FETCH, &fetch)));
    let mut rows = pkt(1, &[0, 0, 1, 0, 0, 0]);
    rows.extend(pkt(2, &[0, 0, 2, 0, 0, 0]));
    rows.extend(eof(3, 2 | 0x0080));
    steps.push(resp(rows));
    steps.push(req(query("SELECT 1")));
    steps.push(resp(ok(1, 0, 2)));
    let out = run(&steps);
    assert_eq!(out.len(), 2);
    assert_eq!(db(&out[0]).query_text.as_deref(), Some("SELECT id FROM t"));
    assert!(!db(&out[0]).partial && !db(&out[1]).partial);
}

// ---- variants ----

#[test]
fn query_attributes_are_skipped_to_reach_the_sql() {
    let caps = BASE_CAPS | CLIENT_QUERY_ATTRIBUTES;
    let mut steps = connect("8.0.36", caps);
    steps.push(req(command(COM_QUERY, b"\x00\x01SELECT 1")));
    steps.push(resp(ok(1, 0, 2)));
    // One string attribute: count, sets, null bitmap, bound flag, type+flag, name, value.
    steps.push(req(command(
        COM_QUERY,
        b"\x01\x01\x00\x01\xfe\x00\x02id\x03abcSELECT 2",
    )));
    steps.push(resp(ok(1, 0, 2)));
    let out = run(&steps);
    let texts: Vec<_> = out.iter().map(|e| db(e).query_text.clone()).collect();
    assert_eq!(
        texts,
        vec![Some("SELECT 1".to_owned()), Some("SELECT 2".to_owned())]
    );
}

#[test]
fn joined_late_without_capabilities() {
    // No handshake seen: both result-set endings must be understood.
    let mut steps = vec![
        req(query("SELECT a FROM t")),
        resp(result_set(1, 1, 2, false)),
    ];
    steps.push(req(query("SELECT b FROM t")));
    steps.push(resp(result_set(1, 1, 3, true)));
    steps.push(req(query("SELECT c FROM t WHERE 0")));
    steps.push(resp(result_set(1, 1, 0, true)));
    steps.push(req(command(COM_QUERY, b"\x00\x01SELECT 4")));
    steps.push(resp(ok(1, 0, 2)));
    steps.push(req(command(COM_STMT_PREPARE, b"SELECT ?")));
    steps.push(resp(prepare_ok(1, 1, 1, 1, false)));
    steps.push(req(execute(1)));
    steps.push(resp(binary_result(1, 1)));
    let out = run(&steps);
    let rows: Vec<_> = out.iter().map(|e| db(e).rows).collect();
    assert_eq!(rows, vec![Some(2), Some(3), Some(0), Some(0), Some(1)]);
    assert_eq!(db(&out[3]).query_text.as_deref(), Some("SELECT 4"));
    assert_eq!(db(&out[4]).query_text.as_deref(), Some("SELECT ?"));
    assert!(
        out.iter()
            .all(|e| !db(e).partial && db(e).system == "mysql")
    );
}

#[test]
fn mariadb_cached_metadata_skips_column_definitions() {
    let mut steps = connect("5.5.5-10.6.12-MariaDB", BASE_CAPS | CLIENT_DEPRECATE_EOF);
    steps.push(req(command(COM_STMT_PREPARE, b"SELECT a FROM t")));
    steps.push(resp(prepare_ok(1, 2, 1, 0, true)));
    steps.push(req(execute(2)));
    // Column count 1, "metadata follows" 0, one binary row, OK.
    let mut result = pkt(1, &[1, 0]);
    result.extend(pkt(2, &[0, 0, 7]));
    result.extend(ok_eof(3, 2));
    steps.push(resp(result));
    let out = run(&steps);
    assert_eq!(db(&out[0]).rows, Some(1));
    assert!(!db(&out[0]).partial);
}

#[test]
fn mariadb_progress_reports_are_not_answers() {
    let mut steps = connect("5.5.5-10.6.12-MariaDB", BASE_CAPS);
    steps.push(req(query("ALTER TABLE t ADD c INT")));
    steps.push(resp(pkt(
        1,
        b"\xff\xff\xff\x01\x01\x02\x00\x10\x27\x00\x00\x05stage",
    )));
    steps.push(resp(ok(2, 0, 2)));
    let out = run(&steps);
    assert_eq!(out.len(), 1);
    assert_eq!(db(&out[0]).status_code, None);
    assert_eq!(out[0].response_end_ns, Some(6500));
}

#[test]
fn change_user_switches_database_and_forgets_statements() {
    let mut steps = connect("8.0.36", BASE_CAPS);
    steps.push(req(command(COM_STMT_PREPARE, b"SELECT 1")));
    steps.push(resp(prepare_ok(1, 1, 1, 0, false)));
    let mut body = b"bob\0".to_vec();
    body.push(20);
    body.extend_from_slice(&[1; 20]);
    body.extend_from_slice(b"archive\0");
    steps.push(req(command(COM_CHANGE_USER, &body)));
    steps.push(resp(pkt(1, b"\xfemysql_native_password\0salt\0")));
    steps.push(req(pkt(2, &[2; 20])));
    steps.push(resp(ok(3, 0, 2)));
    steps.push(req(execute(1)));
    steps.push(resp(err(1, 1243, "Unknown prepared statement handler")));
    let out = run(&steps);
    assert_eq!(out.len(), 1);
    assert_eq!(db(&out[0]).namespace.as_deref(), Some("archive"));
    assert_eq!(db(&out[0]).query_text, None);
}

#[test]
fn long_query_text_is_bounded_without_being_partial() {
    let text = format!("SELECT '{}'", "é".repeat(MAX_QUERY_LEN));
    let mut steps = connect("8.0.36", BASE_CAPS);
    steps.push(req(query(&text)));
    steps.push(resp(ok(1, 0, 2)));
    let out = run(&steps);
    let kept = db(&out[0]).query_text.clone().unwrap();
    assert!(kept.len() <= MAX_QUERY_LEN && kept.len() > MAX_QUERY_LEN - 4);
    assert!(text.starts_with(&kept));
    assert!(!db(&out[0]).partial);
}

#[test]
fn continued_packets_are_joined() {
    // A 16 MiB query: a full packet (mostly uncaptured), then the rest in a continuation.
    let mut first = vec![0xff, 0xff, 0xff, 0, COM_QUERY];
    first.extend_from_slice(b"SELECT '");
    let mut steps = connect("8.0.36", BASE_CAPS);
    steps.push(with_gap(req(first), MAX_PHYSICAL - 1 - 8));
    steps.push(req(pkt(1, &[b'x'; 10])));
    steps.push(resp(ok(2, 0, 2)));
    let out = run(&steps);
    assert_eq!(out.len(), 1);
    assert!(
        db(&out[0])
            .query_text
            .as_deref()
            .unwrap()
            .starts_with("SELECT '")
    );
    assert_eq!(db(&out[0]).rows, Some(0));
}

/// A conversation touching most paths, fed whole and split at every byte.
fn mixed_conversation() -> Vec<Step> {
    let mut steps = connect("5.5.5-10.11.6-MariaDB", BASE_CAPS | CLIENT_SESSION_TRACK);
    steps.push(req(query("SELECT a, b FROM t")));
    steps.push(resp(result_set(1, 2, 3, false)));
    steps.push(req(command(COM_INIT_DB, b"other")));
    steps.push(resp(ok(1, 0, 2)));
    steps.push(req(command(COM_STMT_PREPARE, b"SELECT ? FROM t")));
    steps.push(resp(prepare_ok(1, 5, 1, 1, false)));
    steps.push(req(execute(5)));
    steps.push(resp(binary_result(1, 2)));
    steps.push(req(query("SELECT nope")));
    steps.push(resp(err(1, 1054, "Unknown column 'nope'")));
    steps.push(req(command(COM_PING, b"")));
    steps.push(resp(ok(1, 0, 2)));
    steps
}

#[test]
fn splits_at_every_byte_decode_the_same() {
    let whole = assert_splits_decode_the_same(&mixed_conversation(), run);
    assert_eq!(whole.len(), 5);
}
