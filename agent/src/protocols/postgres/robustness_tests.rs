//! Lossy capture and hostile input: gaps, lost framing, garbage, bounds.

use super::tests::*;
use super::*;
use crate::protocols::replay::{self, chunk};

#[test]
fn gap_inside_a_data_row_is_skipped_exactly() {
    let row = data_row(&"x".repeat(5000));
    let out = run(&with_handshake(vec![
        req(query("SELECT pad FROM t")),
        with_gap(
            resp([row_description(), row[..100].to_vec()].concat()),
            row.len() - 100,
        ),
        resp([data_row("y"), command_complete("SELECT 2"), ready()].concat()),
        req(query("SELECT 1")),
        resp([command_complete("SELECT 1"), ready()].concat()),
    ]));
    assert_eq!(out.len(), 2);
    assert_eq!(db(&out[0]).rows, Some(2));
    assert!(out.iter().all(|e| !db(e).partial));
    assert_eq!(times(&out[0]), (3000, 3500, Some(4000), Some(5500)));
}

#[test]
fn gap_inside_query_text_keeps_the_prefix_and_marks_partial() {
    let sql = format!("SELECT * FROM users WHERE note = '{}'", "n".repeat(3000));
    let q = query(&sql);
    let out = run(&with_handshake(vec![
        with_gap(req(&q[..60]), q.len() - 60),
        resp([command_complete("SELECT 0"), ready()].concat()),
    ]));
    assert_eq!(out.len(), 1);
    let d = db(&out[0]);
    assert!(d.partial);
    assert_eq!(d.operation.as_deref(), Some("SELECT"));
    assert_eq!(d.collection.as_deref(), Some("users"));
    assert_eq!(d.query_text.as_deref(), Some(&sql[..55]));
    assert_eq!(d.rows, Some(0));
}

#[test]
fn gap_over_the_tail_of_a_big_query_text_is_not_partial_when_only_skipped_bytes_are_lost() {
    // The kept prefix (4 KiB) was captured; what the gap hides is beyond it.
    let sql = format!("SELECT '{}'", "a".repeat(20_000));
    let q = query(&sql);
    let out = run(&with_handshake(vec![
        with_gap(req(&q[..8192]), q.len() - 8192),
        resp([command_complete("SELECT 1"), ready()].concat()),
    ]));
    assert!(!db(&out[0]).partial);
    assert_eq!(
        db(&out[0]).query_text.as_ref().unwrap().len(),
        MAX_QUERY_TEXT
    );
}

#[test]
fn big_result_with_lost_framing_ends_at_the_chunk_ending_with_ready_for_query() {
    // A capped capture of a big result: each read shows only its first bytes, so DataRow
    // headers fall into gaps.
    let rows: Vec<u8> = (0..300)
        .flat_map(|i| data_row(&format!("{i:04}{}", "x".repeat(996))))
        .collect();
    let answer = [parse_complete(), bind_complete(), row_description(), rows].concat();
    let tail = [command_complete("SELECT 300"), ready()].concat();
    let mut steps = with_handshake(vec![req([pbde("SELECT g, pad FROM big"), sync()].concat())]);
    let mut at = 0;
    let everything = [answer, tail].concat();
    while at < everything.len() {
        let end = (at + 65536).min(everything.len());
        let shown = (end - at).min(1024);
        steps.push(with_gap(
            resp(&everything[at..at + shown]),
            end - at - shown,
        ));
        at = end;
    }
    // The last read happened to be short: it shows the CommandComplete and ReadyForQuery.
    let last = steps.pop().unwrap();
    let mut whole_last = everything[everything.len() - (last.data.len() + last.missing)..].to_vec();
    let keep_from = whole_last.len() - 300;
    let hidden = keep_from;
    whole_last.drain(..keep_from);
    steps.push(with_gap(resp(Vec::new()), hidden));
    steps.push(resp(whole_last));
    let n = steps.len();
    steps.push(req(
        [pbde("SELECT email FROM users WHERE id = $1"), sync()].concat()
    ));
    steps.push(resp([answer_select(&["a@x"]), ready()].concat()));
    let out = run(&steps);
    assert_eq!(out.len(), 2, "{out:#?}");
    let big = db(&out[0]);
    assert!(big.partial);
    assert_eq!(big.operation.as_deref(), Some("SELECT"));
    assert_eq!(big.rows, Some(300));
    assert_eq!(out[0].response_start_ns, Some(step_times(3).0));
    assert_eq!(out[0].response_end_ns, Some(step_times(n - 1).1));
    assert!(!db(&out[1]).partial);
    assert_eq!(db(&out[1]).rows, Some(1));
    assert_eq!(out[1].response_start_ns, Some(step_times(n + 1).0));
}

