//! Lossy capture and hostile input: gaps, late joins, garbage, bounds.

use super::frame::{PING, WINDOW_UPDATE};
use super::headers::{MAX_METHOD, MAX_TARGET, MAX_VALUE};
use super::tests::*;
use super::*;
use crate::protocols::replay::{self, chunk};

#[test]
fn gaps_inside_data_are_skipped_exactly() {
    let mut big = data(1, END_STREAM, &[]);
    big[..3].copy_from_slice(&100_000u32.to_be_bytes()[1..]);
    let out = run(&[
        req(concat(&[
            preface_and_settings(),
            headers(1, END_STREAM | END_HEADERS, &get_root(&[])),
        ])),
        resp(headers(1, END_HEADERS, &ok(&[]))),
        // The DATA frame header and 10 bytes, the rest of the 100000 uncaptured.
        with_gap(resp(concat(&[big, vec![b'x'; 10]])), 60_000),
        with_gap(resp(vec![b'y'; 5]), 39_985),
        req(headers(3, END_STREAM | END_HEADERS, &get_root(&[]))),
        resp(headers(3, END_STREAM | END_HEADERS, &ok(&[]))),
    ]);
    assert_eq!(
        summary(&out),
        vec![triple("GET", "/", Some(200)), triple("GET", "/", Some(200))]
    );
    assert_eq!(http(&out[0]).response_body_len, Some(100_000));
    assert_eq!(out[0].response_end_ns, Some(4500));
    assert!(out.iter().all(|e| !http(e).partial));
}

#[test]
fn a_frame_of_the_largest_length_is_skipped_by_count() {
    let mut huge = data(1, END_STREAM, &[]);
    huge[..3].copy_from_slice(&[0xff, 0xff, 0xff]);
    let out = run(&[
        req(concat(&[
            preface_and_settings(),
            headers(1, END_HEADERS, &post("/up", &[])),
            huge,
        ])),
        with_gap(req(Vec::new()), (1 << 24) - 1),
        resp(headers(1, END_STREAM | END_HEADERS, &ok(&[]))),
    ]);
    assert_eq!(summary(&out), vec![triple("POST", "/up", Some(200))]);
    assert_eq!(http(&out[0]).request_body_len, Some((1 << 24) - 1));
    assert!(!http(&out[0]).partial);
}

#[test]
fn a_gap_inside_a_header_block_keeps_what_was_captured_and_loses_the_hpack_state() {
    let first = get_root(&concat(&[
        lit_indexed(1, "example.com"),
        lit_indexed(58, "agent-one"),
        lit("x-long", &"z".repeat(100)),
    ]));
    let cut_at = 60; // inside the x-long value
    let frame = headers(1, END_STREAM | END_HEADERS, &first);
    let out = run(&[
        req(preface_and_settings()),
        with_gap(req(&frame[..cut_at]), frame.len() - cut_at),
        // References both entries added by the first block (index 62 = user-agent, 63 =
        // :authority), and adds one of its own that the third references.
        req(headers(
            3,
            END_STREAM | END_HEADERS,
            &[
                &get_root(&[])[..],
                &[0xbe, 0xbf],
                &lit_indexed(58, "agent-two")[..],
            ]
            .concat(),
        )),
        req(headers(5, END_STREAM | END_HEADERS, &get_root(&[0xbe]))),
        resp(headers(1, END_STREAM | END_HEADERS, &ok(&[]))),
        resp(headers(3, END_STREAM | END_HEADERS, &ok(&[]))),
        resp(headers(5, END_STREAM | END_HEADERS, &ok(&[]))),
    ]);
    assert_eq!(summary(&out).len(), 3);
    let (a, b, c) = (http(&out[0]), http(&out[1]), http(&out[2]));
    // Fields wholly captured before the gap are right.
    assert_eq!(a.host.as_deref(), Some("example.com"));
    assert_eq!(a.user_agent.as_deref(), Some("agent-one"));
    assert!(a.partial);
    // Entries from before the loss are unknown, never guessed...
    assert_eq!(
        (b.host.as_deref(), b.user_agent.as_deref()),
        (None, Some("agent-two"))
    );
    assert!(b.partial);
    // ...but entries added after it are exact.
    assert_eq!(c.user_agent.as_deref(), Some("agent-two"));
    assert!(!c.partial);
}

