//! Decoding well-formed HTTP/2: frames, padding, CONTINUATION, HPACK, streams, gRPC, splits
//! at every byte. Helpers here are shared with `robustness_tests`.

use super::frame::{FLAG_PRIORITY, PING, PRIORITY, WINDOW_UPDATE};
use super::*;
use crate::protocols::replay;
pub(super) use crate::protocols::replay::{
    Step, http, http_summary as summary, req, resp, triple, with_gap,
};
use crate::protocols::replay::{bytewise, details};

pub(super) const END_STREAM: u8 = FLAG_END_STREAM;
pub(super) const END_HEADERS: u8 = FLAG_END_HEADERS;

pub(super) fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut bytes = len.to_be_bytes()[1..].to_vec();
    bytes.push(kind);
    bytes.push(flags);
    bytes.extend_from_slice(&stream.to_be_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

pub(super) fn headers(stream: u32, flags: u8, block: &[u8]) -> Vec<u8> {
    frame(HEADERS, flags, stream, block)
}

pub(super) fn data(stream: u32, flags: u8, body: &[u8]) -> Vec<u8> {
    frame(DATA, flags, stream, body)
}

pub(super) fn settings(values: &[(u16, u32)]) -> Vec<u8> {
    let mut payload = Vec::new();
    for (id, value) in values {
        payload.extend_from_slice(&id.to_be_bytes());
        payload.extend_from_slice(&value.to_be_bytes());
    }
    frame(SETTINGS, 0, 0, &payload)
}

pub(super) fn rst(stream: u32, code: u32) -> Vec<u8> {
    frame(RST_STREAM, 0, stream, &code.to_be_bytes())
}

pub(super) fn goaway(last: u32, code: u32) -> Vec<u8> {
    let mut payload = last.to_be_bytes().to_vec();
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(b"bye");
    frame(GOAWAY, 0, 0, &payload)
}

/// An HPACK literal field without indexing, with a new name (short strings only).
pub(super) fn lit(name: &str, value: &str) -> Vec<u8> {
    let mut bytes = vec![0x00, name.len() as u8];
    bytes.extend_from_slice(name.as_bytes());
    bytes.push(value.len() as u8);
    bytes.extend_from_slice(value.as_bytes());
    bytes
}

/// An HPACK literal field with incremental indexing, name from static table entry `index`.
pub(super) fn lit_indexed(index: u8, value: &str) -> Vec<u8> {
    let mut bytes = vec![0x40 | index, value.len() as u8];
    bytes.extend_from_slice(value.as_bytes());
    bytes
}

/// `:method GET`, `:path /`, `:scheme http` from the static table, then `extra`.
pub(super) fn get_root(extra: &[u8]) -> Vec<u8> {
    let mut block = vec![0x82, 0x84, 0x86];
    block.extend_from_slice(extra);
    block
}

/// `:method POST`, `:scheme http`, a literal `:path`, then `extra`.
pub(super) fn post(path: &str, extra: &[u8]) -> Vec<u8> {
    let mut block = vec![0x83, 0x86];
    block.extend(lit(":path", path));
    block.extend_from_slice(extra);
    block
}

/// `:status 200` (static) then `extra`.
pub(super) fn ok(extra: &[u8]) -> Vec<u8> {
    let mut block = vec![0x88];
    block.extend_from_slice(extra);
    block
}

pub(super) fn preface_and_settings() -> Vec<u8> {
    let mut bytes = PREFACE.to_vec();
    bytes.extend(settings(&[(0x3, 100), (0x4, 65535)]));
    bytes
}

pub(super) fn concat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

pub(super) fn run_with_started(steps: &[Step]) -> (Vec<Exchange>, Vec<RequestStarted>) {
    replay::run_with_started(&Http2, steps)
}

pub(super) fn run(steps: &[Step]) -> Vec<Exchange> {
    replay::run(&Http2, steps)
}

/// A GET / exchange on stream 1 after the prefaces.
pub(super) fn simple_conversation() -> Vec<Step> {
    vec![
        req(concat(&[
            preface_and_settings(),
            headers(
                1,
                END_STREAM | END_HEADERS,
                &get_root(&concat(&[
                    lit(":authority", "example.com"),
                    lit("user-agent", "curl/8.5.0"),
                    lit(
                        "traceparent",
                        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                    ),
                ])),
            ),
        ])),
        resp(concat(&[
            settings(&[(0x3, 128)]),
            frame(SETTINGS, FLAG_ACK, 0, &[]),
        ])),
        req(frame(SETTINGS, FLAG_ACK, 0, &[])),
        resp(headers(
            1,
            END_HEADERS,
            &ok(&lit("content-type", "text/plain")),
        )),
        resp(data(1, 0, b"hello ")),
        resp(data(1, END_STREAM, b"world")),
    ]
}

#[test]
fn detects_the_preface_and_its_first_line() {
    assert!(Http2.detect(Flow::Request, PREFACE));
    assert!(Http2.detect(Flow::Request, &preface_and_settings()));
    assert!(Http2.detect(Flow::Request, b"PRI * HTTP/2.0"));
    assert!(Http2.detect(Flow::Request, b"PRI * HTTP/2.0\r\n\r\nSM"));
    assert!(!Http2.detect(Flow::Request, b"PRI * HTTP/2"));
    assert!(!Http2.detect(Flow::Request, b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n"));
    assert!(!Http2.detect(Flow::Response, PREFACE));
}

#[test]
fn does_not_detect_other_protocols() {
    let others: &[&[u8]] = &[
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"PRI * HTTP/1.1\r\n\r\n",
        b"*1\r\n$4\r\nPING\r\n",
        b"+OK\r\n",
        b"\x00\x00\x00\x08\x04\xd2\x16\x2f",
        b"\x00\x00\x00\x54\x00\x03\x00\x00user\x00postgres\x00\x00",
        b"Q\x00\x00\x00\x0dSELECT 1\x00",
        b"\x01\x00\x00\x00\x01",
        b">\x00\x00\x00\x03SELECT id FROM items",
        b"\x4a\x00\x00\x00\x0a8.0.36\x00",
        // A MySQL login packet of 256 bytes: "length" 256, "type" HEADERS (sequence 1).
        &[
            &[0x00, 0x01, 0x00, 0x01, 0x85, 0xa6, 0xff, 0x01][..],
            &[0u8; 256][..],
        ]
        .concat(),
        b"",
        b"\x00\x00\x00",
    ];
    for flow in [Flow::Request, Flow::Response] {
        for bytes in others {
            assert!(!Http2.detect(flow, bytes), "{flow} {bytes:?}");
        }
    }
}

#[test]
fn detects_an_established_connection_by_its_frames() {
    let request = concat(&[
        frame(WINDOW_UPDATE, 0, 0, &[0, 0, 0x10, 0]),
        headers(7, END_STREAM | END_HEADERS, &get_root(&[])),
    ]);
    assert!(Http2.detect(Flow::Request, &request));
    assert!(!Http2.detect(Flow::Response, &request));

    let response = concat(&[headers(7, END_HEADERS, &ok(&[])), data(7, END_STREAM, b"x")]);
    assert!(Http2.detect(Flow::Response, &response));
    assert!(!Http2.detect(Flow::Request, &response));

    // A server's SETTINGS frame.
    let server_settings = settings(&[(0x3, 100), (0x5, 16384)]);
    assert!(Http2.detect(Flow::Response, &server_settings));
    assert!(!Http2.detect(Flow::Request, &server_settings));

    // Frames alone are not enough, nor are HEADERS with a reserved bit or unknown flags.
    assert!(!Http2.detect(Flow::Request, &data(1, 0, b"abc")));
    assert!(!Http2.detect(Flow::Response, &frame(WINDOW_UPDATE, 0, 0, &[0, 0, 1, 0])));
    let mut reserved = headers(1, END_HEADERS, &get_root(&[]));
    reserved[5] |= 0x80;
    assert!(!Http2.detect(Flow::Request, &reserved));
    assert!(!Http2.detect(Flow::Request, &headers(1, 0x40, &get_root(&[]))));
    // A plausible first frame followed by garbage.
    let garbage = concat(&[
        headers(1, END_HEADERS, &get_root(&[])),
        b"GET / HTTP/1.1\r\n".to_vec(),
    ]);
    assert!(!Http2.detect(Flow::Request, &garbage));
}

#[test]
fn a_simple_exchange_is_decoded_with_timing() {
    let (out, started) = run_with_started(&simple_conversation());
    assert_eq!(out.len(), 1);
    let e = &out[0];
    let h = http(e);
    assert_eq!(summary(&out), vec![triple("GET", "/", Some(200))]);
    assert_eq!(h.version, "2");
    assert_eq!(h.host.as_deref(), Some("example.com"));
    assert_eq!(h.user_agent.as_deref(), Some("curl/8.5.0"));
    assert_eq!(
        h.traceparent.as_deref(),
        Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    );
    assert_eq!(h.request_body_len, Some(0));
    assert_eq!(h.response_body_len, Some(11));
    assert_eq!(
        h.content_type, None,
        "content-type is the request's, if it has one"
    );
    assert!(!h.partial);
    assert_eq!(h.reset, None);
    assert_eq!((e.request_start_ns, e.request_end_ns), (1000, 1500));
    assert_eq!(
        (e.response_start_ns, e.response_end_ns),
        (Some(4000), Some(6500))
    );
    assert_eq!(started.len(), 1);
    assert_eq!(started[0].request_start_ns, e.request_start_ns);
    assert_eq!(started[0].traceparent, h.traceparent);
}

#[test]
fn splitting_at_every_byte_changes_nothing() {
    let steps = simple_conversation();
    assert_eq!(details(&run(&steps)), details(&run(&bytewise(&steps))));
}

#[test]
fn padding_and_priority_are_stripped() {
    let block = get_root(&lit(":authority", "h"));
    // HEADERS with PADDED (3 bytes of padding) and PRIORITY (5 bytes).
    let mut payload = vec![3];
    payload.extend_from_slice(&[0x80, 0, 0, 0, 15]);
    payload.extend_from_slice(&block);
    payload.extend_from_slice(&[0, 0, 0]);
    let padded_headers = frame(
        HEADERS,
        END_HEADERS | FLAG_PADDED | FLAG_PRIORITY,
        1,
        &payload,
    );
    // DATA of 10 body bytes with 5 bytes of padding, then an empty padded DATA.
    let mut body = vec![5];
    body.extend_from_slice(b"0123456789");
    body.extend_from_slice(&[0; 5]);
    let out = run(&[
        req(concat(&[preface_and_settings(), padded_headers])),
        req(frame(PRIORITY, 0, 1, &[0, 0, 0, 0, 7])),
        req(frame(DATA, FLAG_PADDED | END_STREAM, 1, &[0])),
        resp(concat(&[
            headers(1, END_HEADERS, &ok(&[])),
            frame(DATA, FLAG_PADDED, 1, &body),
            data(1, END_STREAM, b""),
        ])),
    ]);
    assert_eq!(summary(&out), vec![triple("GET", "/", Some(200))]);
    let h = http(&out[0]);
    assert_eq!(h.host.as_deref(), Some("h"));
    assert_eq!(h.request_body_len, Some(0));
    assert_eq!(h.response_body_len, Some(10));
    assert!(!h.partial);
}

#[test]
fn continuation_frames_complete_a_header_block() {
    let block = get_root(&concat(&[
        lit(":authority", "example.com"),
        lit("user-agent", "split-agent"),
    ]));
    let (a, rest) = block.split_at(4);
    let (b, c) = rest.split_at(9);
    let out = run(&[
        req(concat(&[
            preface_and_settings(),
            headers(1, END_STREAM, a),
            frame(CONTINUATION, 0, 1, b),
        ])),
        req(frame(CONTINUATION, END_HEADERS, 1, c)),
        resp(concat(&[headers(1, END_HEADERS | END_STREAM, &ok(&[]))])),
    ]);
    assert_eq!(summary(&out), vec![triple("GET", "/", Some(200))]);
    let h = http(&out[0]);
    assert_eq!(h.user_agent.as_deref(), Some("split-agent"));
    assert_eq!(out[0].request_start_ns, 1000);
    assert_eq!(out[0].request_end_ns, 2500);
    assert!(!h.partial);
}

#[test]
fn a_header_block_interrupted_by_another_frame_is_not_believed() {
    let block = get_root(&lit("user-agent", "never-finished"));
    let out = run(&[
        req(concat(&[
            preface_and_settings(),
            headers(1, END_STREAM, &block[..2]),
        ])),
        // Not a CONTINUATION: the block is abandoned and the stream never opens.
        req(frame(PING, 0, 0, &[0; 8])),
        req(headers(3, END_STREAM | END_HEADERS, &get_root(&[]))),
        resp(headers(3, END_STREAM | END_HEADERS, &ok(&[]))),
    ]);
    assert_eq!(summary(&out), vec![triple("GET", "/", Some(200))]);
    // HPACK state was lost with the abandoned block (it may have added entries), but this
    // block uses none.
    assert!(!http(&out[0]).partial);
}

#[test]
fn huffman_strings_and_dynamic_table_references_decode() {
    // RFC 7541 C.4: three requests with Huffman-coded literals, each referencing entries the
    // previous ones added.
    let c41 = [
        0x82, 0x86, 0x84, 0x41, 0x8c, 0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90,
        0xf4, 0xff,
    ];
    let c42 = [
        0x82, 0x86, 0x84, 0xbe, 0x58, 0x86, 0xa8, 0xeb, 0x10, 0x64, 0x9c, 0xbf,
    ];
    let c43 = [
        0x82, 0x87, 0x85, 0xbf, 0x40, 0x88, 0x25, 0xa8, 0x49, 0xe9, 0x5b, 0xa9, 0x7d, 0x7f, 0x89,
        0x25, 0xa8, 0x49, 0xe9, 0x5b, 0xb8, 0xe8, 0xb4, 0xbf,
    ];
    let out = run(&[
        req(concat(&[
            preface_and_settings(),
            headers(1, END_STREAM | END_HEADERS, &c41),
        ])),
        req(headers(3, END_STREAM | END_HEADERS, &c42)),
        req(headers(5, END_STREAM | END_HEADERS, &c43)),
        resp(headers(1, END_STREAM | END_HEADERS, &ok(&[]))),
        resp(headers(3, END_STREAM | END_HEADERS, &[0x8d])), // 404
        resp(headers(5, END_STREAM | END_HEADERS, &[0x8e])), // 500
    ]);
    assert_eq!(
        summary(&out),
        vec![
            triple("GET", "/", Some(200)),
            triple("GET", "/", Some(404)),
            triple("GET", "/index.html", Some(500)),
        ]
    );
    for e in &out {
        assert_eq!(http(e).host.as_deref(), Some("www.example.com"));
        assert!(!http(e).partial);
    }
}

/// Two requests on a connection whose server allows a dynamic table of `table_size`: the
/// first shrinks the table to 100 octets (if there is a size) and adds user-agent (51
/// octets); the second adds
/// :authority (53 octets), which evicts it, then references index 63 where user-agent would
/// be without the eviction.
fn eviction_conversation(table_size: Option<u32>) -> Vec<Exchange> {
    let (server_settings, mut first) = match table_size {
        Some(size) => (settings(&[(0x1, size)]), vec![0x3f, 0x45]), // size update: 100
        None => (settings(&[]), Vec::new()),
    };
    first.extend(get_root(&lit_indexed(58, "agent-one")));
    let mut second = get_root(&lit_indexed(1, "example.com"));
    second.push(0xbf);
    run(&[
        req(preface_and_settings()),
        resp(server_settings),
        req(headers(1, END_STREAM | END_HEADERS, &first)),
        req(headers(3, END_STREAM | END_HEADERS, &second)),
        resp(headers(1, END_STREAM | END_HEADERS, &ok(&[]))),
        resp(headers(3, END_STREAM | END_HEADERS, &ok(&[]))),
    ])
}

#[test]
fn settings_header_table_size_bounds_the_other_direction_and_evictions_follow() {
    // The server allows 100 octets: the client's size update is legal and user-agent is
    // evicted by the time the second request references it.
    let out = eviction_conversation(Some(100));
    assert_eq!(summary(&out).len(), 2);
    assert_eq!(http(&out[0]).user_agent.as_deref(), Some("agent-one"));
    assert!(!http(&out[0]).partial);
    assert_eq!(http(&out[1]).host.as_deref(), Some("example.com"));
    assert_eq!(http(&out[1]).user_agent, None, "index 63 was evicted");
    assert!(http(&out[1]).partial);

    // Without the SETTINGS and the size update the table keeps 4096 octets: no eviction.
    let out = eviction_conversation(None);
    assert_eq!(http(&out[1]).user_agent.as_deref(), Some("agent-one"));
    assert!(!http(&out[1]).partial);

    // A server that allows only 50 octets makes the size update to 100 a decoding error: the
    // first block yields nothing (not even :method), the second no user-agent.
    let out = eviction_conversation(Some(50));
    assert_eq!(summary(&out), vec![triple("GET", "/", Some(200))]);
    assert!(http(&out[0]).partial);
    assert_eq!(http(&out[0]).host.as_deref(), Some("example.com"));
    assert_eq!(http(&out[0]).user_agent, None);
}

#[test]
fn a_dynamic_table_size_update_to_zero_empties_the_table() {
    let out = run(&[
        req(concat(&[
            preface_and_settings(),
            headers(
                1,
                END_STREAM | END_HEADERS,
                &get_root(&lit_indexed(58, "agent-one")),
            ),
        ])),
        // Size update to 0 then back to 4096, then a reference to index 62.
        req(headers(
            3,
            END_STREAM | END_HEADERS,
            &[0x20, 0x3f, 0xe1, 0x1f, 0x82, 0x84, 0xbe],
        )),
        req(headers(5, END_STREAM | END_HEADERS, &[0x82, 0x84, 0xbe])),
        resp(headers(1, END_STREAM | END_HEADERS, &ok(&[]))),
        resp(headers(3, END_STREAM | END_HEADERS, &ok(&[]))),
        resp(headers(5, END_STREAM | END_HEADERS, &ok(&[]))),
    ]);
    assert_eq!(summary(&out).len(), 3);
    assert!(!http(&out[0]).partial);
    // Index 62 no longer exists: the block fails, and the state is rebuilt after it.
    assert!(http(&out[1]).partial);
    assert!(http(&out[2]).partial);
}

#[test]
fn interleaved_streams_make_one_exchange_each() {
    let out = run(&[
        req(concat(&[
            preface_and_settings(),
            headers(
                1,
                END_HEADERS,
                &post("/upload/a", &lit("content-type", "text/plain")),
            ),
            headers(3, END_HEADERS, &post("/upload/b", &[])),
            data(1, 0, b"aaaa"),
            headers(5, END_STREAM | END_HEADERS, &get_root(&[])),
            data(3, 0, b"bb"),
        ])),
        resp(concat(&[
            headers(5, END_STREAM | END_HEADERS, &[0x89]), // 204
            headers(3, END_HEADERS, &ok(&[])),
        ])),
        req(concat(&[
            data(3, END_STREAM, b"bbb"),
            data(1, END_STREAM, b"a"),
        ])),
        resp(concat(&[
            data(3, 0, b"xx"),
            headers(1, END_HEADERS, &[0x8c]), // 400
            data(1, END_STREAM, b"bad"),
            data(3, END_STREAM, b"yyy"),
        ])),
    ]);
    assert_eq!(
        summary(&out),
        vec![
            triple("GET", "/", Some(204)),
            triple("POST", "/upload/a", Some(400)),
            triple("POST", "/upload/b", Some(200)),
        ]
    );
    let bodies: Vec<_> = out
        .iter()
        .map(|e| (http(e).request_body_len, http(e).response_body_len))
        .collect();
    assert_eq!(
        bodies,
        vec![(Some(0), Some(0)), (Some(5), Some(3)), (Some(5), Some(5))]
    );
    assert_eq!(http(&out[1]).content_type.as_deref(), Some("text/plain"));
    assert!(out.iter().all(|e| !http(e).partial));
    // Stream 3's response began in step 1 and ended in step 3.
    assert_eq!(
        (out[2].response_start_ns, out[2].response_end_ns),
        (Some(2000), Some(4500))
    );
    assert_eq!(out[2].request_end_ns, 3500);
}

#[test]
fn interim_responses_are_skipped() {
    let out = run(&[
        req(concat(&[
            preface_and_settings(),
            headers(
                1,
                END_HEADERS,
                &post("/big", &lit("expect", "100-continue")),
            ),
        ])),
        resp(headers(1, END_HEADERS, &lit(":status", "100"))),
        req(data(1, END_STREAM, b"payload")),
        resp(headers(1, END_HEADERS, &lit(":status", "103"))),
        resp(headers(1, END_HEADERS | END_STREAM, &lit(":status", "201"))),
    ]);
    assert_eq!(summary(&out), vec![triple("POST", "/big", Some(201))]);
    assert_eq!(out[0].response_start_ns, Some(5000));
}

#[test]
fn rst_stream_ends_the_exchange_with_the_error_name() {
    let out = run(&[
        req(concat(&[
            preface_and_settings(),
            headers(1, END_STREAM | END_HEADERS, &get_root(&[])),
            headers(3, END_STREAM | END_HEADERS, &post("/slow", &[])),
        ])),
        resp(headers(1, END_HEADERS, &ok(&[]))),
        req(rst(1, 0x8)),
        resp(rst(3, 0x7)),
        // Frames for the reset stream afterwards are ignored.
        resp(data(1, END_STREAM, b"late")),
        req(headers(5, END_HEADERS, &post("/early", &[]))),
        resp(concat(&[
            headers(5, END_HEADERS, &[0x8c]),
            data(5, END_STREAM, b"no"),
        ])),
        // A reset that ends a stream whose response was complete is not an error.
        resp(rst(5, 0x0)),
    ]);
    assert_eq!(
        summary(&out),
        vec![
            triple("GET", "/", Some(200)),
            triple("POST", "/slow", None),
            triple("POST", "/early", Some(400)),
        ]
    );
    assert_eq!(http(&out[0]).reset.as_deref(), Some("CANCEL"));
    assert_eq!(http(&out[1]).reset.as_deref(), Some("REFUSED_STREAM"));
    assert_eq!(out[1].response_start_ns, None);
    assert_eq!(http(&out[2]).reset, None);
    assert_eq!(error_name(0xc), "INADEQUATE_SECURITY");
    assert_eq!(error_name(0x77), "0x77");
}

#[test]
fn goaway_ends_the_streams_it_did_not_process() {
    let out = run(&[
        req(concat(&[
            preface_and_settings(),
            headers(1, END_STREAM | END_HEADERS, &get_root(&[])),
            headers(3, END_STREAM | END_HEADERS, &get_root(&[])),
            headers(5, END_STREAM | END_HEADERS, &get_root(&[])),
            headers(7, END_STREAM | END_HEADERS, &get_root(&[])),
        ])),
        resp(concat(&[headers(1, END_HEADERS, &ok(&[])), goaway(3, 0)])),
        resp(concat(&[
            data(1, END_STREAM, b"1"),
            headers(3, END_STREAM | END_HEADERS, &ok(&[])),
        ])),
    ]);
    let resets: Vec<_> = out
        .iter()
        .map(|e| (http(e).status, http(e).reset.clone()))
        .collect();
    assert_eq!(
        resets,
        vec![
            (None, Some("GOAWAY NO_ERROR".to_owned())),
            (None, Some("GOAWAY NO_ERROR".to_owned())),
            (Some(200), None),
            (Some(200), None),
        ]
    );
}

#[test]
fn push_promise_keeps_the_hpack_state_and_is_not_reported() {
    let mut promise = vec![0, 0, 0, 2];
    promise.extend(get_root(&lit_indexed(1, "pushed.example")));
    let out = run(&[
        req(concat(&[
            preface_and_settings(),
            headers(1, END_STREAM | END_HEADERS, &get_root(&[])),
        ])),
        resp(concat(&[
            frame(PUSH_PROMISE, END_HEADERS, 1, &promise),
            // References the entry the promise added (index 62).
            headers(1, END_HEADERS, &ok(&[0x40, 0x01, b'x', 0x01, b'y', 0xbf])),
            headers(2, END_HEADERS, &ok(&[])),
            data(2, END_STREAM, b"pushed"),
            data(1, END_STREAM, b"main"),
        ])),
    ]);
    assert_eq!(summary(&out), vec![triple("GET", "/", Some(200))]);
    assert!(!http(&out[0]).partial);
    assert_eq!(http(&out[0]).response_body_len, Some(4));
}

#[test]
fn grpc_unary_calls_report_status_and_message() {
    let grpc_request = |path: &str| {
        post(
            path,
            &concat(&[
                lit(":authority", "localhost:50051"),
                lit("content-type", "application/grpc"),
                lit("te", "trailers"),
            ]),
        )
    };
    let message = [0, 0, 0, 0, 3, 0x0a, 0x01, b'x'];
    let out = run(&[
        req(concat(&[
            preface_and_settings(),
            headers(
                1,
                END_HEADERS,
                &grpc_request("/helloworld.Greeter/SayHello"),
            ),
            data(1, END_STREAM, &message),
        ])),
        resp(concat(&[
            headers(
                1,
                END_HEADERS,
                &ok(&lit("content-type", "application/grpc")),
            ),
            data(1, 0, &message),
            headers(1, END_HEADERS | END_STREAM, &lit("grpc-status", "0")),
        ])),
        req(concat(&[
            headers(3, END_HEADERS, &grpc_request("/helloworld.Greeter/Fail")),
            data(3, END_STREAM, &message),
        ])),
        // Trailers-only: the status comes with the response HEADERS.
        resp(headers(
            3,
            END_HEADERS | END_STREAM,
            &ok(&concat(&[
                lit("content-type", "application/grpc"),
                lit("grpc-status", "5"),
                lit("grpc-message", "no%20such%20name: %E2%9C%93 %zz"),
            ])),
        )),
    ]);
    assert_eq!(
        summary(&out),
        vec![
            triple("POST", "/helloworld.Greeter/SayHello", Some(200)),
            triple("POST", "/helloworld.Greeter/Fail", Some(200)),
        ]
    );
    let (a, b) = (http(&out[0]), http(&out[1]));
    assert_eq!(a.content_type.as_deref(), Some("application/grpc"));
    assert_eq!(a.host.as_deref(), Some("localhost:50051"));
    assert_eq!((a.grpc_status, a.grpc_message.as_deref()), (Some(0), None));
    assert_eq!(a.request_body_len, Some(8));
    assert_eq!(a.response_body_len, Some(8));
    assert_eq!(
        (b.grpc_status, b.grpc_message.as_deref()),
        (Some(5), Some("no such name: ✓ %zz"))
    );
    assert!(!a.partial && !b.partial);
}

#[test]
fn grpc_server_streaming_is_one_exchange() {
    let message = [0, 0, 0, 0, 2, 0x08, 0x01];
    let mut steps = vec![
        req(concat(&[
            preface_and_settings(),
            headers(
                1,
                END_HEADERS,
                &post(
                    "/svc/Stream",
                    &lit("content-type", "application/grpc+proto"),
                ),
            ),
            data(1, END_STREAM, &message),
        ])),
        resp(headers(
            1,
            END_HEADERS,
            &ok(&lit("content-type", "application/grpc")),
        )),
    ];
    for _ in 0..20 {
        steps.push(resp(data(1, 0, &message)));
        steps.push(req(frame(WINDOW_UPDATE, 0, 0, &[0, 0, 0, 7])));
    }
    steps.push(resp(headers(
        1,
        END_HEADERS | END_STREAM,
        &concat(&[lit("grpc-status", "0"), lit("grpc-message", "")]),
    )));
    let out = run(&steps);
    assert_eq!(
        summary(&out),
        vec![triple("POST", "/svc/Stream", Some(200))]
    );
    let h = http(&out[0]);
    assert_eq!(h.response_body_len, Some(20 * 7));
    assert_eq!(h.grpc_status, Some(0));
    assert_eq!(h.grpc_message.as_deref(), Some(""));
    assert_eq!(out[0].response_end_ns, Some(1000 * 43 + 500));
}

#[test]
fn grpc_fields_are_ignored_for_other_content() {
    let out = run(&[
        req(concat(&[
            preface_and_settings(),
            headers(
                1,
                END_STREAM | END_HEADERS,
                &post("/x", &lit("content-type", "text/html")),
            ),
        ])),
        resp(headers(
            1,
            END_STREAM | END_HEADERS,
            &ok(&lit("grpc-status", "3")),
        )),
    ]);
    assert_eq!(http(&out[0]).grpc_status, None);
}

#[test]
fn close_emits_open_streams() {
    let out = run(&[
        req(concat(&[
            preface_and_settings(),
            headers(1, END_STREAM | END_HEADERS, &get_root(&[])),
            headers(3, END_STREAM | END_HEADERS, &post("/p", &[])),
            headers(5, END_HEADERS, &post("/upload", &[])),
        ])),
        resp(concat(&[
            headers(3, END_HEADERS, &ok(&[])),
            data(3, 0, b"part"),
        ])),
    ]);
    assert_eq!(
        summary(&out),
        vec![
            triple("GET", "/", None),
            triple("POST", "/p", Some(200)),
            triple("POST", "/upload", None),
        ]
    );
    let partial: Vec<_> = out.iter().map(|e| http(e).partial).collect();
    assert_eq!(partial, vec![false, true, true]);
    assert_eq!(out[1].response_end_ns, Some(2500));
}

#[test]
fn requests_are_reported_started_once_their_headers_are_read() {
    let (_, started) = run_with_started(&[
        req(concat(&[
            preface_and_settings(),
            headers(1, END_HEADERS, &post("/a", &lit("traceparent", "tp-a"))),
        ])),
        req(headers(
            3,
            END_HEADERS,
            &post("/b", &lit("tracestate", "k=v")),
        )),
    ]);
    let got: Vec<_> = started
        .iter()
        .map(|s| {
            (
                s.request_start_ns,
                s.traceparent.as_deref(),
                s.tracestate.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![(1000, Some("tp-a"), None), (2000, None, Some("k=v"))]
    );
}
