//! Feeds arbitrary chunk sequences to an HTTP/2 session and checks that what comes out stays
//! within the decoder's bounds.
//!
//! Input layout: a first byte choosing how the connection starts (bit 0: with the client
//! preface and SETTINGS, as the agent sees a new connection; otherwise joined late), then,
//! repeated: a control byte, a length byte, then that many data bytes.
//! Control bits: 0 = flow (request/response); 1..=3 = how many bytes go uncaptured (mostly
//! none, sometimes a few, a thousand or 16 MiB); 4 = multiply the length by 64 (to reach the
//! header block bound quickly); 5..=7 = the "few" of uncaptured bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use periscope::protocols::http2::Http2;
use periscope::protocols::{Chunk, Exchange, ExchangeDetail, Flow, Protocol, RequestStarted};

const PREFACE: &[u8] =
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x06\x04\x00\x00\x00\x00\x00\x00\x01\x00\x00\x01\x00";

fuzz_target!(|input: &[u8]| {
    let Some((&start, mut rest)) = input.split_first() else {
        return;
    };
    let mut session = Http2.new_session();
    let mut out = Vec::new();
    let mut started = Vec::new();
    let mut now = 0u64;
    if start & 1 == 1 {
        let chunk = Chunk {
            data: PREFACE,
            missing: 0,
            first_byte_ns: now,
            last_byte_ns: now + 5,
        };
        session.feed(Flow::Request, chunk, &mut out);
    }
    while let [control, len, tail @ ..] = rest {
        let flow = if control & 1 == 0 {
            Flow::Request
        } else {
            Flow::Response
        };
        let missing = match (control >> 1) & 7 {
            0..=3 => 0,
            4 | 5 => usize::from(control >> 5) + 1,
            6 => 1000,
            _ => 1 << 24,
        };
        let len = usize::from(*len) * if control & 0x10 != 0 { 64 } else { 1 };
        let (data, tail) = tail.split_at(len.min(tail.len()));
        rest = tail;
        let _ = Http2.detect(flow, data);
        now += 10;
        let chunk = Chunk {
            data,
            missing,
            first_byte_ns: now,
            last_byte_ns: now + 5,
        };
        session.feed(flow, chunk, &mut out);
        session.take_started(&mut started);
        check(&out, &started);
        out.clear();
        started.clear();
    }
    session.close(now + 100, &mut out);
    check(&out, &started);
});

fn check(exchanges: &[Exchange], started: &[RequestStarted]) {
    assert!(started.len() <= 256);
    for s in started {
        for value in [&s.traceparent, &s.tracestate] {
            assert!(value.as_ref().is_none_or(|v| v.len() <= 512));
        }
    }
    for exchange in exchanges {
        let ExchangeDetail::Http(http) = &exchange.detail else {
            panic!("http2 emitted a non-HTTP exchange");
        };
        assert!(exchange.request_start_ns <= exchange.request_end_ns);
        assert_eq!(
            exchange.response_start_ns.is_some(),
            exchange.response_end_ns.is_some()
        );
        if let (Some(start), Some(end)) = (exchange.response_start_ns, exchange.response_end_ns) {
            assert!(start <= end);
        }
        assert!(!http.method.is_empty() && http.method.len() <= 24);
        assert!(http.target.len() <= 2048);
        assert_eq!(http.version, "2");
        for value in [
            &http.host,
            &http.user_agent,
            &http.traceparent,
            &http.tracestate,
            &http.content_type,
            &http.grpc_message,
        ] {
            assert!(value.as_ref().is_none_or(|v| v.len() <= 512));
        }
        assert_eq!(http.status.is_some(), exchange.response_start_ns.is_some());
        assert!(http.status.is_none_or(|s| (100..=999).contains(&s)));
        assert!(http.reset.as_ref().is_none_or(|r| r.len() <= 40));
    }
}
