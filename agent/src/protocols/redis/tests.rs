//! Decoding well-formed Redis conversations: RESP2 and RESP3 replies, pipelining, pub/sub,
//! reply modes, splits at every byte. Helpers here are shared with `robustness_tests`.

use super::*;
use crate::protocols::replay;
use crate::protocols::replay::assert_splits_decode_the_same;
pub(super) use crate::protocols::replay::{Step, db, req, resp, with_gap};

pub(super) fn run(steps: &[Step]) -> Vec<Exchange> {
    replay::run(&Redis, steps)
}

/// The RESP array form of a command.
pub(super) fn cmd(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
    }
    out
}

/// (query text, status code or "") of every exchange.
pub(super) fn texts(exchanges: &[Exchange]) -> Vec<(String, String)> {
    exchanges
        .iter()
        .map(db)
        .map(|d| {
            (
                d.query_text.clone().unwrap_or_default(),
                d.status_code.clone().unwrap_or_default(),
            )
        })
        .collect()
}

pub(super) fn pair(text: &str, status: &str) -> (String, String) {
    (text.to_owned(), status.to_owned())
}

// ---- detection ----

#[test]
fn detects_commands() {
    for bytes in [
        cmd(&["GET", "k"]),
        cmd(&["SET", "k", "v"]),
        b"PING\r\n".to_vec(),
        b"ping\r\n".to_vec(),
        b"AUTH secret\r\n".to_vec(),
        b"SELECT 1\r\nPING\r\n".to_vec(),
        b"*12\r\n$4\r\nMSET".to_vec(),
    ] {
        assert!(Redis.detect(Flow::Request, &bytes), "{bytes:?}");
        assert!(!Redis.detect(Flow::Response, &bytes), "{bytes:?}");
    }
}

#[test]
fn rejects_other_protocols() {
    let others: &[&[u8]] = &[
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET key\r\n",
        b"SET / HTTP/1.1\r\n",
        b"DELETE /x HTTP/1.1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\n",
        b"\x00\x00\x00\x08\x04\xd2\x16\x2f",
        b"Q\x00\x00\x00\x0dSELECT 1\x00",
        b"\x21\x00\x00\x00\x03SELECT * FROM t WHERE a = '*1'",
        b"\x4a\x00\x00\x00\x0a8.0.36\x00",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"*0\r\n",
        b"*\r\n$3",
        b"*3\r\n+OK",
        b"PING",
        b"PINGPONG\r\n",
        b"PING \x01\x02\r\n",
        b"",
    ];
    for bytes in others {
        for flow in [Flow::Request, Flow::Response] {
            assert!(!Redis.detect(flow, bytes), "{flow} {bytes:?}");
        }
    }
}

// ---- commands and replies ----

#[test]
fn simple_commands_and_replies() {
    let out = run(&[
        req(cmd(&["SET", "user:1", "ann"])),
        resp(b"+OK\r\n"),
        req(cmd(&["get", "user:1"])),
        resp(b"$3\r\nann\r\n"),
        req(cmd(&["GET", "nope"])),
        resp(b"$-1\r\n"),
        req(cmd(&["INCR", "n"])),
        resp(b":1\r\n"),
        req(cmd(&["LRANGE", "l", "0", "-1"])),
        resp(b"*2\r\n$1\r\na\r\n*-1\r\n"),
    ]);
    assert_eq!(
        texts(&out),
        vec![
            pair("SET user:1 ann", ""),
            pair("get user:1", ""),
            pair("GET nope", ""),
            pair("INCR n", ""),
            pair("LRANGE l 0 -1", "")
        ]
    );
    let d = db(&out[1]);
    assert_eq!(d.operation.as_deref(), Some("GET"));
    assert_eq!(d.system, "redis");
    assert_eq!(d.namespace.as_deref(), Some("0"));
    assert_eq!((d.collection.clone(), d.rows), (None, None));
    assert_eq!(out[0].request_start_ns, 1000);
    assert_eq!(out[0].request_end_ns, 1500);
    assert_eq!(out[0].response_start_ns, Some(2000));
    assert_eq!(out[0].response_end_ns, Some(2500));
    assert!(out.iter().all(|e| !db(e).partial));
}

#[test]
fn errors_split_into_code_and_message() {
    let out = run(&[
        req(cmd(&["INCR", "list"])),
        resp(b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"),
        req(cmd(&["FOO"])),
        resp(b"-ERR unknown command 'FOO'\r\n"),
        req(cmd(&["GET", "k"])),
        resp(b"-NOAUTH\r\n"),
        req(cmd(&["FCALL", "f", "0"])),
        resp(b"!21\r\nSYNTAX invalid syntax\r\n"),
    ]);
    let got: Vec<_> = out
        .iter()
        .map(db)
        .map(|d| (d.status_code.clone().unwrap(), d.error_message.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "WRONGTYPE".to_owned(),
                Some("Operation against a key holding the wrong kind of value".to_owned())
            ),
            ("ERR".to_owned(), Some("unknown command 'FOO'".to_owned())),
            ("NOAUTH".to_owned(), None),
            ("SYNTAX".to_owned(), Some("invalid syntax".to_owned())),
        ]
    );
}