#[test]
fn a_gap_over_a_frame_header_loses_framing_until_a_chunk_starts_with_frames() {
    let out = run(&[
        req(concat(&[
            preface_and_settings(),
            headers(1, END_STREAM | END_HEADERS, &get_root(&[])),
            headers(3, END_STREAM | END_HEADERS, &post("/open", &[])),
        ])),
        resp(headers(1, END_HEADERS, &ok(&[]))),
        // The response's DATA frame ends the chunk, then 30 bytes uncaptured: a frame header
        // is among them.
        with_gap(resp(data(1, 0, b"abc")), 30),
        // Mid-frame garbage: skipped.
        resp(b"\x17garbage that is no frame"),
        // A chunk that starts with frames: picked up again.
        resp(concat(&[
            data(1, END_STREAM, b"de"),
            headers(3, END_HEADERS | END_STREAM, &[0x8d]),
        ])),
        req(headers(5, END_STREAM | END_HEADERS, &get_root(&[]))),
        resp(headers(5, END_STREAM | END_HEADERS, &[0x89])),
    ]);
    assert_eq!(
        summary(&out),
        vec![
            triple("GET", "/", Some(200)),
            triple("POST", "/open", Some(404)),
            triple("GET", "/", Some(204)),
        ]
    );
    assert!(http(&out[0]).partial && http(&out[1]).partial);
    assert!(!http(&out[2]).partial);
}

#[test]
fn an_invalid_frame_header_in_sync_means_framing_was_lost() {
    let mut bad = frame(WINDOW_UPDATE, 0, 0, &[0, 0, 0, 1, 0, 0]); // length must be 4
    bad.extend_from_slice(&headers(1, END_HEADERS | END_STREAM, &[0x88])); // not read
    let out = run(&[
        req(concat(&[
            preface_and_settings(),
            headers(1, END_STREAM | END_HEADERS, &get_root(&[])),
        ])),
        resp(bad),
        resp(headers(1, END_HEADERS | END_STREAM, &[0x8e])),
    ]);
    assert_eq!(summary(&out), vec![triple("GET", "/", Some(500))]);
    assert!(http(&out[0]).partial);
}

#[test]
fn a_connection_joined_late_decodes_what_needs_no_earlier_state() {
    // The client's table holds entries from before the agent: index 62 (content-type) and 63
    // (:authority) are references to them.
    let first = [
        &[0x83, 0x86][..],
        &lit(":path", "/svc/Method"),
        &[0xbe, 0xbf],
        &lit_indexed(58, "grpc-python/1.0"),
        &lit(
            "traceparent",
            "00-11111111111111111111111111111111-2222222222222222-01",
        ),
    ]
    .concat();
    let steps = [
        req(concat(&[
            headers(9, END_HEADERS, &first),
            data(9, END_STREAM, b"\0\0\0\0\0"),
        ])),
        // The server's side: a DATA frame in flight, then the response.
        resp(vec![0x42; 40]),
        resp(concat(&[
            headers(9, END_HEADERS, &[0x88, 0xc0]),
            data(9, 0, b"\0\0\0\0\0"),
            headers(9, END_HEADERS | END_STREAM, &lit("grpc-status", "0")),
        ])),
        // The user-agent added by the first request is known from now on.
        req(headers(
            11,
            END_HEADERS | END_STREAM,
            &[&[0x83, 0x86, 0xbe][..], &lit(":path", "/svc/Other")].concat(),
        )),
        resp(headers(11, END_HEADERS | END_STREAM, &[0x88])),
    ];
    assert!(Http2.detect(Flow::Request, &steps[0].data));
    let (out, started) = run_with_started(&steps);
    assert_eq!(
        summary(&out),
        vec![
            triple("POST", "/svc/Method", Some(200)),
            triple("POST", "/svc/Other", Some(200)),
        ]
    );
    let (a, b) = (http(&out[0]), http(&out[1]));
    assert_eq!((a.host.as_deref(), a.content_type.as_deref()), (None, None));
    assert_eq!(a.user_agent.as_deref(), Some("grpc-python/1.0"));
    assert!(a.traceparent.is_some());
    assert_eq!(started[0].traceparent, a.traceparent);
    assert_eq!(
        a.grpc_status,
        Some(0),
        "content-type unknown: grpc-status is believed"
    );
    assert!(a.partial);
    assert_eq!(b.user_agent.as_deref(), Some("grpc-python/1.0"));
    assert!(!b.partial);
}

#[test]
fn responses_to_requests_never_seen_are_not_reported() {
    let out = run(&[
        resp(concat(&[
            headers(1, END_HEADERS, &ok(&[])),
            data(1, END_STREAM, b"orphan"),
        ])),
        req(headers(3, END_HEADERS | END_STREAM, &get_root(&[]))),
        resp(headers(3, END_HEADERS | END_STREAM, &ok(&[]))),
    ]);
    assert_eq!(summary(&out), vec![triple("GET", "/", Some(200))]);
}

