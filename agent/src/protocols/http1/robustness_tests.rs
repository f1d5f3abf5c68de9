//! Lossy capture and hostile input: gaps, garbage, unseen bodies, bounds.

use super::tests::*;
use super::*;
use crate::protocols::replay::chunk;

#[test]
fn gaps_inside_a_content_length_body_are_skipped_exactly() {
    let out = run(&[
        req("GET /big HTTP/1.1\r\n\r\n"),
        with_gap(
            resp("HTTP/1.1 200 OK\r\nContent-Length: 10000\r\n\r\nabc"),
            4000,
        ),
        with_gap(resp(""), 3000),
        with_gap(resp("xyz"), 2994),
        req("GET /next HTTP/1.1\r\n\r\n"),
        resp(OK_HELLO),
    ]);
    assert_eq!(
        summary(&out),
        vec![
            triple("GET", "/big", Some(200)),
            triple("GET", "/next", Some(200))
        ]
    );
    assert!(out.iter().all(|e| !http(e).partial));
    assert_eq!(out[0].response_end_ns, Some(4500));
    assert_eq!(http(&out[0]).response_body_len, Some(10000));
}

#[test]
fn gap_over_chunk_framing_marks_partial_and_the_next_exchange_is_right() {
    let out = run(&[
        req("GET /chunky HTTP/1.1\r\n\r\n"),
        with_gap(
            resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n0123"),
            5000,
        ),
        resp("more chunked bytes we cannot frame\r\n0\r\n\r\n"),
        req("GET /after HTTP/1.1\r\n\r\n"),
        resp(OK_HELLO),
    ]);
    assert_eq!(
        summary(&out),
        vec![
            triple("GET", "/chunky", Some(200)),
            triple("GET", "/after", Some(200))
        ]
    );
    assert!(http(&out[0]).partial);
    assert_eq!(http(&out[0]).response_body_len, None);
    assert!(!http(&out[1]).partial);
    assert_eq!(out[1].response_start_ns, Some(5000));
}

#[test]
fn gap_inside_chunk_data_is_skipped() {
    let out = run(&[
        req("GET / HTTP/1.1\r\n\r\n"),
        with_gap(
            resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n100\r\nab"),
            0x100 - 2,
        ),
        resp("\r\n0\r\n\r\n"),
    ]);
    assert!(!http(&out[0]).partial);
    assert_eq!(http(&out[0]).response_body_len, Some(0x100));
    assert_eq!(out[0].response_end_ns, Some(3500));
}

#[test]
fn header_block_cut_by_a_gap_is_partial_then_resyncs() {
    let out = run(&[
        with_gap(
            req("GET /very/long/path?with=query HTTP/1.1\r\nHost: h\r\nCookie: abc"),
            9000,
        ),
        resp(OK_HELLO),
        req("GET /ok HTTP/1.1\r\n\r\n"),
        resp(OK_HELLO),
    ]);
    assert_eq!(
        summary(&out),
        vec![
            triple("GET", "/very/long/path?with=query", Some(200)),
            triple("GET", "/ok", Some(200))
        ]
    );
    assert!(http(&out[0]).partial);
    assert_eq!(http(&out[0]).host.as_deref(), Some("h"));
    assert!(!http(&out[1]).partial);
}

#[test]
fn request_line_cut_by_a_gap_keeps_method_and_target_prefix() {
    let out = run(&[with_gap(req("GET /abc"), 5000), resp(OK_HELLO)]);
    assert_eq!(summary(&out), vec![triple("GET", "/abc", Some(200))]);
    assert_eq!(http(&out[0]).version, "");
    assert!(http(&out[0]).partial);
}

#[test]
fn garbage_then_a_valid_request() {
    let out = run(&[
        req("\u{16}\u{3}\u{1} binary junk\r\n\r\n"),
        req("hello world\r\n\r\n"),
        req(GET),
        resp("\0\0garbage"),
        resp(OK_HELLO),
    ]);
    assert_eq!(
        summary(&out),
        vec![triple("GET", "/index.html?q=1", Some(200))]
    );
    assert!(!http(&out[0]).partial);
}

#[test]
fn invalid_chunk_size_marks_partial_and_resyncs() {
    let out = run(&[
        req("GET /a HTTP/1.1\r\n\r\n"),
        resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
        req("GET /b HTTP/1.1\r\n\r\n"),
        resp(OK_HELLO),
    ]);
    assert_eq!(
        summary(&out),
        vec![
            triple("GET", "/a", Some(200)),
            triple("GET", "/b", Some(200))
        ]
    );
    assert!(http(&out[0]).partial);
}

