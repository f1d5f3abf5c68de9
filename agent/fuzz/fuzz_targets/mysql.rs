//! Feeds arbitrary chunk sequences to a MySQL session and checks that what comes out stays
//! within the decoder's bounds (input layout: `periscope::protocols::fuzzing`; the largest
//! gap is sixteen megabytes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use periscope::protocols::ExchangeDetail;
use periscope::protocols::fuzzing::Driver;
use periscope::protocols::mysql::{MAX_QUERY_LEN, Mysql};

fuzz_target!(|input: &[u8]| {
    Driver::new(&Mysql)
        .huge_gap(1 << 24)
        .check(&|exchange| {
            let ExchangeDetail::Db(db) = &exchange.detail else {
                panic!("not a database exchange");
            };
            assert!(db.system == "mysql" || db.system == "mariadb");
            assert!(
                db.query_text
                    .as_ref()
                    .is_none_or(|t| t.len() <= MAX_QUERY_LEN)
            );
            assert!(db.error_message.as_ref().is_none_or(|m| m.len() <= 512));
            assert!(
                db.status_code
                    .as_ref()
                    .is_none_or(|c| c.parse::<u16>().is_ok())
            );
            assert_eq!(db.status_code.is_some(), db.error_message.is_some());
            assert!(db.status_code.is_none() || db.rows.is_none());
        })
        .run(input);
});
