//! Feeds arbitrary chunk sequences to a Redis session and checks that what comes out stays
//! within the decoder's bounds.
//!
//! Input layout, repeated: a control byte, a length byte, then that many data bytes.
//! Control bits: 0 = flow (request/response); 1..=3 = how many bytes go uncaptured (mostly
//! none, sometimes a few, a thousand or a megabyte); 4 = multiply the length by 64; 5..=7 =
//! the "few" of uncaptured bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use periscope::protocols::redis::{MAX_TEXT_LEN, Redis};
use periscope::protocols::{Chunk, Exchange, ExchangeDetail, Flow, Protocol};

fuzz_target!(|input: &[u8]| {
    let mut session = Redis.new_session();
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
        let _ = Redis.detect(flow, data);
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
        let ExchangeDetail::Db(db) = &exchange.detail else {
            panic!("not a database exchange");
        };
        assert!(exchange.request_start_ns <= exchange.request_end_ns);
        assert_eq!(
            exchange.response_start_ns.is_some(),
            exchange.response_end_ns.is_some()
        );
        if let (Some(start), Some(end)) = (exchange.response_start_ns, exchange.response_end_ns) {
            assert!(start <= end);
            assert!(exchange.request_start_ns <= start);
        }
        assert_eq!(db.system, "redis");
        let operation = db.operation.as_deref().expect("a command name");
        assert!(!operation.is_empty() && operation.len() <= 64);
        assert!(!operation.bytes().any(|b| b.is_ascii_lowercase()));
        let text = db.query_text.as_deref().expect("the command text");
        assert!(text.len() <= MAX_TEXT_LEN);
        assert!(
            db.namespace
                .as_ref()
                .is_some_and(|n| n.parse::<i64>().is_ok())
        );
        assert!(db.status_code.as_ref().is_none_or(|c| c.len() <= 64));
        assert!(db.error_message.as_ref().is_none_or(|m| m.len() <= 512));
        assert!(db.collection.is_none() && db.rows.is_none());
    }
}
