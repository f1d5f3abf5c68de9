//! Replays recorded HTTP/2 and gRPC conversations from `protocols/testdata/h2_*.conv` and
//! `grpc_*.conv` against their golden `*.expected` files (format and blessing: see
//! `protocols::replay`). The first chunk of each must be detected as HTTP/2, and each
//! lossless conversation is also replayed cut into one-byte syscalls (but for each flow's
//! first chunk, where a connection joined late is recognised), which must decode the same.

use std::fmt::Write as _;

use super::*;
use crate::protocols::replay::{
    Line, bytewise_difference, check_goldens, conversations, heading, http, opt, replay_into,
    write_http_bodies, write_http_head,
};

/// Replays `lines`; the first chunk must be detected as HTTP/2.
fn replay(lines: &[Line]) -> (Vec<Exchange>, Vec<RequestStarted>) {
    if let Some(Line::Chunk { flow, data, .. }) =
        lines.iter().find(|l| matches!(l, Line::Chunk { .. }))
    {
        assert!(
            super::super::detect(*flow, data).is_some_and(|p| p.name() == "http2"),
            "first chunk not detected as HTTP/2"
        );
    }
    replay_into(&mut *Http2.new_session(), lines)
}

fn render(exchanges: &[Exchange], started: &[RequestStarted]) -> String {
    let mut text = String::new();
    for (i, exchange) in exchanges.iter().enumerate() {
        let h = http(exchange);
        let was_started = started
            .iter()
            .any(|s| s.request_start_ns == exchange.request_start_ns);
        let _ = writeln!(
            text,
            "{}{}",
            heading(i + 1, exchange),
            if was_started {
                ""
            } else {
                " (never reported started)"
            }
        );
        write_http_head(&mut text, h);
        let _ = writeln!(text, "  content_type: {}", opt(&h.content_type));
        let _ = writeln!(
            text,
            "  grpc: status {} message {}",
            opt(&h.grpc_status),
            opt(&h.grpc_message)
        );
        write_http_bodies(&mut text, h);
        let _ = writeln!(text, "  reset: {} partial: {}", opt(&h.reset), h.partial);
    }
    text
}

#[test]
fn recorded_conversations_match_golden_results() {
    check_goldens(
        &conversations("conv", &["h2_", "grpc_"], 4),
        |lines, problems| {
            problems.extend(bytewise_difference(lines, true, |l| replay(l).0));
            let (exchanges, started) = replay(lines);
            render(&exchanges, &started)
        },
    );
}
