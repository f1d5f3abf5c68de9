//! Decoding well-formed HTTP/1.x: framings, keep-alive, pipelining, splits at every byte.
//! Helpers here are shared with `robustness_tests`.

use super::*;
use crate::protocols::replay;
use crate::protocols::replay::chunk;
pub(super) use crate::protocols::replay::{
    Step, http, http_summary as summary, req, resp, step_times, triple, with_gap,
};
use crate::protocols::replay::{bytewise, split_step};

pub(super) fn run(steps: &[Step]) -> Vec<Exchange> {
    replay::run(&Http1, steps)
}

pub(super) const GET: &str = "GET /index.html?q=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/8.5.0\r\n\
                   Accept: */*\r\n\r\n";
pub(super) const OK_HELLO: &str = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";

#[test]
fn detects_only_http1_starts() {
    assert!(Http1.detect(Flow::Request, b"GET / HTTP/1.1\r\n"));
    assert!(Http1.detect(Flow::Request, b"OPTIONS * HTTP/1.1\r\n"));
    assert!(Http1.detect(Flow::Response, b"HTTP/1.0 200 OK\r\n"));
    assert!(!Http1.detect(Flow::Request, b"GET"));
    assert!(!Http1.detect(Flow::Request, b"GETS / HTTP/1.1"));
    assert!(!Http1.detect(Flow::Request, b"get / HTTP/1.1"));
    assert!(!Http1.detect(Flow::Request, b"PRI * HTTP/2.0\r\n"));
    assert!(!Http1.detect(Flow::Response, b"HTTP/2 200\r\n"));
    assert!(!Http1.detect(Flow::Response, b"GET / HTTP/1.1\r\n"));
    assert!(!Http1.detect(Flow::Request, b""));
}

#[test]
fn simple_exchange_fields_and_timing() {
    let out = run(&[req(GET), resp(OK_HELLO)]);
    assert_eq!(out.len(), 1);
    let ex = &out[0];
    assert_eq!((ex.request_start_ns, ex.request_end_ns), (1000, 1500));
    assert_eq!(
        (ex.response_start_ns, ex.response_end_ns),
        (Some(2000), Some(2500))
    );
    let expected = HttpExchange {
        method: "GET".into(),
        target: "/index.html?q=1".into(),
        version: "1.1",
        host: Some("example.com".into()),
        user_agent: Some("curl/8.5.0".into()),
        status: Some(200),
        request_body_len: Some(0),
        response_body_len: Some(5),
        ..HttpExchange::default()
    };
    assert_eq!(http(ex), &expected);
}

#[test]
fn timing_follows_the_chunks_holding_first_and_last_bytes() {
    let out = run(&[
        req("POST /up HTTP/1.1\r\nContent-Length: 6\r\n"),
        req("\r\nabc"),
        req("def"),
        resp("HTTP/1.1 201 Created\r\n"),
        resp("Content-Length: 2\r\n\r\n"),
        resp("ok"),
    ]);
    assert_eq!(out.len(), 1);
    let ex = &out[0];
    assert_eq!((ex.request_start_ns, ex.request_end_ns), (1000, 3500));
    assert_eq!(
        (ex.response_start_ns, ex.response_end_ns),
        (Some(4000), Some(6500))
    );
    assert_eq!(http(ex).request_body_len, Some(6));
}

/// A conversation exercising most framings, for the split tests.
fn rich_conversation() -> Vec<Step> {
    vec![
        req(
            "POST /api/items HTTP/1.1\r\nHost: localhost:8080\r\nContent-Type: application/json\r\n\
             traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\
             Content-Length: 13\r\n\r\n{\"name\":\"x\"}\n",
        ),
        resp("HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"),
        req("GET /stream HTTP/1.1\r\nHost: localhost:8080\r\nTE: trailers\r\n\r\n"),
        resp(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n\
              A ; name=\"v\"\r\n0123456789\r\n0\r\nChecksum: abc\r\n\r\n",
        ),
        req("HEAD /big HTTP/1.1\r\nHost: localhost:8080\r\n\r\n\
             GET /gone HTTP/1.1\r\nHost: localhost:8080\r\n\r\n"),
        resp(
            "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n\
              HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n",
        ),
        req("PUT /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n"),
        resp("HTTP/1.1 100 Continue\r\n\r\n"),
        req("3\r\nabc\r\n0\r\n\r\n"),
        resp("HTTP/1.1 204 No Content\r\n\r\n"),
        req("GET /last HTTP/1.0\r\n\r\n"),
        resp("HTTP/1.0 200 OK\r\nServer: test\r\n\r\nuntil close"),
    ]
}

