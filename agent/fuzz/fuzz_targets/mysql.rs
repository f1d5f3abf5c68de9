//! Feeds arbitrary chunk sequences to a MySQL session and checks that what comes out stays
//! within the decoder's bounds.
//!
//! Input layout, repeated: a control byte, a length byte, then that many data bytes.
//! Control bits: 0 = flow (request/response); 1..=3 = how many bytes go uncaptured (mostly
//! none, sometimes a few, a thousand or sixteen megabytes); 4 = multiply the length by 64;
//! 5..=7 = the "few" of uncaptured bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use periscope::protocols::mysql::{MAX_QUERY_LEN, Mysql};
use periscope::protocols::{Chunk, Exchange, ExchangeDetail, Flow, Protocol};

fuzz_target!(|input: &[u8]| {
    let mut session = Mysql.new_session();
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
            _ => 1 << 24,
        };
        let len = usize::from(*len) * if control & 0x10 != 0 { 64 } else { 1 };
        let (data, tail) = tail.split_at(len.min(tail.len()));
        rest = tail;
        let _ = Mysql.detect(flow, data);
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
        assert!(db.system == "mysql" || db.system == "mariadb");
        assert!(
            db.query_text
                .as_ref()
                .is_none_or(|t| t.len() <= MAX_QUERY_LEN)
        );
        assert!(db.namespace.as_ref().is_none_or(|n| n.len() <= 256));
        assert!(db.error_message.as_ref().is_none_or(|m| m.len() <= 512));
        assert!(
            db.status_code
                .as_ref()
                .is_none_or(|c| c.parse::<u16>().is_ok())
        );
        assert_eq!(db.status_code.is_some(), db.error_message.is_some());
        assert!(db.status_code.is_none() || db.rows.is_none());
    }
}
