//! Feeds arbitrary chunk sequences to an HTTP/1.x session and checks that what comes out
//! stays within the decoder's bounds (input layout: `periscope::protocols::fuzzing`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use periscope::protocols::ExchangeDetail;
use periscope::protocols::fuzzing::Driver;
use periscope::protocols::http1::Http1;

fuzz_target!(|input: &[u8]| {
    Driver::new(&Http1)
        .check(&|exchange| {
            let ExchangeDetail::Http(http) = &exchange.detail else {
                panic!("http1 emitted a non-HTTP exchange");
            };
            assert!(matches!(http.version.as_str(), "" | "1.0" | "1.1"));
        })
        .run(input);
});