fn details(exchanges: &[Exchange]) -> Vec<HttpExchange> {
    exchanges.iter().map(http).cloned().collect()
}

#[test]
fn rich_conversation_decodes() {
    let out = run(&rich_conversation());
    assert_eq!(
        summary(&out),
        vec![
            triple("POST", "/api/items", Some(201)),
            triple("GET", "/stream", Some(200)),
            triple("HEAD", "/big", Some(200)),
            triple("GET", "/gone", Some(304)),
            triple("PUT", "/x", Some(204)),
            triple("GET", "/last", Some(200)),
        ]
    );
    let http: Vec<_> = details(&out);
    assert!(http.iter().all(|h| !h.partial));
    assert_eq!(
        http[0].traceparent.as_deref(),
        Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    );
    assert_eq!(http[0].request_body_len, Some(13));
    assert_eq!(http[1].response_body_len, Some(15));
    assert_eq!(http[2].response_body_len, Some(0));
    assert_eq!(http[3].response_body_len, Some(0));
    assert_eq!(http[4].request_body_len, Some(3));
    assert_eq!(http[5].version, "1.0");
    assert_eq!(http[5].response_body_len, Some(11));
    // The PUT's response starts with the 204, not with the 100 Continue.
    assert_eq!(out[4].response_start_ns, Some(step_times(9).0));
    assert_eq!(out[4].request_end_ns, step_times(8).1);
}

#[test]
fn every_two_way_split_gives_the_same_exchanges() {
    let steps = rich_conversation();
    let expected = details(&run(&steps));
    for index in 0..steps.len() {
        for cut in 1..steps[index].data.len() {
            let got = details(&run(&split_step(&steps, index, &[cut])));
            assert_eq!(got, expected, "step {index} split at {cut}");
        }
    }
}

#[test]
fn three_way_splits_of_a_head_give_the_same_exchanges() {
    let steps = vec![req(GET), resp(OK_HELLO)];
    let expected = details(&run(&steps));
    for index in 0..steps.len() {
        let len = steps[index].data.len();
        for a in 1..len {
            for b in a + 1..len {
                let got = details(&run(&split_step(&steps, index, &[a, b])));
                assert_eq!(got, expected, "step {index} split at {a} and {b}");
            }
        }
    }
}

#[test]
fn one_byte_chunks_give_the_same_exchanges() {
    let steps = rich_conversation();
    let expected = details(&run(&steps));
    let out = run(&bytewise(&steps));
    assert_eq!(details(&out), expected);
    // The first exchange starts with the very first byte and its request ends with the
    // request's last byte, which is the last of the first step's chunks.
    assert_eq!(out[0].request_start_ns, step_times(0).0);
    assert_eq!(out[0].request_end_ns, step_times(steps[0].data.len() - 1).1);
}

#[test]
fn keep_alive_many_exchanges() {
    let mut steps = Vec::new();
    for i in 0..20 {
        steps.push(req(format!("GET /item/{i} HTTP/1.1\r\nHost: h\r\n\r\n")));
        steps.push(resp(OK_HELLO));
    }
    let out = run(&steps);
    assert_eq!(out.len(), 20);
    for (i, ex) in out.iter().enumerate() {
        assert_eq!(http(ex).target, format!("/item/{i}"));
        assert_eq!(ex.request_start_ns, step_times(2 * i).0);
        assert_eq!(ex.response_end_ns, Some(step_times(2 * i + 1).1));
    }
}

