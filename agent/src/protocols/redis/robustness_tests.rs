//! Lossy capture and hostile input: gaps, garbage, bounds.

use super::tests::*;
use super::*;
use crate::protocols::replay::{self, chunk};

#[test]
fn big_values_in_uncaptured_bytes_are_skipped_by_length() {
    let value = "x".repeat(100_000);
    let set = cmd(&["SET", "big", &value]);
    let reply = format!("${}\r\n{value}\r\n", value.len()).into_bytes();
    let out = run(&[
        with_gap(req(&set[..2048]), set.len() - 2048),
        resp(b"+OK\r\n"),
        req(cmd(&["GET", "big"])),
        with_gap(resp(&reply[..2048]), 50_000),
        with_gap(resp([]), reply.len() - 2048 - 50_000),
        req(cmd(&["DEL", "big"])),
        resp(b":1\r\n"),
    ]);
    let ops: Vec<_> = out
        .iter()
        .map(|e| db(e).operation.clone().unwrap())
        .collect();
    assert_eq!(ops, vec!["SET", "GET", "DEL"]);
    assert!(out.iter().all(|e| !db(e).partial));
    assert_eq!(out[1].response_end_ns, Some(5500));
    assert!(db(&out[0]).query_text.as_deref().unwrap().ends_with("..."));
}

#[test]
fn lost_reply_framing_ends_at_the_next_command_and_resyncs() {
    let mut big = b"*1000\r\n".to_vec();
    for i in 0..1000 {
        big.extend_from_slice(format!("$6\r\nitem{i:02}\r\n").as_bytes());
    }
    let out = run(&[
        req(cmd(&["LRANGE", "l", "0", "-1"])),
        with_gap(resp(&big[..500]), 5000),
        resp(&big[5500..6000]),
        req(cmd(&["LLEN", "l"])),
        resp(b":1000\r\n"),
        req(cmd(&["PING"])),
        resp(b"+PONG\r\n"),
    ]);
    let ops: Vec<_> = out
        .iter()
        .map(|e| db(e).operation.clone().unwrap())
        .collect();
    assert_eq!(ops, vec!["LRANGE", "LLEN", "PING"]);
    assert!(db(&out[0]).partial);
    assert_eq!(out[0].response_start_ns, Some(2000));
    assert_eq!(out[0].response_end_ns, Some(3500));
    assert!(!db(&out[1]).partial && !db(&out[2]).partial);
    assert_eq!(out[1].response_start_ns, Some(5000));
}

#[test]
fn lost_command_framing_reports_what_was_read_and_resyncs() {
    let mut args = vec!["RPUSH", "l"];
    let items: Vec<String> = (0..500).map(|i| format!("item{i}")).collect();
    args.extend(items.iter().map(String::as_str));
    let push = cmd(&args);
    let out = run(&[
        with_gap(req(&push[..300]), push.len() - 300),
        resp(b":500\r\n"),
        // Not a command start: ignored.
        req(b"$5\r\nitem9\r\n"),
        req(cmd(&["LLEN", "l"])),
        resp(b":500\r\n"),
    ]);
    let ops: Vec<_> = out
        .iter()
        .map(|e| db(e).operation.clone().unwrap())
        .collect();
    assert_eq!(ops, vec!["RPUSH", "LLEN"]);
    assert!(db(&out[0]).partial);
    assert!(
        db(&out[0])
            .query_text
            .as_deref()
            .unwrap()
            .starts_with("RPUSH l item0 item1")
    );
    assert_eq!(out[0].response_start_ns, Some(2000));
    assert!(!db(&out[1]).partial);
}

#[test]
fn garbage_replies_lose_framing_without_junk() {
    let out = run(&[
        req(cmd(&["GET", "a"])),
        resp(b"\x00\x01garbage\r\n"),
        req(cmd(&["GET", "b"])),
        resp(b"$1\r\nb\r\n"),
    ]);
    let ops: Vec<_> = out
        .iter()
        .map(|e| db(e).query_text.clone().unwrap())
        .collect();
    assert_eq!(ops, vec!["GET a", "GET b"]);
    assert!(db(&out[0]).partial);
    assert_eq!(out[0].response_start_ns, None);
    assert!(!db(&out[1]).partial);
}

#[test]
fn garbage_requests_yield_nothing() {
    for junk in [
        &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc"[..],
        b"*2\r\n+OK\r\n",
        b"*x\r\n",
        b"*2\r\n$-5\r\n",
        b"*2\r\n$3\r\nGETxx",
        &[0xff; 100],
    ] {
        let out = run(&[req(junk), resp(b"-ERR Protocol error\r\n")]);
        assert!(
            out.iter().all(|e| db(e)
                .operation
                .as_deref()
                .is_some_and(|op| op.bytes().all(|b| b.is_ascii_graphic()))),
            "{junk:?}: {out:?}"
        );
    }
}

#[test]
fn bad_crlf_after_a_value_loses_framing() {
    let out = run(&[
        req(b"*2\r\n$3\r\nGET\r\n$1\r\nkXX*1\r\n$4\r\nPING\r\n"),
        resp(b"+PONG\r\n"),
        req(cmd(&["PING"])),
        resp(b"+PONG\r\n"),
    ]);
    // The broken GET is reported partial (its name was read); the PING after the broken
    // bytes in the same chunk is not trusted; the next chunk's PING is.
    let ops: Vec<_> = out
        .iter()
        .map(|e| db(e).operation.clone().unwrap())
        .collect();
    assert_eq!(ops, vec!["GET", "PING"]);
    assert!(db(&out[0]).partial);
}