#[test]
fn garbage_after_the_preface_yields_nothing() {
    let out = run(&[
        req(concat(&[
            PREFACE.to_vec(),
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ])),
        resp(b"HTTP/1.1 400 Bad Request\r\n\r\n"),
        req(b"\x00\x00\x05\x01\x04\x00\x00\x00\x01\xff\xff\xff\xff\xff"),
    ]);
    assert!(out.is_empty());
}

#[test]
fn a_header_block_larger_than_the_bound_is_decoded_as_far_as_kept() {
    let big = get_root(&concat(&[
        lit_indexed(58, "before"),
        // Many fields: the block goes past MAX_HEADER_BLOCK.
        (0..400)
            .flat_map(|i| lit(&format!("x-{i:04}"), &"v".repeat(100)))
            .collect::<Vec<_>>(),
    ]));
    assert!(big.len() > MAX_HEADER_BLOCK + 100);
    let split = big.len() / 2;
    let out = run(&[
        req(concat(&[
            preface_and_settings(),
            headers(1, END_STREAM, &big[..split]),
        ])),
        req(frame(CONTINUATION, END_HEADERS, 1, &big[split..])),
        req(headers(3, END_STREAM | END_HEADERS, &get_root(&[]))),
        resp(headers(1, END_STREAM | END_HEADERS, &ok(&[]))),
        resp(headers(3, END_STREAM | END_HEADERS, &ok(&[]))),
    ]);
    assert_eq!(summary(&out).len(), 2);
    assert_eq!(http(&out[0]).user_agent.as_deref(), Some("before"));
    assert!(http(&out[0]).partial);
    assert!(!http(&out[1]).partial);
}

