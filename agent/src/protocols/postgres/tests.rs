//! Decoding well-formed PostgreSQL conversations: every message kind, extended-protocol
//! pairing, pipelining, errors, splits at every byte, detection. Helpers here are shared with
//! `robustness_tests`.

use super::*;
use crate::protocols::replay;
use crate::protocols::replay::assert_splits_decode_the_same;
use crate::protocols::replay::chunk;
pub(super) use crate::protocols::replay::{Step, db, req, resp, step_times, with_gap};

// ---- message builders ----

pub(super) fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    out.extend_from_slice(body);
    out
}

pub(super) fn cstr(text: &str) -> Vec<u8> {
    let mut out = text.as_bytes().to_vec();
    out.push(0);
    out
}

pub(super) fn untyped(code: u32, rest: &[u8]) -> Vec<u8> {
    let mut out = (rest.len() as u32 + 8).to_be_bytes().to_vec();
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(rest);
    out
}

pub(super) fn startup(params: &[(&str, &str)]) -> Vec<u8> {
    let mut rest = Vec::new();
    for (key, value) in params {
        rest.extend(cstr(key));
        rest.extend(cstr(value));
    }
    rest.push(0);
    untyped(196_608, &rest)
}

pub(super) fn ssl_request() -> Vec<u8> {
    untyped(SSL_REQUEST, &[])
}

pub(super) fn query(sql: &str) -> Vec<u8> {
    msg(b'Q', &cstr(sql))
}

pub(super) fn parse(name: &str, sql: &str) -> Vec<u8> {
    let mut body = cstr(name);
    body.extend(cstr(sql));
    body.extend_from_slice(&0u16.to_be_bytes());
    msg(b'P', &body)
}

pub(super) fn bind(portal: &str, statement: &str, params: &[&[u8]]) -> Vec<u8> {
    let mut body = cstr(portal);
    body.extend(cstr(statement));
    body.extend_from_slice(&0u16.to_be_bytes());
    body.extend_from_slice(&(params.len() as u16).to_be_bytes());
    for param in params {
        body.extend_from_slice(&(param.len() as u32).to_be_bytes());
        body.extend_from_slice(param);
    }
    body.extend_from_slice(&0u16.to_be_bytes());
    msg(b'B', &body)
}

pub(super) fn describe_portal(portal: &str) -> Vec<u8> {
    let mut body = vec![b'P'];
    body.extend(cstr(portal));
    msg(b'D', &body)
}

pub(super) fn describe_statement(name: &str) -> Vec<u8> {
    let mut body = vec![b'S'];
    body.extend(cstr(name));
    msg(b'D', &body)
}

pub(super) fn execute(portal: &str, max_rows: u32) -> Vec<u8> {
    let mut body = cstr(portal);
    body.extend_from_slice(&max_rows.to_be_bytes());
    msg(b'E', &body)
}

pub(super) fn close_statement(name: &str) -> Vec<u8> {
    let mut body = vec![b'S'];
    body.extend(cstr(name));
    msg(b'C', &body)
}

pub(super) fn sync() -> Vec<u8> {
    msg(b'S', &[])
}

pub(super) fn flush() -> Vec<u8> {
    msg(b'H', &[])
}

/// Parse (unnamed), Bind, Describe, Execute: one extended-protocol statement without Sync.
pub(super) fn pbde(sql: &str) -> Vec<u8> {
    [
        parse("", sql),
        bind("", "", &[b"1"]),
        describe_portal(""),
        execute("", 0),
    ]
    .concat()
}

pub(super) fn auth_ok() -> Vec<u8> {
    msg(b'R', &0u32.to_be_bytes())
}

pub(super) fn parameter_status(key: &str, value: &str) -> Vec<u8> {
    msg(b'S', &[cstr(key), cstr(value)].concat())
}

pub(super) fn backend_key() -> Vec<u8> {
    msg(b'K', &[0, 0, 0, 42, 1, 2, 3, 4])
}

pub(super) fn ready() -> Vec<u8> {
    msg(b'Z', b"I")
}

pub(super) fn row_description() -> Vec<u8> {
    let mut body = 1u16.to_be_bytes().to_vec();
    body.extend(cstr("id"));
    body.extend_from_slice(&[0; 18]);
    msg(b'T', &body)
}

pub(super) fn data_row(value: &str) -> Vec<u8> {
    let mut body = 1u16.to_be_bytes().to_vec();
    body.extend_from_slice(&(value.len() as u32).to_be_bytes());
    body.extend_from_slice(value.as_bytes());
    msg(b'D', &body)
}

pub(super) fn command_complete(tag: &str) -> Vec<u8> {
    msg(b'C', &cstr(tag))
}

pub(super) fn error(code: &str, message: &str) -> Vec<u8> {
    let mut body = Vec::new();
    for (field, value) in [
        (b'S', "ERROR"),
        (b'V', "ERROR"),
        (b'C', code),
        (b'M', message),
    ] {
        body.push(field);
        body.extend(cstr(value));
    }
    body.push(0);
    msg(b'E', &body)
}