#[test]
fn lost_response_framing_resyncs_at_the_next_plausible_chunk() {
    let out = run(&with_handshake(vec![
        req(query("SELECT * FROM a")),
        // The header of the second DataRow is in the gap.
        with_gap(resp([row_description(), data_row("1")].concat()), 5000),
        resp(b"garbage that is the middle of a row"),
        req(query("SELECT * FROM b")),
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
    assert_eq!(
        summary(&out),
        vec![
            (Some("SELECT"), Some("a"), Some("SELECT * FROM a")),
            (Some("SELECT"), Some("b"), Some("SELECT * FROM b")),
        ]
    );
    assert!(db(&out[0]).partial);
    assert_eq!(db(&out[0]).rows, None);
    // Ended, as far as we know, with the last chunk skipped.
    assert_eq!(times(&out[0]), (3000, 3500, Some(4000), Some(5500)));
    assert!(!db(&out[1]).partial);
    assert_eq!(times(&out[1]), (6000, 6500, Some(7000), Some(7500)));
}

#[test]
fn lost_request_framing_after_a_big_bind_assumes_its_execute() {
    let blob = vec![b'z'; 100_000];
    let batch = [
        parse("", "INSERT INTO files (data) VALUES ($1)"),
        bind("", "", &[&blob]),
        execute("", 0),
        sync(),
    ]
    .concat();
    let out = run(&with_handshake(vec![
        with_gap(req(&batch[..8192]), batch.len() - 8192),
        resp(
            [
                parse_complete(),
                bind_complete(),
                command_complete("INSERT 0 1"),
                ready(),
            ]
            .concat(),
        ),
        req(query("SELECT 1")),
        resp([command_complete("SELECT 1"), ready()].concat()),
    ]));
    assert_eq!(out.len(), 2, "{out:#?}");
    let insert = db(&out[0]);
    assert_eq!(insert.collection.as_deref(), Some("files"));
    assert_eq!(insert.rows, Some(1));
    assert!(insert.partial);
    assert_eq!(times(&out[0]), (3000, 3500, Some(4000), Some(4500)));
    assert!(!db(&out[1]).partial);
    assert_eq!(db(&out[1]).rows, Some(1));
}

#[test]
fn lost_request_framing_absorbs_responses_up_to_ready_for_query() {
    let out = run(&with_handshake(vec![
        // A message header in the gap: whatever it was, it is gone.
        with_gap(req(query("SELECT 1")), 50),
        resp(
            [
                row_description(),
                data_row("1"),
                command_complete("SELECT 1"),
                ready(),
                command_complete("UNKNOWN 5"),
                ready(),
            ]
            .concat(),
        ),
        req(b"not a message start"),
        req(query("SELECT 2")),
        resp([command_complete("SELECT 1"), ready()].concat()),
    ]));
    assert_eq!(
        summary(&out)
            .iter()
            .map(|s| s.2.unwrap())
            .collect::<Vec<_>>(),
        vec!["SELECT 1", "SELECT 2"]
    );
    assert!(out.iter().all(|e| !db(e).partial));
    assert_eq!(times(&out[1]), (6000, 6500, Some(7000), Some(7500)));
}

#[test]
fn request_framing_resumes_at_a_long_query_cut_by_the_capture() {
    let long = query(&format!(
        "SELECT * FROM t WHERE note = '{}'",
        "n".repeat(20_000)
    ));
    let out = run(&with_handshake(vec![
        with_gap(req(query("SELECT 1")), 10),
        resp([command_complete("SELECT 1"), ready(), ready()].concat()),
        with_gap(req(&long[..8192]), long.len() - 8192),
        resp([command_complete("SELECT 0"), ready()].concat()),
    ]));
    assert_eq!(out.len(), 2, "{out:#?}");
    assert_eq!(db(&out[1]).collection.as_deref(), Some("t"));
    assert_eq!(db(&out[1]).rows, Some(0));
    assert!(!db(&out[1]).partial);
}

#[test]
fn garbage_requests_produce_nothing_and_a_later_clean_chunk_resyncs() {
    let out = run(&with_handshake(vec![
        req(b"\xff\xfe\x00\x01 garbage garbage"),
        req(b"Q\x7f\xff\xff\xffSELECT"),
        req(query("SELECT 42")),
        resp(
            [
                row_description(),
                data_row("42"),
                command_complete("SELECT 1"),
                ready(),
            ]
            .concat(),
        ),
    ]));
    // The hole queued for the garbage absorbs the answer: nothing is made up.
    assert!(out.len() <= 1);
    for e in &out {
        assert_eq!(db(e).query_text.as_deref(), Some("SELECT 42"));
    }
}

#[test]
fn garbage_responses_never_invent_results() {
    let out = run(&with_handshake(vec![
        req(query("SELECT 1")),
        resp(b"\x00\x01\x02 not postgres at all \xff"),
        resp(b"C\x00\x00\x00\x0dSEL"),
    ]));
    assert_eq!(out.len(), 1);
    assert!(db(&out[0]).partial);
    assert_eq!(db(&out[0]).rows, None);
}

#[test]
fn implausible_lengths_lose_framing_instead_of_skipping_gigabytes() {
    let out = run(&with_handshake(vec![
        req(query("SELECT 1")),
        resp(b"Z\x00\x00\x10\x00I"),
        resp([command_complete("SELECT 1"), ready()].concat()),
    ]));
    assert_eq!(out.len(), 1);
    assert!(db(&out[0]).partial);
}

#[test]
fn uncaptured_chunks_of_copy_data_are_skipped_by_count() {
    let data = msg(b'd', &vec![b'r'; 50_000]);
    let out = run(&with_handshake(vec![
        req(query("COPY t FROM STDIN")),
        resp(msg(b'G', &[0, 0, 0])),
        with_gap(req(&data[..1000]), data.len() - 1000),
        with_gap(req(Vec::new()), data.len()),
        req([msg(b'd', b"last\n"), msg(b'c', &[])].concat()),
        resp([command_complete("COPY 3"), ready()].concat()),
    ]));
    assert_eq!(out.len(), 1);
    assert!(!db(&out[0]).partial);
    assert_eq!(db(&out[0]).rows, Some(3));
    assert_eq!(out[0].request_end_ns, 7500);
}

/// Deterministic pseudo-random bytes (xorshift).
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn random_input_keeps_every_bound() {
    let messages = short_session_bytes();
    for seed in 1..300u64 {
        let mut session = PostgresSession::new();
        let mut out = Vec::new();
        let bytes = noise(seed, 4000);
        let mut at = 0;
        let mut now = 0;
        let mut k = 0;
        while at < bytes.len() {
            let len = 1 + bytes[at] as usize % 300;
            let end = (at + len).min(bytes.len());
            // Mix real messages in, so that the decoder gets somewhere.
            let data = if k % 3 == 0 {
                messages[k % messages.len()].clone()
            } else {
                bytes[at..end].to_vec()
            };
            let flow = if bytes[at] & 1 == 0 {
                Flow::Request
            } else {
                Flow::Response
            };
            let missing = if bytes[at] & 0x0e == 0 { 700 } else { 0 };
            now += 10;
            session.feed(
                flow,
                Chunk {
                    missing,
                    ..chunk(&data, now, now + 5)
                },
                &mut out,
            );
            assert!(session.queued_ops <= MAX_QUEUED_OPS);
            assert!(session.queue.len() <= MAX_QUEUED_ENTRIES + 1);
            assert!(session.statements.len() <= MAX_STATEMENTS);
            assert!(session.portals.len() <= MAX_PORTALS);
            at = end;
            k += 1;
        }
        session.close(now + 100, &mut out);
        for e in &out {
            assert!(e.request_start_ns <= e.request_end_ns);
            assert_eq!(e.response_start_ns.is_some(), e.response_end_ns.is_some());
            if let (Some(s), Some(t)) = (e.response_start_ns, e.response_end_ns) {
                assert!(e.request_start_ns <= s && s <= t);
            }
            let d = db(e);
            assert!(
                d.query_text
                    .as_ref()
                    .is_none_or(|t| t.len() <= MAX_QUERY_TEXT)
            );
            assert!(
                d.error_message
                    .as_ref()
                    .is_none_or(|t| t.len() <= MAX_ERROR_MESSAGE)
            );
        }
    }
}

fn short_session_bytes() -> Vec<Vec<u8>> {
    vec![
        query("SELECT 1"),
        [
            row_description(),
            data_row("1"),
            command_complete("SELECT 1"),
        ]
        .concat(),
        ready(),
        [pbde("INSERT INTO t VALUES ($1)"), sync()].concat(),
        answer_select(&["1", "2"]),
        error("23505", "dup"),
        [parse("s", "SELECT 2"), sync()].concat(),
        [bind("", "s", &[]), execute("", 0), sync()].concat(),
    ]
}

#[test]
fn skipped_stretches_are_counted_once_each() {
    let clean = with_handshake(vec![
        req(query("SELECT 1")),
        resp([command_complete("SELECT 0"), ready()].concat()),
    ]);
    assert_eq!(
        replay::skips(&Postgres, &clean),
        0,
        "a clean exchange skips nothing"
    );

    // The header of the second DataRow is in a gap: the rest of that answer, over two chunks,
    // is one skipped stretch; the next answer resyncs.
    let mut steps = with_handshake(vec![
        req(query("SELECT * FROM a")),
        with_gap(resp([row_description(), data_row("1")].concat()), 5000),
        resp(b"garbage that is the middle of a row"),
        req(query("SELECT * FROM b")),
        resp([command_complete("SELECT 0"), ready()].concat()),
    ]);
    assert_eq!(replay::skips(&Postgres, &steps), 1);

    // Losing the request framing later is a second stretch.
    steps.push(req(b"\xff\xfe\x00\x01 garbage garbage"));
    steps.push(req(b"more of the same garbage"));
    steps.push(req(query("SELECT 42")));
    assert_eq!(replay::skips(&Postgres, &steps), 2);

    // The same again, once the requests were picked up: a third.
    steps.extend_from_within(steps.len() - 3..);
    assert_eq!(replay::skips(&Postgres, &steps), 3);
}
