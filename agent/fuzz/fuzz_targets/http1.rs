//! Feeds arbitrary chunk sequences to an HTTP/1.x session and checks that what comes out
//! stays within the decoder's bounds.
//!
//! Input layout, repeated: a control byte, a length byte, then that many data bytes.
//! Control bits: 0 = flow (request/response); 1..=3 = how many bytes go uncaptured (mostly
//! none, sometimes a few, a thousand or a megabyte); 4 = multiply the length by 64 (to reach
//! the header size limit quickly); 5..=7 = the "few" of uncaptured bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use periscope::protocols::http1::Http1;
use periscope::protocols::{Chunk, Exchange, ExchangeDetail, Flow, Protocol};

fuzz_target!(|input: &[u8]| {
    let mut session = Http1.new_session();
    let mut out = Vec::new();
    let mut rest = input;
    let mut now = 0u64;
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
            _ => 1 << 20,
        };
        let len = usize::from(*len) * if control & 0x10 != 0 { 64 } else { 1 };
        let (data, tail) = tail.split_at(len.min(tail.len()));
        rest = tail;
        let _ = Http1.detect(flow, data);
        now += 10;
        let chunk = Chunk {
            data,
            missing,
            first_byte_ns: now,
            last_byte_ns: now + 5,
        };
        session.feed(flow, chunk, &mut out);
        check(&out);
        out.clear();
    }
    session.close(now + 100, &mut out);
    check(&out);
});

fn check(exchanges: &[Exchange]) {
    for exchange in exchanges {
        let ExchangeDetail::Http(http) = &exchange.detail else {
            panic!("http1 emitted a non-HTTP exchange");
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
        assert!(matches!(http.version.as_str(), "" | "1.0" | "1.1"));
        for value in [
            &http.host,
            &http.user_agent,
            &http.traceparent,
            &http.tracestate,
        ] {
            assert!(value.as_ref().is_none_or(|v| v.len() <= 512));
        }
        assert_eq!(http.status.is_some(), exchange.response_start_ns.is_some());
    }
}