pub(super) fn notice(message: &str) -> Vec<u8> {
    let mut body = vec![b'S'];
    body.extend(cstr("WARNING"));
    body.push(b'M');
    body.extend(cstr(message));
    body.push(0);
    msg(b'N', &body)
}

pub(super) fn parse_complete() -> Vec<u8> {
    msg(b'1', &[])
}

pub(super) fn bind_complete() -> Vec<u8> {
    msg(b'2', &[])
}

/// ParseComplete, BindComplete, RowDescription, rows, CommandComplete.
pub(super) fn answer_select(rows: &[&str]) -> Vec<u8> {
    let mut out = [parse_complete(), bind_complete(), row_description()].concat();
    for row in rows {
        out.extend(data_row(row));
    }
    out.extend(command_complete(&format!("SELECT {}", rows.len())));
    out
}

/// Startup with `database=shop` and the server's answer through ReadyForQuery.
pub(super) fn handshake() -> Vec<Step> {
    vec![
        req(startup(&[("user", "app"), ("database", "shop")])),
        resp(
            [
                auth_ok(),
                parameter_status("server_version", "15.18"),
                backend_key(),
                ready(),
            ]
            .concat(),
        ),
    ]
}

// ---- running ----

pub(super) fn run(steps: &[Step]) -> Vec<Exchange> {
    replay::run(&Postgres, steps)
}

pub(super) fn with_handshake(steps: Vec<Step>) -> Vec<Step> {
    let mut all = handshake();
    all.extend(steps);
    all
}

/// (operation, collection, query text) of each exchange.
pub(super) fn summary(exchanges: &[Exchange]) -> Vec<(Option<&str>, Option<&str>, Option<&str>)> {
    exchanges
        .iter()
        .map(|e| {
            let d = db(e);
            (
                d.operation.as_deref(),
                d.collection.as_deref(),
                d.query_text.as_deref(),
            )
        })
        .collect()
}

pub(super) fn times(e: &Exchange) -> (u64, u64, Option<u64>, Option<u64>) {
    (
        e.request_start_ns,
        e.request_end_ns,
        e.response_start_ns,
        e.response_end_ns,
    )
}

// ---- startup and negotiation ----

#[test]
fn startup_gives_the_namespace_and_a_simple_query_pairs_with_its_answer() {
    let out = run(&with_handshake(vec![
        req(query("SELECT id FROM users WHERE id < 3")),
        resp(
            [
                row_description(),
                data_row("1"),
                data_row("2"),
                command_complete("SELECT 2"),
            ]
            .concat(),
        ),
        resp(ready()),
    ]));
    assert_eq!(out.len(), 1);
    let d = db(&out[0]);
    assert_eq!(d.system, "postgresql");
    assert_eq!(d.operation.as_deref(), Some("SELECT"));
    assert_eq!(d.collection.as_deref(), Some("users"));
    assert_eq!(d.namespace.as_deref(), Some("shop"));
    assert_eq!(
        d.query_text.as_deref(),
        Some("SELECT id FROM users WHERE id < 3")
    );
    assert_eq!(d.rows, Some(2));
    assert_eq!((d.status_code.as_deref(), d.partial), (None, false));
    // A simple query ends at ReadyForQuery.
    assert_eq!(times(&out[0]), (3000, 3500, Some(4000), Some(5500)));
}

#[test]
fn namespace_defaults_to_the_user() {
    let out = run(&[
        req(startup(&[("user", "alice"), ("application_name", "psql")])),
        resp([auth_ok(), ready()].concat()),
        req(query("SELECT 1")),
        resp(
            [
                row_description(),
                data_row("1"),
                command_complete("SELECT 1"),
                ready(),
            ]
            .concat(),
        ),
    ]);
    assert_eq!(db(&out[0]).namespace.as_deref(), Some("alice"));
}

#[test]
fn refused_ssl_request_is_followed_by_a_normal_startup() {
    let out = run(&[
        req(ssl_request()),
        resp(b"N"),
        req(startup(&[("user", "app"), ("database", "shop")])),
        resp([auth_ok(), ready()].concat()),
        req(query("BEGIN")),
        resp([command_complete("BEGIN"), ready()].concat()),
    ]);
    assert_eq!(summary(&out), vec![(Some("BEGIN"), None, Some("BEGIN"))]);
    assert_eq!(db(&out[0]).namespace.as_deref(), Some("shop"));
    assert_eq!(db(&out[0]).rows, None);
}

