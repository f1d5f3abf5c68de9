//! Feeds arbitrary chunk sequences to an HTTP/2 session and checks that what comes out stays
//! within the decoder's bounds (input layout: `periscope::protocols::fuzzing`, with a first
//! byte choosing how the connection starts: bit 0, with the client preface and SETTINGS, as
//! the agent sees a new connection; otherwise joined late; the largest gap is 16 MiB).
#![no_main]

use libfuzzer_sys::fuzz_target;
use periscope::protocols::ExchangeDetail;
use periscope::protocols::fuzzing::Driver;
use periscope::protocols::http2::Http2;

const PREFACE: &[u8] =
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x06\x04\x00\x00\x00\x00\x00\x00\x01\x00\x00\x01\x00";

fuzz_target!(|input: &[u8]| {
    Driver::new(&Http2)
        .huge_gap(1 << 24)
        .opening(PREFACE)
        .check(&|exchange| {
            let ExchangeDetail::Http(http) = &exchange.detail else {
                panic!("http2 emitted a non-HTTP exchange");
            };
            assert_eq!(http.version, "2");
            for value in [&http.content_type, &http.grpc_message] {
                assert!(value.as_ref().is_none_or(|v| v.len() <= 512));
            }
            assert!(http.status.is_none_or(|s| (100..=999).contains(&s)));
            assert!(http.reset.as_ref().is_none_or(|r| r.len() <= 40));
        })
        .run(input);
});
