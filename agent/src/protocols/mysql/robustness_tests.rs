//! Lossy capture and hostile input: gaps, garbage, sequence errors, bounds.

use super::tests::*;
use super::*;
use crate::protocols::replay::{self, chunk};

#[test]
fn gap_inside_query_text_keeps_the_prefix_and_marks_partial() {
    let text = "SELECT * FROM items WHERE name IN ('a', 'b', 'c')";
    let full = query(text);
    let mut steps = connect("8.0.36", BASE_CAPS);
    steps.push(with_gap(req(&full[..20]), full.len() - 20));
    steps.push(resp(ok(1, 0, 2)));
    steps.push(req(query("SELECT 2")));
    steps.push(resp(ok(1, 0, 2)));
    let out = run(&steps);
    assert_eq!(out.len(), 2);
    assert_eq!(db(&out[0]).query_text.as_deref(), Some(&text[..15]));
    assert!(db(&out[0]).partial);
    assert!(!db(&out[1]).partial);
}

#[test]
fn rows_in_uncaptured_bytes_are_skipped_by_length() {
    // One packet with a large row whose middle is not captured.
    let mut steps = connect("8.0.36", BASE_CAPS);
    steps.push(req(query("SELECT blob FROM t")));
    let mut head = pkt(1, &[1]);
    head.extend(column(2, "blob"));
    head.extend(eof(3, 2));
    let row = text_row(4, &[&"z".repeat(100_000)]);
    head.extend_from_slice(&row[..100]);
    steps.push(with_gap(resp(head), row.len() - 100));
    steps.push(resp(eof(5, 2)));
    let out = run(&steps);
    assert_eq!(db(&out[0]).rows, Some(1));
    assert!(!db(&out[0]).partial);
    assert_eq!(out[0].response_end_ns, Some(6500));
}

#[test]
fn lost_response_framing_ends_at_the_next_command_and_resyncs() {
    let mut steps = connect("8.0.36", BASE_CAPS);
    steps.push(req(query("SELECT * FROM big")));
    let answer = result_set(1, 2, 1000, false);
    assert!(answer.len() > 8000);
    steps.push(with_gap(resp(&answer[..300]), 5000));
    // The rest of the big answer, not starting at a packet boundary.
    steps.push(resp(&answer[5300..]));
    steps.push(req(query("SELECT 1")));
    steps.push(resp(result_set(1, 1, 1, false)));
    steps.push(req(query("SELECT 2")));
    steps.push(resp(ok(1, 0, 2)));
    let out = run(&steps);
    assert_eq!(out.len(), 3);
    assert!(db(&out[0]).partial);
    assert_eq!(db(&out[0]).rows, None);
    assert_eq!(out[0].response_start_ns, Some(5000));
    assert_eq!(out[0].response_end_ns, Some(6500));
    assert_eq!(db(&out[1]).rows, Some(1));
    assert!(!db(&out[1]).partial && !db(&out[2]).partial);
}

#[test]
fn lost_request_framing_waits_for_a_plausible_command() {
    let mut steps = connect("8.0.36", BASE_CAPS);
    // A query, then a gap where the next packet header would be.
    steps.push(with_gap(req(query("SELECT 1")), 40));
    steps.push(resp(ok(1, 0, 2)));
    // Continuation bytes of whatever was unseen: ignored.
    steps.push(req(b"tail of something unseen"));
    steps.push(resp(ok(1, 0, 2)));
    steps.push(req(query("SELECT 2")));
    steps.push(resp(ok(1, 5, 2)));
    let out = run(&steps);
    let texts: Vec<_> = out
        .iter()
        .map(|e| db(e).query_text.clone().unwrap())
        .collect();
    assert_eq!(texts, vec!["SELECT 1", "SELECT 2"]);
    assert_eq!(db(&out[1]).rows, Some(5));
}

#[test]
fn wrong_sequence_ids_lose_the_response_not_the_connection() {
    let mut steps = connect("8.0.36", BASE_CAPS);
    steps.push(req(query("SELECT 1")));
    steps.push(resp(ok(7, 0, 2)));
    steps.push(req(query("SELECT 2")));
    steps.push(resp(ok(1, 3, 2)));
    let out = run(&steps);
    assert_eq!(out.len(), 2);
    assert!(db(&out[0]).partial);
    assert_eq!(db(&out[1]).rows, Some(3));
    assert!(!db(&out[1]).partial);
}

#[test]
fn garbage_never_becomes_an_exchange() {
    let junk: Vec<Vec<u8>> = vec![
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc".to_vec(),
        vec![0xff; 64],
        vec![0; 64],
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        (0..=255u8).collect(),
    ];
    for bytes in &junk {
        for start in [vec![], connect("8.0.36", BASE_CAPS)] {
            let mut steps = start.clone();
            steps.push(req(bytes.clone()));
            steps.push(resp(bytes.clone()));
            steps.push(resp(bytes.clone()));
            let out = run(&steps);
            assert!(
                out.iter().all(|e| {
                    let d = db(e);
                    d.query_text
                        .as_deref()
                        .is_none_or(|t| t.len() <= MAX_QUERY_LEN)
                }),
                "{bytes:?}"
            );
        }
    }
    // Garbage that is not MySQL at all from the first byte on yields nothing.
    let out = run(&[resp(b"\x00\x00\x00\x00\xff\xff"), req(vec![0xaa; 100])]);
    assert!(out.is_empty());
}