#[test]
fn pipelined_requests_match_responses_in_order() {
    let out = run(&[
        req("GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\nGET /c HTTP/1.1\r\n\r\n"),
        resp(
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\naHTTP/1.1 404 Not Found\r\n\
              Content-Length: 1\r\n\r\nb",
        ),
        resp("HTTP/1.1 500 Oops\r\nContent-Length: 1\r\n\r\nc"),
    ]);
    assert_eq!(
        summary(&out),
        vec![
            triple("GET", "/a", Some(200)),
            triple("GET", "/b", Some(404)),
            triple("GET", "/c", Some(500))
        ]
    );
    assert!(
        out.iter()
            .all(|e| e.request_start_ns == 1000 && e.request_end_ns == 1500)
    );
    assert_eq!(out[2].response_start_ns, Some(3000));
}

#[test]
fn interim_responses_do_not_complete_the_exchange() {
    let out = run(&[
        req("GET / HTTP/1.1\r\n\r\n"),
        resp("HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"),
        resp(OK_HELLO),
    ]);
    assert_eq!(summary(&out), vec![triple("GET", "/", Some(200))]);
    assert_eq!(out[0].response_start_ns, Some(3000));
}

#[test]
fn head_204_304_have_no_body_despite_content_length() {
    let out = run(&[
        req("HEAD /f HTTP/1.1\r\n\r\n"),
        resp("HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"),
        req("DELETE /f HTTP/1.1\r\n\r\n"),
        resp("HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n"),
        req("GET /f HTTP/1.1\r\nIf-None-Match: \"x\"\r\n\r\n"),
        resp("HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n"),
        req("GET /g HTTP/1.1\r\n\r\n"),
        resp(OK_HELLO),
    ]);
    assert_eq!(
        summary(&out),
        vec![
            triple("HEAD", "/f", Some(200)),
            triple("DELETE", "/f", Some(204)),
            triple("GET", "/f", Some(304)),
            triple("GET", "/g", Some(200)),
        ]
    );
    assert!(out.iter().all(|e| !http(e).partial));
}

#[test]
fn close_delimited_response_ends_at_close() {
    let out = run(&[
        req("GET / HTTP/1.0\r\n\r\n"),
        resp("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nfirst part "),
        resp("second part"),
    ]);
    assert_eq!(out.len(), 1);
    assert_eq!(http(&out[0]).response_body_len, Some(22));
    assert_eq!(out[0].response_end_ns, Some(3500));
    assert!(!http(&out[0]).partial);
}

#[test]
fn request_without_response_is_emitted_at_close() {
    let out = run(&[req(GET), resp(OK_HELLO), req("GET /never HTTP/1.1\r\n\r\n")]);
    assert_eq!(
        summary(&out),
        vec![
            triple("GET", "/index.html?q=1", Some(200)),
            triple("GET", "/never", None)
        ]
    );
    assert_eq!(out[1].response_start_ns, None);
    assert_eq!(out[1].response_end_ns, None);
    assert_eq!(out[1].request_end_ns, 3500);
}

#[test]
fn transfer_encoding_wins_over_content_length() {
    let out = run(&[
        req(
            "POST /p HTTP/1.1\r\nContent-Length: 100\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
             2\r\nhi\r\n0\r\n\r\nGET /q HTTP/1.1\r\n\r\n",
        ),
        resp(
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n",
        ),
        resp(OK_HELLO),
    ]);
    assert_eq!(
        summary(&out),
        vec![
            triple("POST", "/p", Some(200)),
            triple("GET", "/q", Some(200))
        ]
    );
    assert_eq!(http(&out[0]).request_body_len, Some(2));
    assert_eq!(http(&out[0]).response_body_len, Some(1));
}

#[test]
fn switching_protocols_ends_http_on_the_connection() {
    let out = run(&[
        req("GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"),
        resp("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\u{81}\u{5}hello"),
        req("GET /not-http-anymore HTTP/1.1\r\n\r\n"),
        resp(OK_HELLO),
    ]);
    assert_eq!(summary(&out), vec![triple("GET", "/ws", Some(101))]);
}

#[test]
fn connect_tunnel_ends_http_on_the_connection() {
    let out = run(&[
        req("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"),
        resp("HTTP/1.1 200 Connection Established\r\n\r\n"),
        req("\u{16}\u{3}\u{1}\u{2}\u{0}tls"),
        resp("\u{16}\u{3}\u{3}tls"),
    ]);
    assert_eq!(
        summary(&out),
        vec![triple("CONNECT", "example.com:443", Some(200))]
    );
}