#[test]
fn pipelined_commands_pair_with_replies_in_order() {
    let mut batch = Vec::new();
    for i in 0..5 {
        batch.extend(cmd(&["SET", &format!("k{i}"), "v"]));
    }
    batch.extend(cmd(&["GET", "k1"]));
    batch.extend(cmd(&["LPUSH", "k2", "x"]));
    let out = run(&[
        req(&batch),
        resp(b"+OK\r\n+OK\r\n+OK\r\n"),
        resp(b"+OK\r\n+OK\r\n$1\r\nv\r\n-WRONGTYPE Operation against a key\r\n"),
    ]);
    assert_eq!(out.len(), 7);
    assert_eq!(db(&out[5]).query_text.as_deref(), Some("GET k1"));
    assert_eq!(db(&out[6]).status_code.as_deref(), Some("WRONGTYPE"));
    assert_eq!(out[0].response_start_ns, Some(2000));
    assert_eq!(out[4].response_start_ns, Some(3000));
    assert!(out.iter().all(|e| e.request_start_ns == 1000));
}

#[test]
fn multi_exec_is_one_exchange_per_command() {
    let mut batch = cmd(&["MULTI"]);
    batch.extend(cmd(&["INCR", "a"]));
    batch.extend(cmd(&["SELECT", "4"]));
    batch.extend(cmd(&["EXEC"]));
    let out = run(&[
        req(&batch),
        resp(b"+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n:1\r\n+OK\r\n"),
        req(cmd(&["PING"])),
        resp(b"+PONG\r\n"),
    ]);
    let ops: Vec<_> = out
        .iter()
        .map(|e| db(e).operation.clone().unwrap())
        .collect();
    assert_eq!(ops, vec!["MULTI", "INCR", "SELECT", "EXEC", "PING"]);
    // A queued SELECT is not known to have run.
    assert!(out.iter().all(|e| db(e).namespace.as_deref() == Some("0")));
}

#[test]
fn select_sets_the_namespace_when_it_succeeds() {
    let out = run(&[
        req(cmd(&["SELECT", "2"])),
        resp(b"+OK\r\n"),
        req(cmd(&["GET", "a"])),
        resp(b"$-1\r\n"),
        req(cmd(&["SELECT", "99"])),
        resp(b"-ERR DB index is out of range\r\n"),
        req(cmd(&["GET", "b"])),
        resp(b"$-1\r\n"),
        req(cmd(&["RESET"])),
        resp(b"+RESET\r\n"),
        req(cmd(&["GET", "c"])),
        resp(b"$-1\r\n"),
    ]);
    let ns: Vec<_> = out
        .iter()
        .map(|e| db(e).namespace.clone().unwrap())
        .collect();
    assert_eq!(ns, vec!["2", "2", "2", "2", "0", "0"]);
}

#[test]
fn resp3_types_and_attributes() {
    let out = run(&[
        req(cmd(&["HELLO", "3"])),
        resp(b"%2\r\n$6\r\nserver\r\n$5\r\nredis\r\n$5\r\nproto\r\n:3\r\n"),
        req(cmd(&["A"])),
        resp(b"_\r\n"),
        req(cmd(&["B"])),
        resp(b"#t\r\n"),
        req(cmd(&["C"])),
        resp(b",3.14\r\n"),
        req(cmd(&["D"])),
        resp(b"(12345678901234567890123\r\n"),
        req(cmd(&["E"])),
        resp(b"=15\r\ntxt:Some string\r\n"),
        req(cmd(&["F"])),
        resp(b"~2\r\n:1\r\n%1\r\n+k\r\n*0\r\n"),
        req(cmd(&["G"])),
        resp(b"|1\r\n+ttl\r\n:3600\r\n$5\r\nvalue\r\n"),
        req(cmd(&["H"])),
        resp(b"*2\r\n|1\r\n+a\r\n+b\r\n:1\r\n:2\r\n"),
        req(cmd(&["I"])),
        resp(b"$?\r\n;4\r\nHell\r\n;1\r\no\r\n;0\r\n"),
        req(cmd(&["J"])),
        resp(b"*?\r\n:1\r\n*?\r\n.\r\n$1\r\nx\r\n.\r\n"),
        req(cmd(&["K"])),
        resp(b"%?\r\n+a\r\n:1\r\n.\r\n"),
    ]);
    let ops: Vec<_> = out
        .iter()
        .map(|e| db(e).operation.clone().unwrap())
        .collect();
    assert_eq!(
        ops,
        vec![
            "HELLO", "A", "B", "C", "D", "E", "F", "G", "H", "I", "J", "K"
        ]
    );
    assert!(
        out.iter()
            .all(|e| !db(e).partial && db(e).status_code.is_none())
    );
    assert_eq!(out[7].response_start_ns, Some(16000));
}

