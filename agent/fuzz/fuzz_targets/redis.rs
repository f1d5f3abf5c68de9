//! Feeds arbitrary chunk sequences to a Redis session and checks that what comes out stays
//! within the decoder's bounds (input layout: `periscope::protocols::fuzzing`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use periscope::protocols::ExchangeDetail;
use periscope::protocols::fuzzing::Driver;
use periscope::protocols::redis::{MAX_TEXT_LEN, Redis};

fuzz_target!(|input: &[u8]| {
    Driver::new(&Redis)
        .check(&|exchange| {
            let ExchangeDetail::Db(db) = &exchange.detail else {
                panic!("not a database exchange");
            };
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
        })
        .run(input);
});
