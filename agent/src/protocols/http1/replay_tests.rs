//! Replays recorded HTTP/1 conversations from `protocols/testdata/*.txt` against their golden
//! `*.expected` files (format and blessing: see `protocols::replay`).

use std::fmt::Write as _;

use super::*;
use crate::protocols::replay::{
    check_goldens, conversations, heading, http, replay, write_http_bodies, write_http_head,
};

fn render(exchanges: &[Exchange]) -> String {
    let mut text = String::new();
    for (i, exchange) in exchanges.iter().enumerate() {
        let h = http(exchange);
        let _ = writeln!(text, "{}", heading(i + 1, exchange));
        write_http_head(&mut text, h);
        write_http_bodies(&mut text, h);
        let _ = writeln!(text, "  partial: {}", h.partial);
    }
    text
}

#[test]
fn recorded_conversations_match_golden_results() {
    check_goldens(&conversations("txt", &[""], 3), |lines, _| {
        render(&replay(&Http1, lines))
    });
}