#[test]
fn bare_line_feeds_and_leading_blank_lines_are_tolerated() {
    let out = run(&[
        req("\r\nGET /lf HTTP/1.1\nHost: lf\nContent-Length: 2\n\nokGET /2 HTTP/1.1\n\n"),
        resp(
            "HTTP/1.1 200 OK\nContent-Length: 1\n\nx\r\nHTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",
        ),
    ]);
    assert_eq!(
        summary(&out),
        vec![
            triple("GET", "/lf", Some(200)),
            triple("GET", "/2", Some(200))
        ]
    );
    assert!(out.iter().all(|e| !http(e).partial));
}

#[test]
fn header_names_are_case_insensitive_and_first_value_wins() {
    let out = run(&[
        req(
            "GET / HTTP/1.1\r\nhOsT: one\r\nHost: two\r\nTRACEPARENT: 00-aa-bb-01\r\n\
             TraceState: k=v\r\nX-Other: y\r\n\r\n",
        ),
        resp(OK_HELLO),
    ]);
    let h = http(&out[0]);
    assert_eq!(h.host.as_deref(), Some("one"));
    assert_eq!(h.traceparent.as_deref(), Some("00-aa-bb-01"));
    assert_eq!(h.tracestate.as_deref(), Some("k=v"));
}

#[test]
fn session_is_reusable_after_close() {
    let mut session = Http1Session::new();
    let mut out = Vec::new();
    for round in 0..2u64 {
        for (flow, data) in [(Flow::Request, GET), (Flow::Response, OK_HELLO)] {
            session.feed(flow, chunk(data.as_bytes(), round, round), &mut out);
        }
        session.close(round, &mut out);
    }
    assert_eq!(out.len(), 2);
}

#[test]
fn response_prefix_narrows_only_while_heads_alone_frame_the_responses() {
    fn feed(session: &mut Http1Session, out: &mut Vec<Exchange>, step: Step) {
        let chunk = Chunk {
            missing: step.missing,
            ..chunk(&step.data, 0, 0)
        };
        session.feed(step.flow, chunk, out);
    }
    let big = "HTTP/1.1 200 OK\r\nContent-Length: 4096\r\n\r\n";
    let start = || {
        let mut session = Http1Session::new();
        let mut out = Vec::new();
        for n in 0..4 {
            assert_eq!(
                session.response_prefix_needed().map(|p| p.bytes),
                None,
                "after {n} responses"
            );
            feed(&mut session, &mut out, req(GET));
            // The body mostly uncaptured, as under a narrowed prefix.
            feed(
                &mut session,
                &mut out,
                with_gap(resp(format!("{big}abc")), 4093),
            );
        }
        assert_eq!(out.len(), 4);
        (session, out)
    };
    let (mut session, mut out) = start();
    assert_eq!(session.response_prefix_needed().map(|p| p.bytes), Some(512));
    feed(&mut session, &mut out, req(GET));
    feed(&mut session, &mut out, resp(OK_HELLO));
    assert_eq!(
        session.response_prefix_needed().map(|p| p.bytes),
        Some(512),
        "a small answer fits too"
    );

    // Responses that a prefix could cut: pipelined (the second head is mid-chunk), chunked,
    // or a head spread over two chunks.
    let pipelined = [
        req(format!("{GET}{GET}")),
        resp(format!("{OK_HELLO}{OK_HELLO}")),
    ];
    let chunked = [
        req(GET),
        resp("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
    ];
    let split = [
        req(GET),
        resp("HTTP/1.1 200 OK\r\n"),
        resp("Content-Length: 0\r\n\r\n"),
    ];
    for steps in [&pipelined[..], &chunked[..], &split[..]] {
        let (mut session, mut out) = start();
        for step in steps {
            feed(&mut session, &mut out, step.clone());
        }
        assert_eq!(
            session.response_prefix_needed().map(|p| p.bytes),
            None,
            "{steps:?}"
        );
        for _ in 0..8 {
            feed(&mut session, &mut out, req(GET));
            feed(&mut session, &mut out, resp(OK_HELLO));
        }
        assert_eq!(
            session.response_prefix_needed().map(|p| p.bytes),
            None,
            "for good: {steps:?}"
        );
        assert!(out.iter().all(|e| http(e).status == Some(200)));
    }
}