#[test]
fn accepted_ssl_or_gss_encryption_silences_the_session() {
    for (code, answer) in [(SSL_REQUEST, b'S'), (GSSENC_REQUEST, b'G')] {
        let out = run(&[
            req(untyped(code, &[])),
            resp(vec![answer]),
            req(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 random tls bytes"),
            resp(b"\x16\x03\x03\x00\x7a\x02\x00\x00\x76\x03\x03 more"),
            req(query("SELECT 1")),
            resp([command_complete("SELECT 1"), ready()].concat()),
        ]);
        assert!(out.is_empty(), "{out:?}");
    }
}

#[test]
fn refused_gss_encryption_then_startup() {
    let out = run(&[
        req(untyped(GSSENC_REQUEST, &[])),
        resp(b"N"),
        req(ssl_request()),
        resp(b"N"),
        req(startup(&[("user", "u"), ("database", "d")])),
        resp([auth_ok(), ready()].concat()),
        req(query("SHOW TimeZone")),
        resp(
            [
                row_description(),
                data_row("UTC"),
                command_complete("SHOW"),
                ready(),
            ]
            .concat(),
        ),
    ]);
    assert_eq!(out.len(), 1);
    assert_eq!(db(&out[0]).operation.as_deref(), Some("SHOW"));
    // No count in the tag: the DataRows say how many rows came back.
    assert_eq!(db(&out[0]).rows, Some(1));
}

#[test]
fn cancel_request_and_authentication_messages_produce_nothing() {
    let cancel = untyped(CANCEL_REQUEST, &[0, 0, 0, 42, 1, 2, 3, 4]);
    assert!(run(&[req(cancel)]).is_empty());
    let out = run(&[
        req(startup(&[("user", "app"), ("database", "shop")])),
        resp(msg(
            b'R',
            &[0, 0, 0, 10, b'S', b'C', b'R', b'A', b'M', 0, 0],
        )),
        req(msg(b'p', b"SCRAM-SHA-256\0\0\0\0\x10n,,n=,r=abcdefgh")),
        resp(msg(b'R', b"\0\0\0\x0br=abcdefgh,s=salt,i=4096")),
        req(msg(b'p', b"c=biws,r=abcdefgh,p=proof")),
        resp(
            [
                msg(b'R', b"\0\0\0\x0cv=signature"),
                auth_ok(),
                backend_key(),
                ready(),
            ]
            .concat(),
        ),
    ]);
    assert!(out.is_empty());
}

#[test]
fn connection_joined_late_starts_with_a_typed_message() {
    let out = run(&[
        req(query("DELETE FROM sessions WHERE expired")),
        resp([command_complete("DELETE 7"), ready()].concat()),
    ]);
    assert_eq!(
        summary(&out),
        vec![(
            Some("DELETE"),
            Some("sessions"),
            Some("DELETE FROM sessions WHERE expired")
        )]
    );
    assert_eq!(db(&out[0]).namespace, None);
    assert_eq!(db(&out[0]).rows, Some(7));
}

// ---- simple query ----

#[test]
fn multi_statement_query_is_one_exchange_with_summed_rows() {
    let out = run(&with_handshake(vec![
        req(query(
            "BEGIN; UPDATE users SET name = 'x' WHERE id = 2; INSERT INTO log VALUES (1); COMMIT",
        )),
        resp(
            [
                command_complete("BEGIN"),
                command_complete("UPDATE 1"),
                command_complete("INSERT 0 3"),
                command_complete("COMMIT"),
                ready(),
            ]
            .concat(),
        ),
    ]));
    assert_eq!(out.len(), 1);
    assert_eq!(db(&out[0]).operation.as_deref(), Some("BEGIN"));
    assert_eq!(db(&out[0]).collection, None);
    assert_eq!(db(&out[0]).rows, Some(4));
}

#[test]
fn simple_query_error_gives_sqlstate_and_message() {
    let out = run(&with_handshake(vec![
        req(query("SELEC * FROM users")),
        resp(error("42601", "syntax error at or near \"SELEC\"")),
        resp(ready()),
        req(query("SELECT 1")),
        resp(
            [
                row_description(),
                data_row("1"),
                command_complete("SELECT 1"),
                ready(),
            ]
            .concat(),
        ),
    ]));
    assert_eq!(out.len(), 2);
    let d = db(&out[0]);
    assert_eq!(d.operation.as_deref(), Some("SELEC"));
    assert_eq!(d.status_code.as_deref(), Some("42601"));
    assert_eq!(
        d.error_message.as_deref(),
        Some("syntax error at or near \"SELEC\"")
    );
    assert_eq!(d.rows, None);
    assert_eq!(out[0].response_end_ns, Some(5500));
    assert_eq!(db(&out[1]).status_code, None);
}

#[test]
fn empty_query_is_an_exchange_without_operation() {
    let out = run(&with_handshake(vec![
        req(query("")),
        resp([msg(b'I', &[]), ready()].concat()),
    ]));
    assert_eq!(summary(&out), vec![(None, None, Some(""))]);
    assert!(!db(&out[0]).partial);
}

#[test]
fn asynchronous_messages_do_not_disturb_pairing() {
    let notification = msg(b'A', b"\0\0\0\x07chan\0payload\0");
    let out = run(&with_handshake(vec![
        // Idle: arrives before any request.
        resp(notification.clone()),
        req(query("COMMIT")),
        resp(
            [
                notice("there is no transaction in progress"),
                parameter_status("TimeZone", "UTC"),
                notification,
                command_complete("COMMIT"),
                ready(),
            ]
            .concat(),
        ),
    ]));
    assert_eq!(out.len(), 1);
    assert_eq!(db(&out[0]).operation.as_deref(), Some("COMMIT"));
    assert_eq!(db(&out[0]).status_code, None);
    assert_eq!(out[0].response_start_ns, Some(5000));
}

#[test]
fn copy_from_stdin_is_one_exchange_whose_request_lasts_through_copy_done() {
    let copy_in_response = msg(b'G', &[0, 0, 2, 0, 0, 0, 0]);
    let out = run(&with_handshake(vec![
        req(query("COPY users FROM STDIN")),
        resp(copy_in_response),
        req(msg(b'd', b"10\tc10@example.com\n")),
        req([msg(b'd', b"11\tc11@example.com\n"), msg(b'c', &[])].concat()),
        resp([command_complete("COPY 2"), ready()].concat()),
    ]));
    assert_eq!(
        summary(&out),
        vec![(Some("COPY"), Some("users"), Some("COPY users FROM STDIN"))]
    );
    assert_eq!(db(&out[0]).rows, Some(2));
    assert_eq!(times(&out[0]), (3000, 6500, Some(4000), Some(7500)));
}

#[test]
fn copy_to_stdout_is_skipped_by_length() {
    let mut answer = msg(b'H', &[0, 0, 1, 0, 0]);
    for i in 0..50 {
        answer.extend(msg(b'd', format!("{i}\tsome data\n").as_bytes()));
    }
    answer.extend(msg(b'c', &[]));
    answer.extend(command_complete("COPY 50"));
    answer.extend(ready());
    let out = run(&with_handshake(vec![
        req(query("COPY (SELECT * FROM users) TO STDOUT")),
        resp(answer),
    ]));
    assert_eq!(out.len(), 1);
    assert_eq!(db(&out[0]).operation.as_deref(), Some("COPY"));
    assert_eq!(db(&out[0]).collection, None);
    assert_eq!(db(&out[0]).rows, Some(50));
}

#[test]
fn function_call_produces_no_exchange() {
    let function_call = msg(b'F', &[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
    let out = run(&with_handshake(vec![
        req(function_call),
        resp([msg(b'V', &[0, 0, 0, 1, b'x']), ready()].concat()),
        req(query("SELECT 1")),
        resp([command_complete("SELECT 1"), ready()].concat()),
    ]));
    assert_eq!(out.len(), 1);
    assert_eq!(db(&out[0]).rows, Some(1));
}

// ---- extended query ----

#[test]
fn extended_execute_ends_at_its_command_complete() {
    let out = run(&with_handshake(vec![
        req([pbde("SELECT id FROM users WHERE id = $1"), sync()].concat()),
        resp(answer_select(&["1"])),
        resp(ready()),
    ]));
    assert_eq!(
        summary(&out),
        vec![(
            Some("SELECT"),
            Some("users"),
            Some("SELECT id FROM users WHERE id = $1")
        )]
    );
    assert_eq!(db(&out[0]).rows, Some(1));
    // Request from the Parse; response from ParseComplete to CommandComplete (not Z).
    assert_eq!(times(&out[0]), (3000, 3500, Some(4000), Some(4500)));
}

#[test]
fn named_statement_prepared_once_yields_its_text_at_every_execution() {
    let mut steps = with_handshake(vec![
        req([
            parse("s1", "UPDATE users SET n = n + 1 WHERE id = $1"),
            sync(),
        ]
        .concat()),
        resp([parse_complete(), ready()].concat()),
    ]);
    for id in ["1", "2", "3"] {
        steps.push(req([
            bind("", "s1", &[id.as_bytes()]),
            describe_portal(""),
            execute("", 0),
            sync(),
        ]
        .concat()));
        steps.push(resp(
            [
                bind_complete(),
                msg(b'n', &[]),
                command_complete("UPDATE 1"),
                ready(),
            ]
            .concat(),
        ));
    }
    let out = run(&steps);
    assert_eq!(out.len(), 3);
    for (i, e) in out.iter().enumerate() {
        assert_eq!(
            db(e).query_text.as_deref(),
            Some("UPDATE users SET n = n + 1 WHERE id = $1")
        );
        assert_eq!(db(e).rows, Some(1));
        assert!(!db(e).partial);
        // Each starts at its Bind.
        let k = 4 + 2 * i;
        assert_eq!(e.request_start_ns, step_times(k).0);
        assert_eq!(e.response_start_ns, Some(step_times(k + 1).0));
    }
}

#[test]
fn unnamed_statement_is_replaced_by_each_parse() {
    let out = run(&with_handshake(vec![
        req([pbde("SELECT 1"), sync()].concat()),
        resp([answer_select(&["1"]), ready()].concat()),
        req([
            parse("", "SELECT 2"),
            sync(),
            bind("", "", &[]),
            execute("", 0),
            sync(),
        ]
        .concat()),
        resp(
            [
                parse_complete(),
                ready(),
                bind_complete(),
                data_row("2"),
                command_complete("SELECT 1"),
                ready(),
            ]
            .concat(),
        ),
    ]));
    assert_eq!(
        summary(&out)
            .iter()
            .map(|s| s.2.unwrap())
            .collect::<Vec<_>>(),
        vec!["SELECT 1", "SELECT 2"]
    );
}

#[test]
fn pipelined_batches_pair_in_order() {
    let out = run(&with_handshake(vec![
        req([
            pbde("INSERT INTO a VALUES ($1)"),
            pbde("SELECT x FROM b"),
            sync(),
            pbde("DELETE FROM c"),
            sync(),
        ]
        .concat()),
        resp(
            [
                parse_complete(),
                bind_complete(),
                msg(b'n', &[]),
                command_complete("INSERT 0 1"),
            ]
            .concat(),
        ),
        resp([answer_select(&["1", "2", "3"]), ready()].concat()),
        resp(
            [
                parse_complete(),
                bind_complete(),
                msg(b'n', &[]),
                command_complete("DELETE 4"),
                ready(),
            ]
            .concat(),
        ),
    ]));
    assert_eq!(
        summary(&out),
        vec![
            (Some("INSERT"), Some("a"), Some("INSERT INTO a VALUES ($1)")),
            (Some("SELECT"), Some("b"), Some("SELECT x FROM b")),
            (Some("DELETE"), Some("c"), Some("DELETE FROM c")),
        ]
    );
    let rows: Vec<_> = out.iter().map(|e| db(e).rows).collect();
    assert_eq!(rows, vec![Some(1), Some(3), Some(4)]);
    // All sent in one write; each response from where the previous one ended.
    assert_eq!(times(&out[0]), (3000, 3500, Some(4000), Some(4500)));
    assert_eq!(times(&out[1]), (3000, 3500, Some(5000), Some(5500)));
    assert_eq!(times(&out[2]), (3000, 3500, Some(6000), Some(6500)));
}

#[test]
fn error_in_a_pipeline_goes_to_its_execute_and_drops_the_rest_of_the_batch() {
    let out = run(&with_handshake(vec![
        req([
            parse("ins", "INSERT INTO users (email) VALUES ($1)"),
            bind("", "ins", &[b"a@x"]),
            execute("", 0),
            bind("", "ins", &[b"dup@x"]),
            execute("", 0),
            bind("", "ins", &[b"b@x"]),
            execute("", 0),
            sync(),
            pbde("SELECT count(*) FROM users"),
            sync(),
        ]
        .concat()),
        resp(
            [
                parse_complete(),
                bind_complete(),
                command_complete("INSERT 0 1"),
                bind_complete(),
                error("23505", "duplicate key value violates unique constraint"),
                ready(),
            ]
            .concat(),
        ),
        resp([answer_select(&["5"]), ready()].concat()),
    ]));
    assert_eq!(out.len(), 3, "{out:#?}");
    assert_eq!(db(&out[0]).rows, Some(1));
    assert_eq!(db(&out[0]).status_code, None);
    assert_eq!(db(&out[1]).status_code.as_deref(), Some("23505"));
    assert_eq!(
        db(&out[1]).error_message.as_deref(),
        Some("duplicate key value violates unique constraint")
    );
    assert_eq!(db(&out[1]).operation.as_deref(), Some("INSERT"));
    assert_eq!(
        db(&out[2]).query_text.as_deref(),
        Some("SELECT count(*) FROM users")
    );
    assert_eq!(db(&out[2]).rows, Some(1));
    assert!(out.iter().all(|e| !db(e).partial));
}

#[test]
fn failed_parse_goes_to_the_execute_that_needed_it() {
    let out = run(&with_handshake(vec![
        req([pbde("SELEC 1"), sync()].concat()),
        resp([error("42601", "syntax error"), ready()].concat()),
    ]));
    assert_eq!(out.len(), 1);
    assert_eq!(db(&out[0]).status_code.as_deref(), Some("42601"));
    assert_eq!(db(&out[0]).query_text.as_deref(), Some("SELEC 1"));
    assert_eq!(times(&out[0]), (3000, 3500, Some(4000), Some(4500)));
}

#[test]
fn failed_prepare_without_execute_is_reported_on_its_own() {
    let out = run(&with_handshake(vec![
        req([parse("s1", "SELECT * FROM nope"), sync()].concat()),
        resp([error("42P01", "relation \"nope\" does not exist"), ready()].concat()),
        // A successful prepare-only round trip reports nothing.
        req([parse("s2", "SELECT 1"), describe_statement("s2"), sync()].concat()),
        resp(
            [
                parse_complete(),
                msg(b't', &[0, 0]),
                row_description(),
                ready(),
            ]
            .concat(),
        ),
    ]));
    assert_eq!(
        summary(&out),
        vec![(Some("SELECT"), Some("nope"), Some("SELECT * FROM nope"))]
    );
    assert_eq!(db(&out[0]).status_code.as_deref(), Some("42P01"));
}

#[test]
fn failed_bind_goes_to_the_following_execute() {
    let out = run(&with_handshake(vec![
        req([parse("s", "SELECT * FROM t WHERE id = $1"), sync()].concat()),
        resp([parse_complete(), ready()].concat()),
        req([bind("", "s", &[b"x"]), execute("", 0), sync()].concat()),
        resp(
            [
                error("22P02", "invalid input syntax for type integer: \"x\""),
                ready(),
            ]
            .concat(),
        ),
    ]));
    assert_eq!(out.len(), 1);
    assert_eq!(db(&out[0]).status_code.as_deref(), Some("22P02"));
    assert_eq!(db(&out[0]).collection.as_deref(), Some("t"));
    assert_eq!(out[0].request_start_ns, 5000);
}

#[test]
fn error_during_rows_keeps_the_operation() {
    let out = run(&with_handshake(vec![
        req([pbde("SELECT 1 / (x - 3) FROM t"), sync()].concat()),
        resp(
            [
                parse_complete(),
                bind_complete(),
                row_description(),
                data_row("1"),
                error("22012", "division by zero"),
                ready(),
            ]
            .concat(),
        ),
    ]));
    assert_eq!(out.len(), 1);
    assert_eq!(db(&out[0]).status_code.as_deref(), Some("22012"));
}

#[test]
fn portal_suspended_executions_are_separate_exchanges() {
    let out = run(&with_handshake(vec![
        req([
            parse("", "SELECT id FROM big"),
            bind("c1", "", &[]),
            describe_portal("c1"),
            execute("c1", 2),
            execute("c1", 2),
            sync(),
        ]
        .concat()),
        resp(
            [
                parse_complete(),
                bind_complete(),
                row_description(),
                data_row("1"),
                data_row("2"),
                msg(b's', &[]),
                data_row("3"),
                command_complete("SELECT 1"),
                ready(),
            ]
            .concat(),
        ),
    ]));
    assert_eq!(out.len(), 2);
    assert_eq!((db(&out[0]).rows, db(&out[1]).rows), (Some(2), Some(1)));
    assert!(
        out.iter()
            .all(|e| db(e).query_text.as_deref() == Some("SELECT id FROM big"))
    );
}

#[test]
fn flush_round_trips_before_execute_pair_right() {
    let out = run(&with_handshake(vec![
        req([
            parse("", "SELECT v FROM kv"),
            describe_statement(""),
            flush(),
        ]
        .concat()),
        resp([parse_complete(), msg(b't', &[0, 0]), row_description()].concat()),
        req([bind("", "", &[]), execute("", 0), sync()].concat()),
        resp(
            [
                bind_complete(),
                data_row("a"),
                command_complete("SELECT 1"),
                ready(),
            ]
            .concat(),
        ),
    ]));
    assert_eq!(out.len(), 1);
    assert_eq!(db(&out[0]).rows, Some(1));
    // The operation began with the Parse; its response with the ParseComplete.
    assert_eq!(times(&out[0]), (3000, 5500, Some(4000), Some(6500)));
}

#[test]
fn closed_or_unknown_statements_give_partial_exchanges_without_text() {
    let out = run(&with_handshake(vec![
        req([parse("s", "SELECT 1"), sync()].concat()),
        resp([parse_complete(), ready()].concat()),
        req([close_statement("s"), sync()].concat()),
        resp([msg(b'3', &[]), ready()].concat()),
        // Bound to a statement prepared before the agent saw the connection.
        req([bind("", "old", &[]), execute("", 0), sync()].concat()),
        resp([bind_complete(), command_complete("SELECT 0"), ready()].concat()),
        req([bind("", "s", &[]), execute("", 0), sync()].concat()),
        resp([bind_complete(), command_complete("SELECT 0"), ready()].concat()),
    ]));
    assert_eq!(out.len(), 2);
    for e in &out {
        assert_eq!(summary(std::slice::from_ref(e)), vec![(None, None, None)]);
        assert!(db(e).partial);
        assert_eq!(db(e).rows, Some(0));
    }
}

#[test]
fn statement_map_is_bounded_and_keeps_the_newest() {
    let mut session = PostgresSession::new();
    let mut out = Vec::new();
    let mut batch = Vec::new();
    for i in 0..1100 {
        batch.extend(parse(&format!("s{i}"), &format!("SELECT {i}")));
    }
    batch.extend(sync());
    session.feed(Flow::Request, chunk(&batch, 1, 2), &mut out);
    assert!(session.statements.len() <= MAX_STATEMENTS);
    assert!(session.statements.contains_key(&b"s1099"[..]));
    assert!(!session.statements.contains_key(&b"s0"[..]));
}

#[test]
fn queue_is_bounded_when_responses_are_not_seen() {
    let mut steps = with_handshake(Vec::new());
    for i in 0..600 {
        steps.push(req(query(&format!("SELECT {i}"))));
    }
    let mut session = PostgresSession::new();
    let mut out = Vec::new();
    for (k, step) in steps.iter().enumerate() {
        let (first_byte_ns, last_byte_ns) = step_times(k);
        session.feed(
            step.flow,
            chunk(&step.data, first_byte_ns, last_byte_ns),
            &mut out,
        );
        assert!(session.queued_ops <= MAX_QUEUED_OPS);
        assert!(session.queue.len() <= MAX_QUEUED_ENTRIES + 1);
    }
    session.close(1, &mut out);
    assert_eq!(out.len(), 600);
    assert!(out.iter().all(|e| e.response_end_ns.is_none()));
}

#[test]
fn long_query_text_is_bounded_and_big_messages_are_not_buffered() {
    let long = format!("SELECT '{}' FROM t", "é".repeat(60_000));
    let out = run(&with_handshake(vec![
        req(query(&long)),
        resp(
            [
                row_description(),
                data_row(&"x".repeat(200_000)),
                command_complete("SELECT 1"),
                ready(),
            ]
            .concat(),
        ),
    ]));
    let text = db(&out[0]).query_text.as_deref().unwrap();
    assert!(text.len() <= MAX_QUERY_TEXT && text.len() > MAX_QUERY_TEXT - 4);
    assert!(long.starts_with(text));
    assert_eq!(db(&out[0]).operation.as_deref(), Some("SELECT"));
    assert!(!db(&out[0]).partial);
    // The reader kept at most its small limits.
    let mut session = PostgresSession::new();
    let data = [query(&long), data_row(&"y".repeat(100_000))].concat();
    session.feed(Flow::Request, chunk(&data, 1, 2), &mut Vec::new());
    assert!(session.requests.take_body().capacity() <= 2 * (MAX_QUERY_TEXT + 1));
}

#[test]
fn close_reports_what_is_pending() {
    let out = run(&with_handshake(vec![
        req(query("SELECT * FROM slow")),
        resp([row_description(), data_row("1")].concat()),
        req([pbde("SELECT 2"), sync()].concat()),
    ]));
    assert_eq!(out.len(), 2);
    // Cut off mid-answer: partial, with the response seen so far.
    assert_eq!(times(&out[0]), (3000, 3500, Some(4000), Some(4500)));
    assert!(db(&out[0]).partial);
    assert_eq!(out[1].response_start_ns, None);
    assert!(!db(&out[1]).partial);
}

// ---- splits ----

fn short_session() -> Vec<Step> {
    vec![
        req(ssl_request()),
        resp(b"N"),
        req(startup(&[("user", "app"), ("database", "shop")])),
        resp(
            [
                auth_ok(),
                parameter_status("a", "b"),
                backend_key(),
                ready(),
            ]
            .concat(),
        ),
        req(query("SELECT * FROM users; SELECT 2")),
        resp(
            [
                row_description(),
                data_row("1"),
                command_complete("SELECT 1"),
                row_description(),
                data_row("2"),
                command_complete("SELECT 1"),
                ready(),
            ]
            .concat(),
        ),
        req([
            parse("s", "INSERT INTO t VALUES ($1)"),
            bind("", "s", &[b"1"]),
            execute("", 0),
            bind("", "s", &[b"1"]),
            execute("", 0),
            bind("", "s", &[b"2"]),
            execute("", 0),
            sync(),
            pbde("SELECT 3"),
            sync(),
        ]
        .concat()),
        resp(
            [
                parse_complete(),
                bind_complete(),
                command_complete("INSERT 0 1"),
                bind_complete(),
                error("23505", "dup"),
                ready(),
                answer_select(&["3"]),
                ready(),
            ]
            .concat(),
        ),
        req(query("COPY t FROM STDIN")),
        resp(msg(b'G', &[0, 0, 0])),
        req([msg(b'd', b"1\n"), msg(b'c', &[])].concat()),
        resp([command_complete("COPY 1"), ready()].concat()),
    ]
}

#[test]
fn split_at_every_byte_decodes_the_same() {
    let whole = assert_splits_decode_the_same(&short_session(), run);
    assert_eq!(whole.len(), 5, "{whole:#?}");
}

// ---- detection ----

#[test]
fn detects_startup_negotiation_and_late_joined_queries() {
    let p = &Postgres;
    assert!(p.detect(
        Flow::Request,
        &startup(&[("user", "postgres"), ("database", "shop")])
    ));
    assert!(p.detect(Flow::Request, &startup(&[("user", "x")])[..13]));
    assert!(p.detect(Flow::Request, &ssl_request()));
    assert!(p.detect(Flow::Request, &untyped(GSSENC_REQUEST, &[])));
    assert!(p.detect(Flow::Request, &query("SELECT 1")));
    assert!(p.detect(
        Flow::Request,
        &query("  /* app */ (select 1) union (select 2)")
    ));
    assert!(p.detect(
        Flow::Request,
        &query(&format!("INSERT INTO t VALUES ('{}')", "a".repeat(9000)))[..600]
    ));
    assert!(p.detect(
        Flow::Request,
        &[parse("", "SELECT $1"), bind("", "", &[])].concat()
    ));
    assert!(p.detect(Flow::Request, &parse("_pg3_0", "UPDATE t SET a = $1")));
    assert!(p.detect(Flow::Response, &auth_ok()));
    assert!(p.detect(Flow::Response, &msg(b'R', b"\0\0\0\x05salt")));
    assert!(p.detect(Flow::Response, &msg(b'R', b"\0\0\0\x0aSCRAM-SHA-256\0\0")));
    assert_eq!(
        crate::protocols::detect(Flow::Request, &startup(&[("user", "u")])).map(|p| p.name()),
        Some("postgresql")
    );
    assert_eq!(
        crate::protocols::detect(Flow::Request, &query("SELECT 1")).map(|p| p.name()),
        Some("postgresql")
    );
}

#[test]
fn does_not_detect_other_protocols_or_noise() {
    let p = &Postgres;
    let others: &[&[u8]] = &[
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /api HTTP/1.1\r\n",
        b"PUT /x HTTP/1.1\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"QUERY /x HTTP/1.1\r\n",
        b"HTTP/1.1 200 OK\r\n\r\n",
        b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n",
        b"+OK\r\n",
        b"PING\r\n",
        // MySQL: greeting, handshake response, COM_QUERY, COM_PING.
        b"R\x00\x00\x00\x0a8.0.36\x00\x08\x00\x00\x00abcdefgh\x00",
        b"J\x00\x00\x00\x0a5.7.44\x00",
        b"\x55\x00\x00\x01\x85\xa6\xff\x01\x00\x00\x00\x01\x21\x00",
        b"\x09\x00\x00\x00\x03SELECT 1",
        b"Q\x00\x00\x00\x03SELECT 1",
        b"\x01\x00\x00\x00\x0e",
        // TLS client hello.
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"",
        b"Q",
        b"Q\x00\x00\x00",
        // Plausible framing, not SQL.
        b"Q\x00\x00\x00\x0dhello wo\x00",
        b"Q\x00\x00\x00\x0d\x01\x02\x03\x04\x05\x06\x07\x08\x00",
        b"Q\x00\x00\x00\x09SELE",
        b"\x00\x00\x00\x08\x04\xd2\x16\x31",
        b"\x00\x00\x00\x09\x04\xd2\x16\x2f\x00",
        b"\x00\x00\x00\x10\x04\xd2\x16\x2e\x00\x00\x00\x01\x00\x00\x00\x02",
        b"\x00\x00\x01\x00\x00\x03\x00\x00USER\x00",
    ];
    for bytes in others {
        assert!(!p.detect(Flow::Request, bytes), "request {bytes:?}");
        assert!(!p.detect(Flow::Response, bytes), "response {bytes:?}");
    }
    // Other authentication codes are not how a conversation begins.
    assert!(!p.detect(Flow::Response, &msg(b'R', b"\0\0\0\x0bdata")));
    assert!(!p.detect(Flow::Response, &msg(b'R', b"\0\0\0\x00extra")));
    assert!(!p.detect(Flow::Response, &ready()));
}

// ---- helpers ----

#[test]
fn command_tags_give_rows() {
    for (tag, rows) in [
        ("SELECT 5", Some(5)),
        ("INSERT 0 1", Some(1)),
        ("UPDATE 3", Some(3)),
        ("DELETE 0", Some(0)),
        ("MERGE 2", Some(2)),
        ("COPY 10", Some(10)),
        ("FETCH 4", Some(4)),
        ("MOVE 1", Some(1)),
        ("CREATE TABLE", None),
        ("BEGIN", None),
        ("SELECT", None),
        ("SELECT x", None),
        ("", None),
    ] {
        assert_eq!(command_rows(&cstr(tag)), rows, "{tag}");
    }
}

#[test]
fn error_fields_are_read_and_bounded() {
    let e = parse_error(&error("23505", "dup")[5..]);
    assert_eq!(
        e,
        ErrorFields {
            code: "23505".into(),
            message: Some("dup".into())
        }
    );
    let mut body = b"SFATAL\0M".to_vec();
    body.extend(vec![b'm'; 5000]);
    let e = parse_error(&body);
    assert_eq!(e.code, "FATAL");
    assert_eq!(e.message.unwrap().len(), MAX_ERROR_MESSAGE);
    assert_eq!(parse_error(b"").code, "ERROR");
}