#[test]
fn response_without_a_command_is_ignored() {
    let mut steps = connect("8.0.36", BASE_CAPS);
    steps.push(resp(result_set(1, 1, 3, false)));
    steps.push(req(query("SELECT 1")));
    steps.push(resp(ok(1, 0, 2)));
    let out = run(&steps);
    assert_eq!(out.len(), 1);
    assert_eq!(db(&out[0]).rows, Some(0));
}

#[test]
fn close_during_a_response_emits_it_partial() {
    let mut steps = connect("8.0.36", BASE_CAPS);
    steps.push(req(query("SELECT a FROM t")));
    let answer = result_set(1, 1, 10, false);
    steps.push(resp(&answer[..answer.len() - 20]));
    steps.push(req(query("SELECT 2")));
    let out = run(&steps);
    assert_eq!(out.len(), 2);
    assert!(db(&out[0]).partial);
    assert_eq!(db(&out[0]).rows, None);
    assert_eq!(out[0].response_end_ns, Some(5500));
    // Pipelined behind it, never answered.
    assert_eq!(out[1].response_start_ns, None);
}

#[test]
fn pending_commands_are_bounded() {
    let mut session = MysqlSession::new();
    let mut out = Vec::new();
    for k in 0..200u64 {
        let q = query(&format!("SELECT {k}"));
        session.feed(Flow::Request, chunk(&q, k, k), &mut out);
        assert!(session.core.pending.len() <= MAX_PENDING);
    }
    assert_eq!(out.len(), 200 - MAX_PENDING);
    session.close(1000, &mut out);
    assert_eq!(out.len(), 200);
    assert!(out.iter().all(|e| e.response_start_ns.is_none()));
}

#[test]
fn remembered_statements_are_bounded() {
    let mut session = MysqlSession::new();
    let mut out = Vec::new();
    let long = "x".repeat(MAX_QUERY_LEN);
    let mut feed = |flow, data: Vec<u8>, session: &mut MysqlSession| {
        session.feed(flow, chunk(&data, 1, 2), &mut out);
    };
    for id in 0..1000u32 {
        let text = format!("SELECT {id} /* {long} */");
        feed(
            Flow::Request,
            command(COM_STMT_PREPARE, text.as_bytes()),
            &mut session,
        );
        feed(Flow::Response, prepare_ok(1, id, 0, 0, true), &mut session);
        assert!(session.core.statements.len() <= MAX_STATEMENTS);
        assert!(session.core.statement_bytes <= MAX_STATEMENT_BYTES);
        assert_eq!(
            session.core.statements.len(),
            session.core.statement_order.len()
        );
    }
    // The newest statement is still known.
    feed(Flow::Request, execute(999), &mut session);
    feed(Flow::Response, ok(1, 0, 2), &mut session);
    assert!(
        db(&out[0])
            .query_text
            .as_deref()
            .unwrap()
            .starts_with("SELECT 999 ")
    );
}

#[test]
fn nothing_after_a_header_in_a_gap_at_connection_start() {
    // The greeting's header itself is uncaptured: the session cannot start.
    let out = run(&[
        with_gap(resp(Vec::new()), 90),
        req(handshake(BASE_CAPS, Some("shop"))),
        resp(ok(2, 0, 2)),
    ]);
    assert!(out.is_empty());
}

#[test]
fn huge_declared_lengths_do_not_allocate() {
    // Declared 16 MiB packets that never arrive; the reader keeps at most its cap.
    let mut steps = connect("8.0.36", BASE_CAPS);
    let mut big = vec![0xfe, 0xff, 0xff, 0, COM_QUERY];
    big.extend(std::iter::repeat_n(b'a', 10_000));
    steps.push(req(big));
    steps.push(req(vec![b'b'; 10_000]));
    let mut session = MysqlSession::new();
    let mut out = Vec::new();
    for step in &steps {
        session.feed(
            step.flow,
            Chunk {
                missing: step.missing,
                ..chunk(&step.data, 1, 1)
            },
            &mut out,
        );
        assert!(session.requests.payload().len() <= REQUEST_CAP);
    }
    session.close(2, &mut out);
    assert!(out.is_empty() || db(&out[0]).query_text.as_ref().unwrap().len() <= MAX_QUERY_LEN);
}

#[test]
fn skipped_stretches_are_counted_once_each() {
    let mut clean = connect("8.0.36", BASE_CAPS);
    clean.push(req(query("SELECT 1")));
    clean.push(resp(result_set(1, 1, 1, false)));
    assert_eq!(
        replay::skips(&Mysql, &clean),
        0,
        "a clean exchange skips nothing"
    );

    // A packet header of a big answer falls into a gap: the rest of it is one stretch, over
    // two chunks.
    let mut steps = connect("8.0.36", BASE_CAPS);
    steps.push(req(query("SELECT * FROM big")));
    let answer = result_set(1, 2, 1000, false);
    steps.push(with_gap(resp(&answer[..300]), 5000));
    steps.push(resp(&answer[5300..6000]));
    steps.push(resp(&answer[6000..]));
    steps.push(req(query("SELECT 1")));
    steps.push(resp(result_set(1, 1, 1, false)));
    assert_eq!(replay::skips(&Mysql, &steps), 1);

    // Then the request framing: a second stretch.
    steps.push(with_gap(req(query("SELECT 2")), 40));
    steps.push(resp(ok(1, 0, 2)));
    steps.push(req(b"tail of something unseen"));
    steps.push(req(query("SELECT 3")));
    steps.push(resp(ok(1, 0, 2)));
    assert_eq!(replay::skips(&Mysql, &steps), 2);

    // The same again, once the commands were picked up: a third.
    steps.extend_from_within(steps.len() - 5..);
    assert_eq!(replay::skips(&Mysql, &steps), 3);
}