#[test]
fn sendfile_body_seen_only_as_missing_bytes_is_exact() {
    let out = run(&[
        req("GET /file HTTP/1.1\r\n\r\n"),
        resp("HTTP/1.1 200 OK\r\nContent-Length: 65536\r\n\r\n"),
        with_gap(resp(""), 65536),
        req("GET /file2 HTTP/1.1\r\n\r\n"),
        resp(OK_HELLO),
    ]);
    assert_eq!(
        summary(&out),
        vec![
            triple("GET", "/file", Some(200)),
            triple("GET", "/file2", Some(200))
        ]
    );
    assert!(out.iter().all(|e| !http(e).partial));
    assert_eq!(out[0].response_end_ns, Some(3500));
}

#[test]
fn sendfile_body_not_seen_at_all_is_cut_by_the_next_response() {
    let out = run(&[
        req("GET /file HTTP/1.1\r\n\r\n"),
        resp("HTTP/1.1 200 OK\r\nContent-Length: 65536\r\n\r\n"),
        req("GET /file2 HTTP/1.1\r\n\r\n"),
        resp("HTTP/1.1 404 Not Found\r\nContent-Length: 5\r\n\r\nnope!"),
    ]);
    assert_eq!(
        summary(&out),
        vec![
            triple("GET", "/file", Some(200)),
            triple("GET", "/file2", Some(404))
        ]
    );
    assert!(http(&out[0]).partial);
    assert_eq!(out[0].response_end_ns, Some(2500));
    assert!(!http(&out[1]).partial);
}

#[test]
fn body_that_looks_like_a_response_is_not_cut_without_a_waiting_request() {
    let body = "HTTP/1.1 200 OK\r\n\r\n";
    let out = run(&[
        req("GET /doc HTTP/1.1\r\n\r\n"),
        resp(format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )),
        resp(body),
        req("GET /next HTTP/1.1\r\n\r\n"),
        resp(OK_HELLO),
    ]);
    assert_eq!(
        summary(&out),
        vec![
            triple("GET", "/doc", Some(200)),
            triple("GET", "/next", Some(200))
        ]
    );
    assert!(out.iter().all(|e| !http(e).partial));
}

#[test]
fn unseen_request_body_is_cut_by_the_next_request_line() {
    let out = run(&[
        req("POST /upload HTTP/1.1\r\nContent-Length: 100000\r\n\r\n"),
        req("GET /status HTTP/1.1\r\n\r\n"),
        resp("HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"),
        resp(OK_HELLO),
    ]);
    assert_eq!(
        summary(&out),
        vec![
            triple("POST", "/upload", Some(201)),
            triple("GET", "/status", Some(200))
        ]
    );
    assert!(http(&out[0]).partial);
    assert_eq!(out[1].request_start_ns, 2000);
}

#[test]
fn oversized_header_block_is_partial_and_bounded() {
    let huge = format!("GET /h HTTP/1.1\r\nX-Big: {}\r\n", "a".repeat(40_000));
    let out = run(&[
        req(&huge),
        req("more\r\n\r\n"),
        resp(OK_HELLO),
        req("GET /n HTTP/1.1\r\n\r\n"),
        resp(OK_HELLO),
    ]);
    assert_eq!(
        summary(&out),
        vec![
            triple("GET", "/h", Some(200)),
            triple("GET", "/n", Some(200))
        ]
    );
    assert!(http(&out[0]).partial);
}

#[test]
fn strings_are_bounded_and_lossy() {
    let target = format!("/{}", "é".repeat(3000));
    let agent = format!("agent/\u{ff}{}", "x".repeat(1000));
    let request = format!("GET {target} HTTP/1.1\r\nuser-agent: {agent}\r\nHOST: h\u{1}\r\n\r\n");
    let mut bytes = request.into_bytes();
    // Invalid UTF-8 in the user agent.
    let at = bytes.windows(7).position(|w| w == b"agent/\xc3").unwrap() + 6;
    bytes[at] = 0xff;
    let out = run(&[
        Step {
            flow: Flow::Request,
            data: bytes,
            missing: 0,
        },
        resp(OK_HELLO),
    ]);
    let h = http(&out[0]);
    assert!(h.target.len() <= head::MAX_TARGET_LEN && h.target.len() > 2000);
    assert!(h.target.starts_with("/é"));
    let ua = h.user_agent.as_deref().unwrap();
    assert!(ua.len() <= head::MAX_HEADER_VALUE_LEN);
    assert!(ua.starts_with("agent/\u{fffd}"));
    assert_eq!(h.host.as_deref(), Some("h\u{1}"));
}