#[test]
fn pushes_are_not_replies() {
    let out = run(&[
        req(cmd(&["HELLO", "3"])),
        resp(b"%1\r\n$5\r\nproto\r\n:3\r\n"),
        req(cmd(&["CLIENT", "TRACKING", "on"])),
        resp(b"+OK\r\n"),
        req(cmd(&["GET", "k"])),
        // An invalidation before the reply, and one after it.
        resp(b">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n$1\r\n1\r\n>2\r\n$10\r\ninvalidate\r\n_\r\n"),
        req(cmd(&["GET", "j"])),
        resp(b"$1\r\n2\r\n"),
    ]);
    assert_eq!(out.len(), 4);
    assert_eq!(out[2].response_start_ns, Some(6000));
    assert_eq!(db(&out[3]).query_text.as_deref(), Some("GET j"));
    assert_eq!(out[3].response_start_ns, Some(8000));
}

#[test]
fn resp2_subscribe_mode() {
    let out = run(&[
        req(cmd(&["SUBSCRIBE", "a", "b"])),
        resp(b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n"),
        resp(b"*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n"),
        resp(b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$5\r\nhello\r\n"),
        req(cmd(&["PSUBSCRIBE", "n*"])),
        resp(b"*3\r\n$7\r\nmessage\r\n$1\r\nb\r\n$2\r\nhi\r\n"),
        resp(b"*3\r\n$10\r\npsubscribe\r\n$2\r\nn*\r\n:3\r\n"),
        resp(b"*4\r\n$8\r\npmessage\r\n$2\r\nn*\r\n$2\r\nnn\r\n$1\r\nx\r\n"),
        req(cmd(&["PING"])),
        resp(b"*2\r\n$4\r\npong\r\n$0\r\n\r\n"),
        req(cmd(&["UNSUBSCRIBE"])),
        resp(b"*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:2\r\n"),
        resp(b"*3\r\n$11\r\nunsubscribe\r\n$1\r\nb\r\n:1\r\n"),
        req(cmd(&["PUNSUBSCRIBE"])),
        resp(b"*3\r\n$12\r\npunsubscribe\r\n$2\r\nn*\r\n:0\r\n"),
        // Out of subscribed mode: an array starting with "message" is a reply again.
        req(cmd(&["LRANGE", "l", "0", "-1"])),
        resp(b"*2\r\n$7\r\nmessage\r\n$1\r\nx\r\n"),
    ]);
    let got: Vec<_> = out
        .iter()
        .map(|e| {
            (
                db(e).operation.clone().unwrap(),
                e.response_start_ns,
                e.response_end_ns,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("SUBSCRIBE".to_owned(), Some(2000), Some(3500)),
            ("PSUBSCRIBE".to_owned(), Some(7000), Some(7500)),
            ("PING".to_owned(), Some(10000), Some(10500)),
            ("UNSUBSCRIBE".to_owned(), Some(12000), Some(13500)),
            ("PUNSUBSCRIBE".to_owned(), Some(15000), Some(15500)),
            ("LRANGE".to_owned(), Some(17000), Some(17500)),
        ]
    );
}

#[test]
fn resp3_subscribe_confirmations_are_pushes() {
    let out = run(&[
        req(cmd(&["HELLO", "3"])),
        resp(b"%1\r\n$5\r\nproto\r\n:3\r\n"),
        req(cmd(&["SSUBSCRIBE", "s"])),
        resp(b">3\r\n$10\r\nssubscribe\r\n$1\r\ns\r\n:1\r\n"),
        req(cmd(&["GET", "k"])),
        resp(b">3\r\n$8\r\nsmessage\r\n$1\r\ns\r\n$1\r\nm\r\n$1\r\nv\r\n"),
        req(cmd(&["SUNSUBSCRIBE", "s"])),
        resp(b">3\r\n$12\r\nsunsubscribe\r\n$1\r\ns\r\n:0\r\n"),
    ]);
    let got: Vec<_> = out
        .iter()
        .map(|e| (db(e).operation.clone().unwrap(), e.response_end_ns))
        .collect();
    assert_eq!(
        got,
        vec![
            ("HELLO".to_owned(), Some(2500)),
            ("SSUBSCRIBE".to_owned(), Some(4500)),
            ("GET".to_owned(), Some(6500)),
            ("SUNSUBSCRIBE".to_owned(), Some(8500)),
        ]
    );
}

#[test]
fn client_reply_off_and_skip() {
    let out = run(&[
        req(cmd(&["CLIENT", "REPLY", "OFF"])),
        req(cmd(&["SET", "a", "1"])),
        req(cmd(&["CLIENT", "REPLY", "ON"])),
        resp(b"+OK\r\n"),
        req(cmd(&["CLIENT", "REPLY", "SKIP"])),
        req(cmd(&["SET", "b", "2"])),
        req(cmd(&["GET", "b"])),
        resp(b"$1\r\n2\r\n"),
    ]);
    let got: Vec<_> = out
        .iter()
        .map(|e| (db(e).query_text.clone().unwrap(), e.response_start_ns))
        .collect();
    assert_eq!(
        got,
        vec![
            ("CLIENT REPLY OFF".to_owned(), None),
            ("SET a 1".to_owned(), None),
            ("CLIENT REPLY ON".to_owned(), Some(4000)),
            ("CLIENT REPLY SKIP".to_owned(), None),
            ("SET b 2".to_owned(), None),
            ("GET b".to_owned(), Some(8000)),
        ]
    );
}

#[test]
fn monitor_takes_the_connection_over() {
    let out = run(&[
        req(cmd(&["MONITOR"])),
        resp(b"+OK\r\n"),
        resp(b"+1700000000.000000 [0 127.0.0.1:5000] \"GET\" \"k\"\r\n"),
        req(cmd(&["QUIT"])),
        resp(b"+OK\r\n"),
    ]);
    assert_eq!(out.len(), 1);
    assert_eq!(db(&out[0]).operation.as_deref(), Some("MONITOR"));
}

#[test]
fn inline_commands() {
    let out = run(&[
        req(b"PING\r\n"),
        resp(b"+PONG\r\n"),
        req(b"\r\nset  k   \"v\"\n"),
        resp(b"+OK\r\n"),
        // Garbage still takes its error reply, but is not reported.
        req(b"\x01\x02\x03\r\n"),
        resp(b"-ERR unknown command\r\n"),
        req(b"ECHO hi\r\n"),
        resp(b"$2\r\nhi\r\n"),
    ]);
    assert_eq!(
        texts(&out),
        vec![
            pair("PING", ""),
            pair("set k \"v\"", ""),
            pair("ECHO hi", "")
        ]
    );
    assert_eq!(db(&out[1]).operation.as_deref(), Some("SET"));
}

#[test]
fn query_text_is_bounded_and_lossy() {
    let big = "v".repeat(10_000);
    let mut args = vec!["MSET"];
    let keys: Vec<String> = (0..100).map(|i| format!("key{i}")).collect();
    for k in &keys {
        args.push(k);
        args.push(&big);
    }
    let mut binary = cmd(&["SET", "bin", "xx"]);
    let at = binary.len() - 4;
    binary[at] = 0xff;
    let out = run(&[
        req(cmd(&args)),
        resp(b"+OK\r\n"),
        req(&binary),
        resp(b"+OK\r\n"),
    ]);
    let text = db(&out[0]).query_text.clone().unwrap();
    assert!(text.len() <= command::MAX_TEXT_LEN);
    assert!(text.starts_with(&format!("MSET key0 {}...", &big[..command::MAX_ARG_LEN])));
    assert!(!db(&out[0]).partial);
    assert_eq!(db(&out[1]).query_text.as_deref(), Some("SET bin \u{fffd}x"));
}

/// A conversation touching most paths, fed whole and split at every byte.
fn mixed_conversation() -> Vec<Step> {
    let mut batch = cmd(&["SET", "a", "1"]);
    batch.extend(cmd(&["GET", "a"]));
    batch.extend(b"PING\r\n");
    vec![
        req(cmd(&["HELLO", "3"])),
        resp(b"%1\r\n$5\r\nproto\r\n:3\r\n"),
        req(&batch),
        resp(b"+OK\r\n|1\r\n+x\r\n:1\r\n$1\r\n1\r\n+PONG\r\n"),
        req(cmd(&["SELECT", "3"])),
        resp(b"+OK\r\n"),
        req(cmd(&["SUBSCRIBE", "c"])),
        resp(b">3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n>3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nm\r\n"),
        req(cmd(&["XRANGE", "s", "-", "+"])),
        resp(b"*1\r\n*2\r\n$3\r\n1-0\r\n*2\r\n$1\r\nf\r\n$1\r\nv\r\n"),
        req(cmd(&["GET", "big"])),
        resp(b"$?\r\n;3\r\nabc\r\n;0\r\n"),
        req(cmd(&["INCR", "a"])),
        resp(b"!10\r\nERR boom!!\r\n"),
    ]
}

#[test]
fn splits_at_every_byte_decode_the_same() {
    let whole = assert_splits_decode_the_same(&mixed_conversation(), run);
    assert_eq!(whole.len(), 9);
}