#[test]
fn deep_nesting_is_bounded() {
    let mut deep = Vec::new();
    for _ in 0..1000 {
        deep.extend_from_slice(b"*1\r\n");
    }
    deep.extend_from_slice(b":1\r\n");
    let mut session = RedisSession::new();
    let mut out = Vec::new();
    for (flow, data) in [(Flow::Request, cmd(&["X"])), (Flow::Response, deep)] {
        session.feed(flow, chunk(&data, 1, 2), &mut out);
    }
    assert!(session.responses.is_lost());
    session.close(3, &mut out);
    assert_eq!(out.len(), 1);
    assert!(db(&out[0]).partial);
}

#[test]
fn pending_commands_are_bounded_and_pairing_survives() {
    let mut session = RedisSession::new();
    let mut out = Vec::new();
    let feed = |session: &mut RedisSession, flow, data: &[u8], out: &mut Vec<Exchange>| {
        session.feed(flow, chunk(data, 1, 2), out);
    };
    let total = MAX_PENDING + 44;
    for i in 0..total {
        feed(
            &mut session,
            Flow::Request,
            &cmd(&["GET", &format!("k{i}")]),
            &mut out,
        );
        assert!(session.pending.len() <= MAX_PENDING);
    }
    assert_eq!(out.len(), 44);
    for i in 0..total {
        let value = format!("v{i}");
        let reply = format!("${}\r\n{value}\r\n", value.len());
        feed(&mut session, Flow::Response, reply.as_bytes(), &mut out);
    }
    feed(&mut session, Flow::Request, &cmd(&["PING"]), &mut out);
    feed(&mut session, Flow::Response, b"+PONG\r\n", &mut out);
    assert_eq!(out.len(), total + 1);
    // The answered ones got their own replies (the evicted ones' replies were skipped).
    assert!(out[44..total].iter().all(|e| e.response_start_ns.is_some()));
    assert!(
        out[..44]
            .iter()
            .all(|e| e.response_start_ns.is_none() && db(e).partial)
    );
    assert_eq!(db(&out[total]).operation.as_deref(), Some("PING"));
}

#[test]
fn reply_without_a_command_is_dropped() {
    let out = run(&[
        resp(b"+OK\r\n"),
        req(cmd(&["GET", "a"])),
        resp(b"$1\r\na\r\n"),
    ]);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].response_start_ns, Some(3000));
}

#[test]
fn close_during_a_reply_emits_it_partial() {
    let out = run(&[
        req(cmd(&["LRANGE", "l", "0", "-1"])),
        resp(b"*3\r\n$1\r\na\r\n"),
    ]);
    assert_eq!(out.len(), 1);
    assert!(db(&out[0]).partial);
    assert_eq!(out[0].response_start_ns, Some(2000));
    assert_eq!(out[0].response_end_ns, Some(2500));
}

#[test]
fn oversized_lines_are_bounded() {
    let long_error = format!("-ERR {}\r\n", "e".repeat(100_000));
    let long_inline = format!("PING {}\r\n", "p".repeat(60_000));
    let out = run(&[
        req(cmd(&["EVAL", "x", "0"])),
        resp(long_error.as_bytes()),
        req(long_inline.as_bytes()),
        resp(b"$1\r\np\r\n"),
        req(format!("PING {}\r\n", "q".repeat(70_000)).as_bytes()),
        resp(b"-ERR too big\r\n"),
    ]);
    assert!(out.len() >= 2);
    let message = db(&out[0]).error_message.clone().unwrap();
    assert!(message.len() <= 512);
    let inline = db(&out[1]).query_text.clone().unwrap();
    assert!(inline.len() <= command::MAX_TEXT_LEN);
    assert!(
        out.iter()
            .all(|e| db(e).query_text.as_ref().unwrap().len() <= command::MAX_TEXT_LEN)
    );
}

#[test]
fn skipped_stretches_are_counted_once_each() {
    let clean = [req(cmd(&["PING"])), resp(b"+PONG\r\n")];
    assert_eq!(
        replay::skips(&Redis, &clean),
        0,
        "a clean exchange skips nothing"
    );

    // An element header of a big reply falls into a gap: the rest of it is one stretch, over
    // two chunks, until the next command's reply.
    let mut big = b"*1000\r\n".to_vec();
    for i in 0..1000 {
        big.extend_from_slice(format!("$6\r\nitem{i:02}\r\n").as_bytes());
    }
    let mut steps = vec![
        req(cmd(&["LRANGE", "l", "0", "-1"])),
        with_gap(resp(&big[..500]), 5000),
        resp(&big[5500..6000]),
        req(cmd(&["LLEN", "l"])),
        resp(b":1000\r\n"),
    ];
    assert_eq!(replay::skips(&Redis, &steps), 1);

    // A command that breaks off into garbage, and more garbage: a second stretch.
    steps.push(req(b"*2\r\n$3\r\nGET\r\nXX not a bulk string"));
    steps.push(req(b"\x00\x01 still not a command"));
    steps.push(req(cmd(&["PING"])));
    steps.push(resp(b"+PONG\r\n"));
    assert_eq!(replay::skips(&Redis, &steps), 2);

    // The same again, once the commands were picked up: a third.
    steps.extend_from_within(steps.len() - 4..);
    assert_eq!(replay::skips(&Redis, &steps), 3);
}