#[test]
fn pending_requests_are_bounded() {
    let mut steps = Vec::new();
    for i in 0..100 {
        steps.push(req(format!("GET /{i} HTTP/1.1\r\n\r\n")));
    }
    let mut session = Http1Session::new();
    let mut out = Vec::new();
    for (k, step) in steps.iter().enumerate() {
        session.feed(
            Flow::Request,
            chunk(&step.data, k as u64, k as u64),
            &mut out,
        );
        assert!(session.pending.len() <= MAX_PENDING_REQUESTS);
    }
    assert_eq!(out.len(), 100 - MAX_PENDING_REQUESTS);
    session.close(1000, &mut out);
    assert_eq!(out.len(), 100);
    assert!(
        out.iter()
            .enumerate()
            .all(|(i, e)| http(e).target == format!("/{i}") && e.response_start_ns.is_none())
    );
}

#[test]
fn response_without_request_is_dropped() {
    let out = run(&[
        resp(OK_HELLO),
        req("GET /x HTTP/1.1\r\n\r\n"),
        resp(OK_HELLO),
    ]);
    assert_eq!(summary(&out), vec![triple("GET", "/x", Some(200))]);
}

#[test]
fn close_in_the_middle_of_a_body_is_partial() {
    let out = run(&[
        req("POST /p HTTP/1.1\r\nContent-Length: 10\r\n\r\n12345"),
        resp("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n123"),
    ]);
    assert_eq!(summary(&out), vec![triple("POST", "/p", Some(200))]);
    assert!(http(&out[0]).partial);
    assert_eq!(http(&out[0]).request_body_len, Some(10));
}

#[test]
fn header_block_cut_by_close_is_emitted_partial() {
    let out = run(&[req("GET /cut HTTP/1.1\r\nHost: a\r\nUser-Ag")]);
    assert_eq!(summary(&out), vec![triple("GET", "/cut", None)]);
    assert!(http(&out[0]).partial);
    assert_eq!(http(&out[0]).host.as_deref(), Some("a"));
    assert_eq!(http(&out[0]).user_agent, None);
}

#[test]
fn conflicting_content_lengths_lose_framing_safely() {
    let out = run(&[
        req("GET /a HTTP/1.1\r\n\r\n"),
        resp("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello"),
        req("GET /b HTTP/1.1\r\n\r\n"),
        resp(OK_HELLO),
    ]);
    assert_eq!(
        summary(&out),
        vec![
            triple("GET", "/a", Some(200)),
            triple("GET", "/b", Some(200))
        ]
    );
    assert!(http(&out[0]).partial);
    assert!(!http(&out[1]).partial);
}

#[test]
fn skips_over_lost_framing_are_counted_once_each() {
    fn feed(session: &mut Box<dyn Session>, out: &mut Vec<Exchange>, step: Step) {
        let chunk = Chunk {
            data: &step.data,
            missing: step.missing,
            first_byte_ns: 0,
            last_byte_ns: 0,
        };
        session.feed(step.flow, chunk, out);
    }
    let mut session = Http1.new_session();
    let mut out = Vec::new();
    feed(&mut session, &mut out, req(GET));
    feed(&mut session, &mut out, resp(OK_HELLO));
    assert_eq!(
        session.take_resync_skips(),
        0,
        "a clean exchange skips nothing"
    );

    // A request starts in bytes that were not captured: skipped, and counted.
    feed(&mut session, &mut out, with_gap(req(""), 300));
    // Bytes in the middle of that unseen request are skipped too, without a second count.
    feed(&mut session, &mut out, req("ept: */*\r\n\r\n"));
    feed(&mut session, &mut out, req(GET));
    feed(&mut session, &mut out, resp(OK_HELLO));
    assert_eq!(session.take_resync_skips(), 1);
    assert_eq!(session.take_resync_skips(), 0, "taking the count resets it");
    assert_eq!(out.len(), 2, "the unseen request is not reported");

    // A response cut by the close loses its framing, but nothing after it is skipped.
    feed(&mut session, &mut out, req(GET));
    let cut = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc";
    feed(&mut session, &mut out, resp(cut));
    session.close(0, &mut out);
    assert_eq!(session.take_resync_skips(), 0);
    assert!(http(&out[2]).partial);
}
