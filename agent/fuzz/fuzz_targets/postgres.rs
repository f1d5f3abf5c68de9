//! Feeds arbitrary chunk sequences to a PostgreSQL session and checks that what comes out
//! stays within the decoder's bounds; runs the SQL helpers over every text on the way.
//! Input layout: `periscope::protocols::fuzzing`, where control bit 4 means "canned": each
//! data byte picks a well-formed message of that flow (so that deep states are reached
//! quickly).
#![no_main]

use libfuzzer_sys::fuzz_target;
use periscope::protocols::fuzzing::Driver;
use periscope::protocols::postgres::Postgres;
use periscope::protocols::{Exchange, ExchangeDetail, Flow, sql};

fuzz_target!(|input: &[u8]| {
    Driver::new(&Postgres)
        .canned(&canned)
        .raw(&|raw| check_sql(&String::from_utf8_lossy(raw)))
        .check(&check)
        .run(input);
});

fn check_sql(text: &str) {
    let sanitized = sql::sanitize(text);
    assert!(sanitized.len() <= sql::MAX_SANITIZED_LEN);
    let (operation, collection) = sql::summarize(text);
    assert!(operation.is_none_or(|o| o.len() <= 32));
    assert!(collection.is_none_or(|c| c.len() <= 512));
}

fn check(exchange: &Exchange) {
    let ExchangeDetail::Db(db) = &exchange.detail else {
        panic!("not a database exchange");
    };
    assert_eq!(db.system, "postgresql");
    assert!(db.query_text.as_ref().is_none_or(|t| t.len() <= 4096));
    assert!(db.error_message.as_ref().is_none_or(|t| t.len() <= 1024));
    assert!(db.status_code.as_ref().is_none_or(|t| t.len() <= 16));
    if let Some(text) = &db.query_text {
        check_sql(text);
    }
}

fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// A well-formed message of this flow, chosen by `pick`.
fn canned(flow: Flow, pick: u8) -> Vec<u8> {
    let names: [&[u8]; 4] = [b"\0", b"s1\0", b"s2\0", b"c1\0"];
    let name = names[usize::from(pick >> 5) % 4];
    let sql: [&[u8]; 4] = [
        b"SELECT * FROM users WHERE id = $1\0",
        b"INSERT INTO t VALUES ('a', 1)\0",
        b"BEGIN; UPDATE t SET a = 1; COMMIT\0",
        b"COPY t FROM STDIN\0",
    ];
    let text = sql[usize::from(pick >> 5) % 4];
    match (flow, pick & 0x1f) {
        (Flow::Request, 0) => {
            let mut body = 196_608u32.to_be_bytes().to_vec();
            body.extend_from_slice(b"user\0u\0database\0d\0\0");
            let mut out = (body.len() as u32 + 4).to_be_bytes().to_vec();
            out.extend(body);
            out
        }
        (Flow::Request, 1) => vec![0, 0, 0, 8, 4, 0xd2, 0x16, 0x2f],
        (Flow::Request, 2) => msg(b'Q', text),
        (Flow::Request, 3) => msg(b'P', &[name, text, &[0, 0]].concat()),
        (Flow::Request, 4) => msg(
            b'B',
            &[name, name, &[0, 0, 0, 1, 0, 0, 0, 1, b'7', 0, 0]].concat(),
        ),
        (Flow::Request, 5) => msg(b'D', &[&[b'P'][..], name].concat()),
        (Flow::Request, 6) => msg(b'E', &[name, &[0, 0, 0, 2]].concat()),
        (Flow::Request, 7) => msg(b'S', &[]),
        (Flow::Request, 8) => msg(b'H', &[]),
        (Flow::Request, 9) => msg(b'C', &[&[b'S'][..], name].concat()),
        (Flow::Request, 10) => msg(b'd', b"1\tx\n"),
        (Flow::Request, 11) => msg(b'c', &[]),
        (Flow::Request, 12) => msg(b'F', &[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]),
        (Flow::Request, 13) => msg(b'p', b"secret\0"),
        (Flow::Response, 0) => msg(b'R', &[0, 0, 0, 0]),
        (Flow::Response, 1) => vec![b'N'],
        (Flow::Response, 2) => vec![b'S'],
        (Flow::Response, 3) => msg(b'Z', b"I"),
        (Flow::Response, 4) => msg(b'1', &[]),
        (Flow::Response, 5) => msg(b'2', &[]),
        (Flow::Response, 6) => msg(b'3', &[]),
        (Flow::Response, 7) => msg(
            b'T',
            &[
                0, 1, b'a', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x17, 0, 4, 0, 0, 0, 0, 0, 0,
            ],
        ),
        (Flow::Response, 8) => msg(b'D', &[0, 1, 0, 0, 0, 1, b'5']),
        (Flow::Response, 9) => msg(b'C', b"SELECT 1\0"),
        (Flow::Response, 10) => msg(b'C', b"INSERT 0 3\0"),
        (Flow::Response, 11) => msg(b'E', b"SERROR\0C23505\0Mduplicate\0\0"),
        (Flow::Response, 12) => msg(b'n', &[]),
        (Flow::Response, 13) => msg(b'I', &[]),
        (Flow::Response, 14) => msg(b's', &[]),
        (Flow::Response, 15) => msg(b't', &[0, 0]),
        (Flow::Response, 16) => msg(b'G', &[0, 0, 0]),
        (Flow::Response, 17) => msg(b'H', &[0, 0, 0]),
        (Flow::Response, 18) => msg(b'd', b"row\n"),
        (Flow::Response, 19) => msg(b'c', &[]),
        (Flow::Response, 20) => msg(b'N', b"SWARNING\0Mhm\0\0"),
        (Flow::Response, 21) => msg(b'S', b"a\0b\0"),
        (Flow::Response, 22) => msg(b'K', &[0, 0, 0, 1, 0, 0, 0, 2]),
        (Flow::Response, 23) => msg(b'V', &[0, 0, 0, 0]),
        (Flow::Response, 24) => msg(b'A', b"\0\0\0\x01ch\0p\0"),
        _ => Vec::new(),
    }
}