#[test]
fn stored_values_are_bounded() {
    let long_path = format!("/{}", "p".repeat(5000));
    let mut block = vec![0x00, 7];
    block.extend_from_slice(b":method");
    block.push(100);
    block.extend_from_slice(&[b'M'; 100]);
    let mut long_value = |name: &str, len: usize| {
        block.extend_from_slice(&[0x00, name.len() as u8]);
        block.extend_from_slice(name.as_bytes());
        // HPACK integer with a 7-bit prefix.
        block.push(0x7f);
        let mut rest = len - 127;
        while rest >= 128 {
            block.push((rest % 128) as u8 | 0x80);
            rest /= 128;
        }
        block.push(rest as u8);
        block.extend(std::iter::repeat_n(b'\xe2', len));
    };
    long_value(":authority", 3000);
    long_value("user-agent", 3000);
    block.extend(lit(":method", "GET"));
    let mut path_block = vec![0x04, 0x7f];
    let mut rest = long_path.len() - 127;
    while rest >= 128 {
        path_block.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    path_block.push(rest as u8);
    path_block.extend_from_slice(long_path.as_bytes());
    block.extend(path_block);
    let out = run(&[
        req(concat(&[
            preface_and_settings(),
            headers(1, END_STREAM | END_HEADERS, &block),
        ])),
        resp(headers(1, END_STREAM | END_HEADERS, &ok(&[]))),
    ]);
    let h = http(&out[0]);
    assert_eq!(h.method, "GET", "an overlong method is not believed");
    assert!(h.partial);
    assert_eq!(h.target.len(), MAX_TARGET);
    assert!(h.host.as_ref().is_some_and(|v| v.len() <= MAX_VALUE));
    assert!(h.user_agent.as_ref().is_some_and(|v| v.len() <= MAX_VALUE));
}

#[test]
fn streams_beyond_the_bound_push_the_oldest_out() {
    let mut steps = vec![req(preface_and_settings())];
    for i in 0..MAX_STREAMS as u32 + 10 {
        steps.push(req(headers(
            2 * i + 1,
            END_STREAM | END_HEADERS,
            &get_root(&[]),
        )));
    }
    let mut session = Http2.new_session();
    let mut out = Vec::new();
    let mut started = Vec::new();
    for (k, step) in steps.iter().enumerate() {
        session.feed(step.flow, chunk(&step.data, k as u64, k as u64), &mut out);
    }
    assert_eq!(out.len(), 10);
    assert!(
        out.iter()
            .all(|e| http(e).partial && http(e).status.is_none())
    );
    assert_eq!(out[0].request_start_ns, 1);
    session.take_started(&mut started);
    assert_eq!(started.len(), MAX_STARTED);
    session.close(0, &mut out);
    assert_eq!(out.len(), MAX_STREAMS + 10);
}

#[test]
fn frames_for_finished_or_unknown_streams_are_ignored() {
    let out = run(&[
        req(concat(&[
            preface_and_settings(),
            headers(3, END_STREAM | END_HEADERS, &get_root(&[])),
            // Lower id after a higher one, and an even id: not new requests.
            headers(1, END_STREAM | END_HEADERS, &get_root(&[])),
            headers(4, END_STREAM | END_HEADERS, &get_root(&[])),
        ])),
        resp(concat(&[
            headers(3, END_STREAM | END_HEADERS, &ok(&[])),
            headers(3, END_STREAM | END_HEADERS, &ok(&[])),
            data(3, END_STREAM, b"x"),
            rst(3, 8),
            rst(99, 8),
            frame(PING, FLAG_ACK, 0, &[0; 8]),
            frame(0xfa, 0xff, 5, b"unknown frame type"),
            goaway(0, 2),
        ])),
    ]);
    assert_eq!(summary(&out), vec![triple("GET", "/", Some(200))]);
    assert_eq!(http(&out[0]).reset, None);
}

/// xorshift64*: deterministic pseudo-random bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn random_frames_never_panic_and_stay_bounded() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..300 {
        let mut session = Http2.new_session();
        let mut out = Vec::new();
        let mut started = Vec::new();
        if round % 3 != 0 {
            session.feed(
                Flow::Request,
                chunk(&preface_and_settings(), 0, 0),
                &mut out,
            );
        }
        for step in 0..40u64 {
            let mut bytes = Vec::new();
            for _ in 0..rng.below(4) + 1 {
                let kind = rng.below(11) as u8;
                let flags = [0, 1, 4, 5, 8, 0x20, 0x2d, 0xff][rng.below(8) as usize];
                let stream = rng.below(8) as u32;
                let len = rng.below(40) as usize;
                let mut payload: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                if kind == HEADERS && rng.below(2) == 0 {
                    payload = get_root(&lit("user-agent", "r"));
                    payload.extend((0..rng.below(6)).map(|_| rng.next() as u8 | 0x80));
                }
                bytes.extend(frame(kind, flags, stream, &payload));
            }
            if rng.below(10) == 0 {
                let cut = rng.below(bytes.len() as u64) as usize;
                bytes.truncate(cut);
            }
            let missing = match rng.below(10) {
                0 => rng.below(20) as usize,
                1 => 100_000,
                _ => 0,
            };
            let flow = if rng.below(2) == 0 {
                Flow::Request
            } else {
                Flow::Response
            };
            let _ = Http2.detect(flow, &bytes);
            session.feed(
                flow,
                Chunk {
                    missing,
                    ..chunk(&bytes, step * 10, step * 10 + 5)
                },
                &mut out,
            );
            session.take_started(&mut started);
        }
        session.close(10_000, &mut out);
        for e in &out {
            let h = http(e);
            assert!(e.request_start_ns <= e.request_end_ns);
            assert_eq!(e.response_start_ns.is_some(), e.response_end_ns.is_some());
            assert_eq!(h.status.is_some(), e.response_start_ns.is_some());
            assert!(!h.method.is_empty() && h.method.len() <= MAX_METHOD);
            assert!(h.target.len() <= MAX_TARGET);
            assert_eq!(h.version, "2");
        }
        assert!(started.len() <= MAX_STARTED * 40);
    }
}

#[test]
fn skipped_stretches_are_counted_once_each() {
    let mut steps = vec![
        req(concat(&[
            preface_and_settings(),
            headers(1, END_STREAM | END_HEADERS, &get_root(&[])),
        ])),
        resp(headers(1, END_HEADERS, &ok(&[]))),
    ];
    assert_eq!(
        replay::skips(&Http2, &steps),
        0,
        "clean frames skip nothing"
    );

    // A gap over a frame header, then mid-frame garbage: one stretch, over two chunks.
    steps.push(with_gap(resp(data(1, 0, b"abc")), 30));
    steps.push(resp(b"\x17garbage that is no frame"));
    steps.push(resp(data(1, END_STREAM, b"de")));
    assert_eq!(replay::skips(&Http2, &steps), 1);

    // A frame header no peer sends loses the framing again: a second stretch.
    let mut bad = frame(WINDOW_UPDATE, 0, 0, &[0, 0, 0, 1, 0, 0]);
    bad.extend_from_slice(&headers(3, END_HEADERS | END_STREAM, &[0x88]));
    steps.push(req(headers(3, END_STREAM | END_HEADERS, &get_root(&[]))));
    steps.push(resp(bad));
    steps.push(resp(headers(3, END_HEADERS | END_STREAM, &[0x8e])));
    assert_eq!(replay::skips(&Http2, &steps), 2);
}
